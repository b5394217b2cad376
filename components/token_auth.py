"""Token auth: the signing key (TokenSigner) and the token service's container (TokenAuth).

Declares, in the same graph as the rest of the stack:

- (TokenSigner, declared before the registry, which trusts its certificate) the signing key (``tls.PrivateKey``, ECDSA P-256: ES256 tokens) and its self-signed
  certificate (``tls.SelfSignedCert``), rotated like the server certificate: the rotation
  generation (components/pki.py) is in its subject, so a new period issues a new certificate
  and replaces the registry (which trusts it as ``auth.token.rootcertbundle``) and this container;
- the image, built on the Docker host from token_service/Dockerfile (``RemoteImage`` with a
  build; its tag is a digest of the sources, so a change rebuilds it);
- the container ``<prefix>-token`` under the network alias ``token`` (port 5001, never
  published: clients reach it through nginx at ``https://<address>/token``), with the key,
  certificate, htpasswd and policy file uploaded (a change replaces the container).

TokenSigner outputs ``cert_pem`` (the registry's rootcertbundle) and ``private_key_pem``
(secret). TokenAuth outputs ``upstream`` (``token:5001``, for nginx), ``policy`` (the policy
file's text) and ``container_name``. :func:`components.render.token_service.registry_token_auth`
is the registry's ``auth`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls

from components.pki import rotation_generation
from components.registry import RESTART_POLICY
from components.render import token_service as ts
from components.settings import CertificateSettings
from components.settings_auth import AuthSettings

SIGNER_USES = ["digital_signature"]
HEALTH_TEST = ["CMD", "python3", "-c",
               f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{ts.TOKEN_PORT}/healthz', timeout=2)"]


def token_image(name: str, prefix: str, opts: pulumi.ResourceOptions) -> docker.RemoteImage:
    """The token service's image, built on the Docker host (``opts`` carries its provider) from
    token_service/Dockerfile; tagged with a digest of the sources. Raises ValueError naming the
    fix when the wheels it installs are missing."""
    missing = ts.missing_wheels()
    if missing:
        raise ValueError(missing)
    return docker.RemoteImage(
        name,
        name=f"{prefix}-token-service:{ts.source_digest()[:16]}",
        # Relative to the project root (Pulumi's working directory): the same inputs from any checkout.
        build=docker.RemoteImageBuildArgs(context=ts.CONTEXT, dockerfile="Dockerfile"),
        keep_locally=True,
        opts=opts,
    )


@dataclass
class TokenSignerArgs:
    prefix: str
    certificate: CertificateSettings
    now: float


class TokenSigner(pulumi.ComponentResource):
    """The key that signs tokens and its self-signed certificate, rotated with the server's."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(self, name: str, args: TokenSignerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:token_auth:TokenSigner", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        generation = rotation_generation(args.now, args.certificate)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        cert = tls.SelfSignedCert(
            f"{name}-cert",
            private_key_pem=key.private_key_pem,
            validity_period_hours=args.certificate.validity_hours,
            early_renewal_hours=args.certificate.renew_before_hours,
            allowed_uses=SIGNER_USES,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=ts.issuer(args.prefix),
                organization=args.certificate.organization,
                serial_number=f"rotation-{generation}",
            ),
            opts=child,
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.register_outputs({"cert_pem": self.cert_pem, "private_key_pem": self.private_key_pem})


@dataclass
class TokenAuthArgs:
    prefix: str
    address: str  # host[:port] as clients write it: the realm's host and the tokens' audience
    auth: AuthSettings
    network_name: pulumi.Input[str]
    cert_pem: pulumi.Input[str]
    private_key_pem: pulumi.Input[str]  # secret
    htpasswd: pulumi.Input[str]  # secret


class TokenAuth(pulumi.ComponentResource):
    """Image and container of the token service."""

    upstream: pulumi.Output[str]
    policy: pulumi.Output[str]
    container_name: pulumi.Output[str]

    def __init__(self, name: str, args: TokenAuthArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:token_auth:TokenAuth", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        policy = ts.render_policy(args.auth.policy_document())
        image = token_image(f"{name}-image", args.prefix, child)
        upstream = f"{ts.TOKEN_ALIAS}:{ts.TOKEN_PORT}"
        self.upstream_address = upstream  # plain text: nginx's config is rendered at program time
        container = docker.Container(
            f"{name}-container",
            name=f"{args.prefix}-token",
            image=image.image_id,
            restart=RESTART_POLICY,
            envs=ts.token_env(address=args.address, prefix=args.prefix, auth=args.auth),
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=args.network_name, aliases=[ts.TOKEN_ALIAS])],
            # The service runs as nobody: the files are world-readable inside this container only.
            uploads=[
                docker.ContainerUploadArgs(file=ts.KEY_PATH, content=pulumi.Output.secret(args.private_key_pem),
                                           permissions="0444"),
                docker.ContainerUploadArgs(file=ts.CERT_PATH, content=args.cert_pem, permissions="0444"),
                docker.ContainerUploadArgs(file=ts.HTPASSWD_PATH, content=args.htpasswd, permissions="0444"),
                docker.ContainerUploadArgs(file=ts.POLICY_PATH, content=policy, permissions="0444"),
            ],
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=HEALTH_TEST,
                interval="10s", timeout="5s", retries=3, start_period="5s",
            ),
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.upstream = pulumi.Output.from_input(upstream)
        self.policy = pulumi.Output.from_input(policy)
        self.container_name = container.name
        self.register_outputs({"upstream": self.upstream, "policy": self.policy, "container_name": self.container_name})
