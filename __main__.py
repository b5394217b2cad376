"""A private Docker registry per stack: read settings, build the registry, export what clients need."""

import pulumi

from components.private_registry import EXPORTS, PrivateRegistry, PrivateRegistryArgs
from components.settings import load_settings

registry = PrivateRegistry("registry", PrivateRegistryArgs(settings=load_settings()))

for export_name, attribute in EXPORTS.items():
    pulumi.export(export_name, getattr(registry, attribute))
