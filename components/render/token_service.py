"""Files and settings the token service and the registry read in token mode, as pure functions.

- :func:`registry_token_auth`: the registry's ``auth.token`` section: realm
  (``https://<address>/token``, through nginx on the registry's TLS name), service (the
  registry's address, the tokens' ``aud``), issuer and where the signing key is trusted from.
- :func:`registry_key_path`, :func:`registry_key_text`: that file. Tokens name their key by its libtrust key id in ``kid``
  (token_service/tokens.py). Distribution 2.8 computes that id itself from the certificate in
  ``rootcertbundle``; distribution 3 ids a certificate's key by its JWK thumbprint instead, so
  it gets a ``jwks`` file (:func:`render_jwks`) that states the key under the id the tokens carry.
- :func:`render_policy`: the policy file (JSON via the json library) from the auth settings.
- :func:`token_env`: the token container's environment (token_service/config.py).
- :func:`source_digest`: a digest of the files the image is built from, its tag.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from token_service.tokens import libtrust_key_id

if TYPE_CHECKING:
    from components.settings_auth import AuthSettings

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = "token_service"  # the image's build context, relative to the project root
CONTEXT_DIR = ROOT / CONTEXT
WHEELS_DIR = CONTEXT_DIR / "wheels"
TOKEN_PORT = 5001
TOKEN_ALIAS = "token"
TOKEN_PATH = "/token"
# In the registry container, beside its config (the GC stand-by copies it from there).
REGISTRY_BUNDLE_PATH = "/etc/docker/registry/token-signer.crt"
REGISTRY_JWKS_PATH = "/etc/docker/registry/token-signer.jwks"
# In the token container (token_service/config.py defaults).
KEY_PATH = "/run/token/key.pem"
CERT_PATH = "/run/token/cert.pem"
HTPASSWD_PATH = "/run/token/htpasswd"
POLICY_PATH = "/run/token/policy.json"


def realm(address: str) -> str:
    return f"https://{address}{TOKEN_PATH}"


def issuer(prefix: str) -> str:
    return f"{prefix}-token-service"


def registry_token_auth(*, address: str, prefix: str, registry_version: int) -> dict:
    """The registry config's ``auth`` section, for distribution ``registry_version`` (2 or 3)."""
    trusted = "jwks" if registry_version >= 3 else "rootcertbundle"
    return {"token": {"realm": realm(address), "service": address, "issuer": issuer(prefix),
                      trusted: registry_key_path(registry_version)}}


def registry_key_path(registry_version: int) -> str:
    """Where the registry reads the file it trusts the signing key from (:func:`registry_key_text`)."""
    return REGISTRY_JWKS_PATH if registry_version >= 3 else REGISTRY_BUNDLE_PATH


def registry_key_text(cert_pem: str, registry_version: int) -> str:
    """That file: the certificate (2.8's ``rootcertbundle``) or :func:`render_jwks` of it (3's ``jwks``)."""
    return render_jwks(cert_pem) if registry_version >= 3 else cert_pem


def render_jwks(cert_pem: str) -> str:
    """A JSON Web Key Set holding the certificate's public key, ``kid`` its libtrust key id (the
    id every token names, token_service/tokens.py), written by PyJWT and the json library."""
    public_key = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk, algorithm = ECAlgorithm.to_jwk(public_key, as_dict=True), "ES256"
    else:
        jwk, algorithm = RSAAlgorithm.to_jwk(public_key, as_dict=True), "RS256"
    jwk.update(kid=libtrust_key_id(public_key), use="sig", alg=algorithm)
    return json.dumps({"keys": [jwk]}, indent=2, sort_keys=True) + "\n"


def render_policy(document: dict) -> str:
    """The policy file's text (sorted keys: the same settings give the same bytes)."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def token_env(*, address: str, prefix: str, auth: AuthSettings) -> list[str]:
    """The service's environment (token_service/config.py): issuer, audience, lifetime, listener
    and the failed-password budget per client address."""
    return [f"TOKEN_ISSUER={issuer(prefix)}", f"TOKEN_SERVICE={address}", f"TOKEN_TTL={auth.token_lifetime_seconds}",
            f"TOKEN_LISTEN=0.0.0.0:{TOKEN_PORT}", f"TOKEN_FAILURES_PER_MINUTE={auth.failed_logins_per_minute}",
            f"TOKEN_FAILURE_BURST={auth.failed_login_burst}"]


def source_digest(context: Path = CONTEXT_DIR) -> str:
    """sha256 over the image's inputs: Dockerfile, lock file and the service's modules."""
    digest = hashlib.sha256()
    for path in sorted([context / "Dockerfile", context / "requirements.lock", *context.glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def missing_wheels(context: Path = CONTEXT_DIR) -> Optional[str]:
    """None when the wheels the image installs are present, else what is missing and the fix."""
    wheels = context / "wheels"
    lock = (context / "requirements.lock").read_text()
    names = [line.split("==")[0].split("[")[0].lower() for line in lock.splitlines()
             if line and not line.startswith((" ", "#"))]
    present = {p.name.split("-")[0].lower() for p in wheels.glob("*.whl")} if wheels.is_dir() else set()
    absent = [n for n in names if n.replace("-", "_") not in present and n not in present]
    if absent:
        return (f"the token service image needs wheels of {', '.join(absent)} in {wheels}: "
                "run scripts/token-wheels.sh (it downloads them, checked against token_service/requirements.lock)")
    return None
