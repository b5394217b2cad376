"""Signed tokens: short-lived access tokens for the registry, refresh tokens for the service.

Both are JWTs signed with PyJWT (ES256 for an EC P-256 key, RS256 for an RSA key). Access
tokens name their key with a ``kid`` header, the libtrust key id (:func:`libtrust_key_id`) of
the signing certificate's public key: distribution 2.8 builds a table of those ids once, from
the certificates of its ``auth.token.rootcertbundle`` (which must hold the signing certificate),
and looks the key up there per request, instead of parsing and verifying a certificate chain
from an ``x5c`` header on every request. It then checks ``iss`` (== issuer), ``aud`` (a single
string == its ``service``), ``exp`` and ``nbf`` with 60 s of leeway, and the ``access`` claim
against the request (see token_service/access.py).

Refresh tokens (docker's "identity token", kept by ``docker login``) are never stored: they
carry ``aud = <service>#refresh`` (so the registry refuses them as access tokens),
``token_use = refresh``, the user as ``sub`` and ``bnd``, a digest of the user's htpasswd
line; a changed password or a removed user makes every refresh token of that user invalid.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Optional

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from token_service.files import WatchedFile

REFRESH_USE = "refresh"
REFRESH_SUFFIX = "#refresh"


class SigningKeyError(ValueError):
    """The signing key and certificate do not form a usable pair."""


@dataclass(frozen=True)
class SigningKey:
    private_key: object
    algorithm: str
    kid: str

    @property
    def public_key(self):
        return self.private_key.public_key()


def load_signing_key(key_pem: bytes, cert_pem: bytes) -> SigningKey:
    """A key and its certificate (PEM); the certificate's public key must be the key's."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        algorithm = "ES256"
    elif isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        algorithm = "RS256"
    else:
        raise SigningKeyError("the token signing key must be ECDSA P-256 or RSA of 2048 bits or more")
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise SigningKeyError("the token certificate does not belong to the token signing key")
    return SigningKey(key, algorithm, libtrust_key_id(key.public_key()))


def libtrust_key_id(public_key) -> str:
    """The key id distribution looks a trusted key up by (docker/libtrust ``keyIDFromCryptoKey``):
    SHA-256 of the key's DER SubjectPublicKeyInfo, its first 240 bits in base32 (no padding), in
    twelve groups of four characters joined by ``:``."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))


class KeyFiles:
    """The signing key from two watched PEM files (re-read on rotation)."""

    def __init__(self, key_path: str, cert_path: str) -> None:
        self._key = WatchedFile(key_path, lambda b: b, "token signing key")
        self._cert = WatchedFile(cert_path, lambda b: b, "token certificate")
        self._pair: Optional[tuple[bytes, bytes, SigningKey]] = None

    def get(self) -> SigningKey:
        key_pem, cert_pem = self._key.get(), self._cert.get()
        pair = self._pair
        if pair is None or pair[0] != key_pem or pair[1] != cert_pem:
            pair = (key_pem, cert_pem, load_signing_key(key_pem, cert_pem))
            self._pair = pair
        return pair[2]


@dataclass(frozen=True)
class Issuer:
    """Issues and checks tokens for one registry ``service`` under one ``issuer`` name."""

    keys: KeyFiles
    issuer: str
    service: str
    ttl: int = 300
    refresh_ttl: int = 90 * 86400

    def access_token(self, subject: str, access: list[dict], now: Optional[float] = None) -> tuple[str, int, int]:
        """(token, issued_at, expires_in) for ``access`` (the claim, see access.Policy.grant)."""
        now = int(time.time() if now is None else now)
        key = self.keys.get()
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": access,
        }
        token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})
        return token, now, self.ttl

    def refresh_token(self, subject: str, binding: str, now: Optional[float] = None) -> str:
        now = int(time.time() if now is None else now)
        key = self.keys.get()
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service + REFRESH_SUFFIX,
            "exp": now + self.refresh_ttl,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "token_use": REFRESH_USE,
            "bnd": binding,
        }
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm)

    def refresh_claims(self, token: str) -> Optional[dict]:
        """The claims of a valid refresh token of this service, or None (never raises)."""
        key = self.keys.get()
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                audience=self.service + REFRESH_SUFFIX,
                issuer=self.issuer,
                options={"require": ["exp", "nbf", "iat", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return None
        if claims.get("token_use") != REFRESH_USE or not isinstance(claims.get("sub"), str):
            return None
        if not isinstance(claims.get("bnd"), str):
            return None
        return claims
