"""A brought CA (``caCertificatePem`` / ``caPrivateKeyPem``), checked before anything uses it.

Every problem is a ``ValueError`` whose text starts with the setting it blames
(``caCertificatePem: ...``), as components.settings reports it. No message quotes key material.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# Curves pulumi-tls (and every Docker client's TLS) can sign and verify with.
_CURVES = {"secp256r1", "secp384r1", "secp521r1"}
RSA_BITS_MIN = 2048
_PEM_CERTIFICATE = re.compile(
    r"[ \t\r\n]*-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----[ \t\r\n]*"
)


def check_own_ca(cert_pem: str, key_pem: str, now: float, validity_hours: int) -> str:
    """A brought CA: one CA certificate (nothing else in the text) that can sign, valid now and
    for the server certificate's whole lifetime, with a strong key that is the one given.
    Returns the certificate re-encoded, so nothing but the certificate reaches a client. Never
    echoes the key."""
    if "PRIVATE KEY" in cert_pem:
        raise ValueError(
            "caCertificatePem: holds a private key: give only the certificate there, and the key "
            "(as a secret) in caPrivateKeyPem"
        )
    if not _PEM_CERTIFICATE.fullmatch(cert_pem):
        raise ValueError(
            "caCertificatePem: is not exactly one PEM certificate (-----BEGIN CERTIFICATE----- ... "
            "-----END CERTIFICATE-----, nothing else around it)"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        # Parse what the checks below read: a malformed extension or an unknown key type fails here.
        cert.extensions  # noqa: B018
        cert.public_key()
        cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
    except Exception:  # noqa: BLE001 (the parser raises ValueError, UnsupportedAlgorithm, ...)
        raise ValueError("caCertificatePem: is not a valid PEM certificate with a supported key") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("caCertificatePem: is not a CA certificate (basicConstraints CA:TRUE): it cannot sign")
    try:
        if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            raise ValueError("caCertificatePem: its keyUsage lacks keyCertSign: clients would refuse what it signs")
    except x509.ExtensionNotFound:
        pass
    start = datetime.fromtimestamp(now, timezone.utc)
    if cert.not_valid_before_utc > start or cert.not_valid_after_utc <= start:
        raise ValueError(
            f"caCertificatePem: is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}): bring a current CA"
        )
    if (cert.not_valid_after_utc - start).total_seconds() < validity_hours * 3600:
        raise ValueError(
            f"caCertificatePem: expires {cert.not_valid_after_utc:%Y-%m-%d}, before a server certificate "
            f"issued now ({validity_hours} h, certificate.validityHours) would: bring a CA that lives longer "
            "or lower certificate.validityHours"
        )
    _check_key_strength(cert.public_key(), "caCertificatePem")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError, UnicodeError):
        # The parser's message could quote the key material: keep only a fixed text.
        raise ValueError("caPrivateKeyPem: is not an unencrypted PEM private key") from None
    except Exception:  # noqa: BLE001 (unsupported key types raise library-specific errors)
        raise ValueError("caPrivateKeyPem: is not a private key this program can use") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise ValueError("caPrivateKeyPem: is not the private key of caCertificatePem: give the matching pair")
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _check_key_strength(public_key: Any, where: str) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < RSA_BITS_MIN:
            raise ValueError(f"{where}: its RSA key has {public_key.key_size} bits: use at least {RSA_BITS_MIN}")
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in _CURVES:
            raise ValueError(
                f"{where}: its key is on curve {public_key.curve.name}: use P-256, P-384 or P-521, RSA or Ed25519"
            )
    elif not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise ValueError(f"{where}: its key type is not supported: use an ECDSA (P-256/P-384/P-521), RSA or Ed25519 key")
