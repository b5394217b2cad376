"""Pulumi mocks that behave like the engine and the providers where it matters to our tests.

- The mock monitor does not apply ``additional_secret_outputs`` nor carry an input's secretness
  to the output of the same name; the real engine does both. :class:`EngineMonitor` does too,
  so a test that an output is secret proves something.
- pulumi-tls resources produce real keys and certificates (``cryptography``) from exactly the
  inputs the program hands them, so the rendered files can be run by real nginx and Docker.
- pulumi-random values are derived from the resource's URN: stable across runs, like values kept
  in state, so two runs of an unchanged stack can be compared input by input.
- Every registration is recorded with its inputs, outputs, parent, dependencies and options.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import json_format
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, _sync_await
from pulumi.runtime.proto import resource_pb2

SECRET = rpc._special_secret_sig  # noqa: SLF001 - the engine's wire marker for secrets


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def reveal(value: Any) -> Any:
    """The value with every secret wrapper removed, recursively."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


def redact(value: Any) -> Any:
    """What the engine writes to state in plain text: secrets replaced by ciphertext."""
    if is_secret(value):
        return "[ciphertext]"
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass
class Registered:
    """One resource as the engine saw it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict  # secret values still wrapped (secretness pushed up to top-level properties)
    outputs: dict = field(default_factory=dict)  # secret values wrapped
    dependencies: list = field(default_factory=list)
    property_dependencies: dict = field(default_factory=dict)
    provider: str = ""
    delete_before_replace: bool = False
    retain_on_delete: bool = False
    protect: bool = False
    additional_secret_outputs: list = field(default_factory=list)
    aliases: list = field(default_factory=list)  # alias specs, as dicts (e.g. {"spec": {"name": ...}})
    # The inputs exactly as sent to the engine, secrets marked where they are (e.g. one item of
    # a list): what the engine encrypts in state, value by value.
    wire_inputs: dict = field(default_factory=dict)

    @property
    def plain_inputs(self) -> dict:
        return reveal(self.inputs)

    @property
    def plain_outputs(self) -> dict:
        return reveal(self.outputs)


# ---- pulumi-tls, for real -------------------------------------------------------------------

_CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}
_KEY_USAGE = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
}
_EXT_USAGE = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
}
_SUBJECT = {
    "commonName": NameOID.COMMON_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "country": NameOID.COUNTRY_NAME,
    "locality": NameOID.LOCALITY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
}


def _load_key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def _pem_private(key) -> str:
    fmt = serialization.PrivateFormat.PKCS8 if isinstance(key, ed25519.Ed25519PrivateKey) else (
        serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _sign_hash(key):
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def tls_private_key(inputs: dict) -> dict:
    algorithm = inputs["algorithm"]
    if algorithm == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs.get("rsaBits", 2048)))
    elif algorithm == "ECDSA":
        key = ec.generate_private_key(_CURVES[inputs.get("ecdsaCurve", "P224")]())
    elif algorithm == "ED25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"pulumi-tls has no algorithm {algorithm!r}")
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "privateKeyPem": _pem_private(key),
        "privateKeyPemPkcs8": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "publicKeyPem": public.decode(),
    }


def _name(subject: Optional[dict]) -> x509.Name:
    subject = subject or {}
    return x509.Name([x509.NameAttribute(_SUBJECT[k], str(v)) for k, v in subject.items() if k in _SUBJECT and v])


def _build_cert(inputs: dict, subject: x509.Name, public_key, issuer: x509.Name, signing_key, is_ca: bool,
                dns_names, ip_addresses, ca_public_key=None) -> dict:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    end = now + datetime.timedelta(hours=int(inputs["validityPeriodHours"]))
    uses = inputs.get("allowedUses") or []
    usage = {v: False for v in _KEY_USAGE.values()}
    usage.update({"encipher_only": False, "decipher_only": False})
    for use in uses:
        if use in _KEY_USAGE:
            usage[_KEY_USAGE[use]] = True
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca_public_key is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public_key), critical=False)
    if any(usage.values()):
        builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    ext = [_EXT_USAGE[u] for u in uses if u in _EXT_USAGE]
    if ext:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ext), critical=False)
    sans = [x509.DNSName(n) for n in dns_names or []] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ip_addresses or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signing_key, _sign_hash(signing_key))
    return {
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": now.isoformat().replace("+00:00", "Z"),
        "validityEndTime": end.isoformat().replace("+00:00", "Z"),
        "readyForRenewal": False,
    }


def tls_self_signed_cert(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    name = _name(inputs.get("subject"))
    return _build_cert(inputs, name, key.public_key(), name, key, bool(inputs.get("isCaCertificate")),
                       inputs.get("dnsNames"), inputs.get("ipAddresses"))


def tls_cert_request(inputs: dict) -> dict:
    key = _load_key(inputs["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
    sans = [x509.DNSName(n) for n in inputs.get("dnsNames") or []] + [
        x509.IPAddress(ipaddress.ip_address(i)) for i in inputs.get("ipAddresses") or []
    ]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(key, _sign_hash(key))
    return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}


def tls_locally_signed_cert(inputs: dict) -> dict:
    csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    ca_key = _load_key(inputs["caPrivateKeyPem"])
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        ips = [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    out = _build_cert(inputs, csr.subject, csr.public_key(), ca_cert.subject, ca_key,
                      bool(inputs.get("isCaCertificate")), dns, ips, ca_public_key=ca_cert.public_key())
    out["caKeyAlgorithm"] = "ECDSA" if isinstance(ca_key, ec.EllipticCurvePrivateKey) else "RSA"
    return out


# ---- pulumi-random, stable per URN ----------------------------------------------------------

def _stream(urn: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{urn}#{counter}".encode()).digest()
        counter += 1
    return out[:n]


def random_password(inputs: dict, urn: str) -> dict:
    length = int(inputs.get("length", 16))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    if inputs.get("special", True):
        alphabet += inputs.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    result = "".join(alphabet[b % len(alphabet)] for b in _stream(urn, length))
    return {"result": result}


def random_bytes(inputs: dict, urn: str) -> dict:
    raw = _stream(urn, int(inputs["length"]))
    return {"base64": base64.b64encode(raw).decode(), "hex": raw.hex()}


# ---- the monitor ---------------------------------------------------------------------------

Handler = Callable[[dict, str], dict]

HANDLERS: dict[str, Handler] = {
    "tls:index/privateKey:PrivateKey": lambda i, u: tls_private_key(i),
    "tls:index/selfSignedCert:SelfSignedCert": lambda i, u: tls_self_signed_cert(i),
    "tls:index/certRequest:CertRequest": lambda i, u: tls_cert_request(i),
    "tls:index/locallySignedCert:LocallySignedCert": lambda i, u: tls_locally_signed_cert(i),
    "random:index/randomPassword:RandomPassword": random_password,
    "random:index/randomBytes:RandomBytes": random_bytes,
    "docker:index/remoteImage:RemoteImage": lambda i, u: {"imageId": i["name"], "repoDigest": i["name"]},
    "command:local:Command": lambda i, u: {"stdout": "", "stderr": ""},
    "command:remote:Command": lambda i, u: {"stdout": "", "stderr": ""},
}


class EngineMocks(pulumi.runtime.Mocks):
    """Resource outputs: inputs echoed, plus what the provider computes (see HANDLERS).

    With a ``state`` dict shared between runs, it behaves like successive ``pulumi up``s of one
    stack: a resource whose inputs did not change keeps the outputs it has in state (no update);
    otherwise the provider computes new ones.
    """

    def __init__(self, preview: bool = False, state: Optional[dict] = None):
        self.preview = preview
        self.state = state

    def new_resource(self, args: MockResourceArgs):
        inputs = reveal(args.inputs)
        key = (args.typ, args.name)
        if self.state is not None and key in self.state and self.state[key][0] == inputs:
            return self.state[key][1]
        urn = f"{args.typ}::{args.name}"
        outputs = dict(inputs)
        handler = HANDLERS.get(args.typ)
        if handler is not None and not self.preview:
            outputs.update(handler(inputs, urn))
        result = (f"{args.name}-id", outputs)
        if self.state is not None and not self.preview:
            self.state[key] = (inputs, result)
        return result

    def call(self, args):
        return {}


class EngineMonitor(MockMonitor):
    """MockMonitor plus what the engine does with secrets, and a record of every registration."""

    def __init__(self, mocks: EngineMocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []
        # Component outputs (register_outputs), which the engine stores in state too.
        self.component_outputs: dict[str, dict] = {}

    def RegisterResourceOutputs(self, request):  # noqa: N802 - gRPC method name
        self.component_outputs[request.urn] = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
        return super().RegisterResourceOutputs(request)

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        outputs = rpc.deserialize_properties(response.object, keep_unknowns=True)
        secret_names = set(request.additionalSecretOutputs) | {k for k, v in inputs.items() if contains_secret(v)}
        for key in secret_names & set(outputs):
            outputs[key] = rpc.wrap_rpc_secret(reveal(outputs[key]))
        if secret_names:
            response = resource_pb2.RegisterResourceResponse(
                urn=response.urn, id=response.id, object=_sync_await(rpc.serialize_properties(outputs, {}))
            )
        self.registered.append(
            Registered(
                type=request.type,
                name=request.name,
                urn=response.urn,
                parent=request.parent,
                custom=request.custom,
                inputs=inputs,
                outputs=outputs,
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                provider=request.provider,
                delete_before_replace=request.deleteBeforeReplace,
                retain_on_delete=request.retainOnDelete,
                protect=request.protect,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                aliases=[json_format.MessageToDict(alias) for alias in request.aliases],
                wire_inputs=json_format.MessageToDict(request.object),
            )
        )
        return response

    # Queries used by tests.
    def by_type(self, type_: str) -> list[Registered]:
        return [r for r in self.registered if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.by_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.registered if r.urn == urn)

    def state_text(self) -> str:
        """Every input and output as the engine would store it (secrets as ciphertext)."""
        resources = [{"urn": r.urn, "inputs": redact(r.wire_inputs), "outputs": redact(r.outputs)}
                     for r in self.registered]
        components = [{"urn": urn, "outputs": redact(outputs)} for urn, outputs in self.component_outputs.items()]
        return json.dumps(resources + components, default=str)
