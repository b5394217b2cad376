"""TLS as promised, checked with real TLS clients against the deployed proxy.

Clients: Debian's ``openssl s_client`` (OpenSSL 3, told ``@SECLEVEL=0`` so it offers old
protocols at all) and nassl, sslyze's scanning engine from PyPI, whose legacy client is built
on OpenSSL 1.0.2 and so can still offer SSLv3, RC4, 3DES and EXPORT suites that OpenSSL 3
no longer has. A refusal only proves something if the client really asked, so every weak
probe is first run against a local recorder that captures its ClientHello: the test checks
that the protocol version or cipher suites it claims to offer are on the wire.

The stack uses an RSA key here: with the default ECDSA key, RSA key exchange and the
RSA-authenticated CBC suites could never be negotiated anyway, so refusing them would prove
nothing about the proxy's cipher list.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from nassl.legacy_ssl_client import LegacySslClient
from nassl.ssl_client import OpenSslVerifyEnum, OpenSslVersionEnum, SslClient

from tests.support.deploy import live_stack

HOSTS = ["localhost", "registry.example.test"]
IPS = ["127.0.0.1", "::1"]
# Mozilla intermediate, as far as an RSA certificate can use it: ECDHE key exchange, AEAD only.
STRONG_TLS12 = {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305"}
STRONG_IDS = {0xC02F, 0xC030, 0xCCA8, 0xC02B, 0xC02C, 0xCCA9, 0x1301, 0x1302, 0x1303}
VERSION_CODES = {"SSLv3": 0x0300, "TLSv1.0": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}



@dataclass
class Stack:
    port: int
    ca_file: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """The deployed stack with two host names and two IPs in its certificate; removed afterwards."""
    tmp = tmp_path_factory.mktemp("tls")
    with live_stack(tmp, "sec-tls", {"alice": "tls-test-password-4f1a9c"}, hosts=HOSTS, ips=IPS,
                    certificate={"keyAlgorithm": "RSA-2048"}) as live:
        yield Stack(live.port, live.ca_file)


# --- what a client offers ----------------------------------------------------------------------


@dataclass
class ClientHello:
    versions: set[int]  # from supported_versions, else the legacy client_version
    suites: list[int]


def parse_client_hello(data: bytes) -> ClientHello:
    payload = b""
    i = 0
    while i + 5 <= len(data) and data[i] == 0x16:
        length = int.from_bytes(data[i + 3:i + 5], "big")
        payload += data[i + 5:i + 5 + length]
        i += 5 + length
    assert payload[:1] == b"\x01", f"not a ClientHello: {data[:16].hex()}"
    body = payload[4:4 + int.from_bytes(payload[1:4], "big")]
    versions = {int.from_bytes(body[0:2], "big")}
    p = 2 + 32
    p += 1 + body[p]  # session id
    suites_len = int.from_bytes(body[p:p + 2], "big")
    suites = [int.from_bytes(body[p + 2 + k:p + 4 + k], "big") for k in range(0, suites_len, 2)]
    p += 2 + suites_len
    p += 1 + body[p]  # compression methods
    if p + 2 <= len(body):
        end = p + 2 + int.from_bytes(body[p:p + 2], "big")
        p += 2
        while p + 4 <= end:
            kind, size = int.from_bytes(body[p:p + 2], "big"), int.from_bytes(body[p + 2:p + 4], "big")
            ext = body[p + 4:p + 4 + size]
            if kind == 0x002B:  # supported_versions
                versions = {int.from_bytes(ext[1 + k:3 + k], "big") for k in range(0, ext[0], 2)}
            p += 4 + size
    grease = {v for v in versions if v & 0x0F0F == 0x0A0A}
    return ClientHello(versions - grease, [s for s in suites if s & 0x0F0F != 0x0A0A])


def capture_hello(connect: Callable[[int], object]) -> ClientHello:
    """Run ``connect(port)`` against a listener that records the ClientHello and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            while len(received) < 5 or len(received) < 5 + int.from_bytes(received[3:5], "big"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        connect(port)
    except Exception:  # noqa: BLE001 - the recorder never answers, so every client fails here
        pass
    thread.join(10)
    listener.close()
    return parse_client_hello(bytes(received))


# --- clients ------------------------------------------------------------------------------------


def s_client(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}", *args],
        input="", capture_output=True, text=True, timeout=20,
    )


