"""A private Docker registry per stack: read settings, build the registry, export what clients need."""

import pulumi

from components.private_registry import PrivateRegistry, PrivateRegistryArgs
from components.settings import load_settings

registry = PrivateRegistry("registry", PrivateRegistryArgs(settings=load_settings()))

pulumi.export("registryAddress", registry.address)
pulumi.export("caCertificatePem", registry.ca_certificate_pem)
pulumi.export("serverCertificateExpiry", registry.server_certificate_expiry)
pulumi.export("userNames", registry.user_names)
pulumi.export("passwords", registry.passwords)
pulumi.export("loginCommand", registry.login_command)
pulumi.export("volumeName", registry.volume_name)
pulumi.export("pendingDeletions", registry.pending_deletions)
pulumi.export("deletedTags", registry.deleted_tags)
pulumi.export("garbageCollection", registry.garbage_collection)
