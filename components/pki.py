"""Certificates: a CA (generated, or brought from secret config) and the registry's server certificate.

Renewal: pulumi-tls's ``early_renewal_hours`` only marks a certificate as due; nothing replaces it
on a plain ``pulumi up``. So the server certificate carries a *rotation generation* in its
subject (serialNumber attribute): ``floor(now / (validity - renewBefore))``. The generation changes
at each period boundary, which changes the CSR and so replaces the certificate, and the proxy
container that serves it. A certificate issued in period k expires at the earliest at
``k*P + validity``, so its renewal window opens no earlier than ``(k+1)*P``: by the time any
certificate is inside its window, the generation has moved on and the next ``pulumi up``
issues a new one. Between boundaries the inputs are identical, so an unchanged stack has no diff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_tls as tls

from components.settings import CertificateSettings

CA_USES = ["cert_signing", "crl_signing", "digital_signature"]


def key_parameters(algorithm: str) -> dict:
    """pulumi-tls PrivateKey arguments for a setting like ``ECDSA-P256`` or ``RSA-3072``."""
    if algorithm.startswith("ECDSA-"):
        return {"algorithm": "ECDSA", "ecdsa_curve": algorithm.removeprefix("ECDSA-")}
    if algorithm.startswith("RSA-"):
        return {"algorithm": "RSA", "rsa_bits": int(algorithm.removeprefix("RSA-"))}
    if algorithm == "ED25519":
        return {"algorithm": "ED25519"}
    raise ValueError(f"unknown key algorithm {algorithm!r}")


def server_uses(algorithm: str) -> list[str]:
    """Key usages of the server certificate; keyEncipherment only means something for RSA."""
    uses = ["digital_signature", "server_auth"]
    return ["digital_signature", "key_encipherment", "server_auth"] if algorithm.startswith("RSA-") else uses


def rotation_generation(now: float, certificate: CertificateSettings) -> int:
    """Which rotation period ``now`` (seconds since the epoch) falls in."""
    return int(now // (certificate.rotation_period_hours * 3600))


@dataclass
class CertificateAuthorityArgs:
    certificate: CertificateSettings
    # Bring your own CA: both set (the key as a secret Output), or both None to generate one.
    ca_cert_pem: Optional[str] = None
    ca_private_key_pem: Optional[pulumi.Input[str]] = None


class CertificateAuthority(pulumi.ComponentResource):
    """The CA that signs the server certificate and that clients trust."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]

    def __init__(self, name: str, args: CertificateAuthorityArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:pki:CertificateAuthority", name, None, opts)
        if args.ca_cert_pem is not None:
            self.cert_pem = pulumi.Output.from_input(args.ca_cert_pem)
            self.private_key_pem = pulumi.Output.secret(args.ca_private_key_pem)
        else:
            key = tls.PrivateKey(
                f"{name}-key",
                **key_parameters(args.certificate.key_algorithm),
                opts=pulumi.ResourceOptions(parent=self),
            )
            cert = tls.SelfSignedCert(
                f"{name}-cert",
                private_key_pem=key.private_key_pem,
                is_ca_certificate=True,
                validity_period_hours=args.certificate.ca_validity_hours,
                allowed_uses=CA_USES,
                subject=tls.SelfSignedCertSubjectArgs(
                    common_name=f"{args.certificate.organization} CA",
                    organization=args.certificate.organization,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.cert_pem = cert.cert_pem
            self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.register_outputs({"cert_pem": self.cert_pem, "private_key_pem": self.private_key_pem})


@dataclass
class ServerCertificateArgs:
    certificate: CertificateSettings
    dns_names: Sequence[str]
    ip_addresses: Sequence[str]
    ca_cert_pem: pulumi.Input[str]
    ca_private_key_pem: pulumi.Input[str]
    now: float


class ServerCertificate(pulumi.ComponentResource):
    """The proxy's key and CA-signed certificate, every name in subjectAltName."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    expiry: pulumi.Output[str]
    generation: pulumi.Output[int]

    def __init__(self, name: str, args: ServerCertificateArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:pki:ServerCertificate", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        generation = rotation_generation(args.now, args.certificate)
        key = tls.PrivateKey(f"{name}-key", **key_parameters(args.certificate.key_algorithm), opts=child)
        csr = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            dns_names=list(args.dns_names),
            ip_addresses=list(args.ip_addresses),
            subject=tls.CertRequestSubjectArgs(
                common_name=(list(args.dns_names) + list(args.ip_addresses))[0],
                organization=args.certificate.organization,
                serial_number=f"rotation-{generation}",
            ),
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=csr.cert_request_pem,
            ca_cert_pem=args.ca_cert_pem,
            ca_private_key_pem=args.ca_private_key_pem,
            validity_period_hours=args.certificate.validity_hours,
            early_renewal_hours=args.certificate.renew_before_hours,
            allowed_uses=server_uses(args.certificate.key_algorithm),
            opts=child,
        )
        self.cert_pem = cert.cert_pem
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        self.expiry = cert.validity_end_time
        self.generation = pulumi.Output.from_input(generation)
        self.register_outputs(
            {
                "cert_pem": self.cert_pem,
                "private_key_pem": self.private_key_pem,
                "expiry": self.expiry,
                "generation": self.generation,
            }
        )