NASSL_VERSIONS = {
    "SSLv3": OpenSslVersionEnum.SSLV3,
    "TLSv1.0": OpenSslVersionEnum.TLSV1,
    "TLSv1.1": OpenSslVersionEnum.TLSV1_1,
    "TLSv1.2": OpenSslVersionEnum.TLSV1_2,
    "TLSv1.3": OpenSslVersionEnum.TLSV1_3,
}


def nassl_handshake(port: int, version: str, ciphers: str | None, *, legacy: bool) -> str | None:
    """The negotiated cipher, or None if the server refused the handshake."""
    client_class = LegacySslClient if legacy else SslClient
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        client = client_class(underlying_socket=sock, ssl_version=NASSL_VERSIONS[version],
                              ssl_verify=OpenSslVerifyEnum.NONE)
        if ciphers:
            client.set_cipher_list(ciphers)
        client.set_tlsext_host_name("localhost")
        try:
            client.do_handshake()
        except Exception:  # noqa: BLE001 - nassl raises OpenSSLError or a socket error on refusal
            return None
        return client.get_current_cipher_name()


def nassl_cipher_names(cipher_string: str, *, legacy: bool) -> list[str]:
    client = (LegacySslClient if legacy else SslClient)(ssl_version=OpenSslVersionEnum.TLSV1_2)
    client.set_cipher_list(cipher_string)
    return client.get_cipher_list()


# --- protocol versions --------------------------------------------------------------------------


@pytest.mark.parametrize("version, flag", [("TLSv1.0", "-tls1"), ("TLSv1.1", "-tls1_1")])
def test_old_tls_versions_refused_by_openssl_s_client(stack, version, flag):
    """openssl s_client, forced to TLS 1.0 or 1.1 (security level 0, so it really offers it),
    cannot complete a handshake with the proxy; the recorder shows it offered that version only."""
    hello = capture_hello(lambda port: s_client(port, flag, "-cipher", "DEFAULT:@SECLEVEL=0"))
    assert hello.versions == {VERSION_CODES[version]}
    result = s_client(stack.port, flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "localhost")
    assert result.returncode != 0, result.stdout
    assert "CONNECTION ESTABLISHED" not in result.stdout
    assert "protocol version" in result.stderr or "alert" in result.stderr, result.stderr


@pytest.mark.parametrize("version", ["SSLv3", "TLSv1.0", "TLSv1.1"])
def test_old_protocol_versions_refused_by_the_legacy_client(stack, version):
    """nassl's OpenSSL 1.0.2 client, offering SSLv3, TLS 1.0 or TLS 1.1 with every cipher it
    has, is refused."""
    hello = capture_hello(lambda port: nassl_handshake(port, version, "ALL:COMPLEMENTOFALL", legacy=True))
    assert hello.versions == {VERSION_CODES[version]}
    assert nassl_handshake(stack.port, version, "ALL:COMPLEMENTOFALL", legacy=True) is None


@pytest.mark.parametrize("version, flag", [("TLSv1.2", "-tls1_2"), ("TLSv1.3", "-tls1_3")])
def test_tls12_and_tls13_accepted_and_verified(stack, version, flag):
    """openssl s_client with default settings completes TLS 1.2 and 1.3 handshakes, verifying
    the chain against the exported CA and the host name."""
    result = s_client(stack.port, flag, "-servername", "localhost", "-CAfile", str(stack.ca_file),
                      "-verify_return_error", "-verify_hostname", "localhost")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert f"Protocol version: {version}" in output
    assert "Verification: OK" in output


# --- cipher suites ------------------------------------------------------------------------------

# (class, OpenSSL cipher string, one IANA suite id the recorder must see offered)
WEAK_CLASSES = [
    ("RC4", "RC4", 0x0005),  # RC4-SHA
    ("3DES", "3DES", 0x000A),  # DES-CBC3-SHA
    ("single DES", "DES:!3DES", 0x0009),  # DES-CBC-SHA
    ("NULL encryption", "eNULL", 0x0002),  # NULL-SHA
    ("EXPORT", "EXPORT", 0x0003),  # EXP-RC4-MD5
    ("anonymous", "aNULL", 0x0034),  # ADH-AES128-SHA
    ("RSA key exchange (no forward secrecy)", "kRSA", 0x002F),  # AES128-SHA
    ("CBC with SHA-1", "SHA1:!RC4:!eNULL", 0xC013),  # ECDHE-RSA-AES128-SHA
    ("CBC with SHA-256/384", "AES+SHA256:AES+SHA384:!AESGCM", 0xC027),  # ECDHE-RSA-AES128-SHA256
    ("MD5", "MD5", 0x0004),  # RC4-MD5
]


@pytest.mark.parametrize("label, ciphers, example", WEAK_CLASSES, ids=[c[0] for c in WEAK_CLASSES])
def test_weak_cipher_classes_refused(stack, label, ciphers, example):
    """A TLS 1.2 client offering only one weak class of suites (RC4, 3DES, DES, NULL, EXPORT,
    anonymous, RSA key exchange, CBC modes, MD5) gets no handshake; the recorder shows the
    suites were offered and no strong one with them."""
    hello = capture_hello(lambda port: nassl_handshake(port, "TLSv1.2", ciphers, legacy=True))
    assert example in hello.suites, f"{label}: {example:#06x} not offered: {[hex(s) for s in hello.suites]}"
    assert not STRONG_IDS & set(hello.suites)
    assert nassl_handshake(stack.port, "TLSv1.2", ciphers, legacy=True) is None


def test_only_forward_secret_aead_suites_are_accepted_on_tls12(stack):
    """Offering every TLS 1.2 suite that OpenSSL 1.0.2 and 1.1.1 know, one at a time, the proxy
    accepts exactly the ECDHE + AES-GCM / ChaCha20-Poly1305 suites its RSA key can serve."""
    candidates = set(nassl_cipher_names("ALL:COMPLEMENTOFALL", legacy=True))
    # TLS 1.3 suites (TLS_*) are configured apart and tested below.
    modern = {n for n in nassl_cipher_names("ALL:COMPLEMENTOFALL", legacy=False) if not n.startswith("TLS_")}
    accepted = {name for name in sorted(candidates) if nassl_handshake(stack.port, "TLSv1.2", name, legacy=True)}
    accepted |= {name for name in sorted(modern - candidates) if nassl_handshake(stack.port, "TLSv1.2", name, legacy=False)}
    print(f"\nTLS 1.2 suites tried: {len(candidates | modern)}; accepted: {sorted(accepted)}")
    assert len(candidates | modern) > 100
    assert accepted == STRONG_TLS12


def test_tls13_accepts_its_suites(stack):
    """Every TLS 1.3 suite (all AEAD, all forward-secret) completes a handshake."""
    for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"):
        result = s_client(stack.port, "-tls1_3", "-ciphersuites", suite, "-servername", "localhost",
                          "-CAfile", str(stack.ca_file), "-verify_return_error")
        assert result.returncode == 0, (suite, result.stderr)
        assert f"Ciphersuite: {suite}" in result.stdout + result.stderr


# --- chain, names -------------------------------------------------------------------------------


def _connect(stack: Stack, server_hostname: str, cafile: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.mark.parametrize("name", HOSTS + IPS)
def test_chain_and_every_configured_name_verify(stack, name):
    """A client that trusts only the exported CA verifies the chain and the name, for every
    configured host name and IP address."""
    cert = _connect(stack, name, stack.ca_file)
    ca = x509.load_pem_x509_certificate(stack.ca_file.read_bytes())
    assert cert.issuer == ca.subject


def test_wrong_name_and_foreign_ca_are_rejected(stack, tmp_path):
    """Control: a name the certificate does not carry, or a CA that did not sign it, fails
    verification -- so the checks above can fail."""
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _connect(stack, "other.example.test", stack.ca_file)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    foreign = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    other = tmp_path / "foreign.pem"
    other.write_bytes(foreign.public_bytes(Encoding.PEM))
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(stack, "localhost", other)


def test_certificate_carries_every_configured_name_and_verifies_with_openssl(stack, tmp_path):
    """The served certificate's subjectAltName holds exactly the configured host names and IPs,
    it is a server certificate with the configured key type, and `openssl verify` accepts it
    against the exported CA."""
    cert = _connect(stack, "localhost", stack.ca_file)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(HOSTS)
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address(i) for i in IPS}
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    served = tmp_path / "served.pem"
    served.write_bytes(cert.public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(stack.ca_file), "-purpose", "sslserver", str(served)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr
