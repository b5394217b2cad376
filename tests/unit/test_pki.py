"""PKI: the CA and server certificate resources, their real certificates, secrecy, and the
rotation generation that replaces the server certificate before its renewal window opens."""

from __future__ import annotations

import datetime
import math

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings, strategies as st

from components.pki import (
    CA_USES,
    CertificateAuthority,
    CertificateAuthorityArgs,
    ServerCertificate,
    ServerCertificateArgs,
    key_parameters,
    rotation_generation,
    server_uses,
)
from components.settings import CertificateSettings
from tests.support.engine import is_secret

KEY_TYPES = {
    "ECDSA-P256": (ec.EllipticCurvePrivateKey, "secp256r1"),
    "ECDSA-P384": (ec.EllipticCurvePrivateKey, "secp384r1"),
    "RSA-2048": (rsa.RSAPrivateKey, 2048),
    "RSA-3072": (rsa.RSAPrivateKey, 3072),
    "RSA-4096": (rsa.RSAPrivateKey, 4096),
    "ED25519": (ed25519.Ed25519PrivateKey, None),
}
CA_TYPE = "registry:pki:CertificateAuthority"
SERVER_TYPE = "registry:pki:ServerCertificate"


def build_pki(cert_settings: CertificateSettings, dns=("localhost", "registry.example.com"), ips=("127.0.0.1", "::1"),
              now: float = 0.0):
    ca = CertificateAuthority("ca", CertificateAuthorityArgs(certificate=cert_settings))
    server = ServerCertificate(
        "srv",
        ServerCertificateArgs(certificate=cert_settings, dns_names=dns, ip_addresses=ips,
                              ca_cert_pem=ca.cert_pem, ca_private_key_pem=ca.private_key_pem, now=now),
    )
    return ca, server


def collect(*outputs: pulumi.Output) -> tuple[pulumi.Output, dict]:
    """An Output that, once resolved, has filled ``found`` with each value and its secretness."""
    found: dict = {}

    async def gather(_):
        for i, output in enumerate(outputs):
            found[i] = (await output.future(), await output.is_secret())

    return pulumi.Output.from_input(None).apply(gather), found


@pytest.mark.parametrize("algorithm, expected", [
    ("ECDSA-P256", {"algorithm": "ECDSA", "ecdsa_curve": "P256"}),
    ("ECDSA-P384", {"algorithm": "ECDSA", "ecdsa_curve": "P384"}),
    ("RSA-3072", {"algorithm": "RSA", "rsa_bits": 3072}),
    ("RSA-4096", {"algorithm": "RSA", "rsa_bits": 4096}),
    ("ED25519", {"algorithm": "ED25519"}),
])
def test_key_parameters_map_settings_to_pulumi_tls(algorithm, expected):
    """The setting's algorithm names become pulumi-tls PrivateKey arguments."""
    assert key_parameters(algorithm) == expected


def test_unknown_key_algorithm_is_refused():
    """An algorithm the settings would not accept is refused here too, by name."""
    with pytest.raises(ValueError, match="DSA"):
        key_parameters("DSA-1024")


def test_server_uses_add_key_encipherment_only_for_rsa():
    """serverAuth always; keyEncipherment only where it means something (RSA key exchange)."""
    assert server_uses("ECDSA-P256") == ["digital_signature", "server_auth"]
    assert server_uses("RSA-2048") == ["digital_signature", "key_encipherment", "server_auth"]


def test_generated_ca_graph_and_secrecy(pulumi_mocks):
    """The CA component holds a key and a self-signed CA certificate as children named after it;
    the key's PEM and the component's private_key_pem are secret, the certificate is not."""
    cert_settings = CertificateSettings(ca_validity_hours=1000, validity_hours=100, renew_before_hours=10,
                                        organization="Acme")

    @pulumi.runtime.test
    def check():
        ca = CertificateAuthority("ca", CertificateAuthorityArgs(certificate=cert_settings))
        done, found = collect(ca.cert_pem, ca.private_key_pem)

        def verify(_):
            (pem, pem_secret), (key_pem, key_secret) = found[0], found[1]
            assert (pem_secret, key_secret) == (False, True)
            cert = x509.load_pem_x509_certificate(pem.encode())
            assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
            assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme CA"
            key = serialization.load_pem_private_key(key_pem.encode(), None)
            assert key.public_key().public_numbers() == cert.public_key().public_numbers()
            assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(hours=1000)

        return done.apply(verify)

    check()
    m = pulumi_mocks
    component = m.one(CA_TYPE)
    key = m.one("tls:index/privateKey:PrivateKey")
    cert = m.one("tls:index/selfSignedCert:SelfSignedCert")
    assert (key.name, cert.name) == ("ca-key", "ca-cert")
    assert key.parent == component.urn and cert.parent == component.urn
    assert key.plain_inputs == {"algorithm": "ECDSA", "ecdsaCurve": "P256"}
    assert is_secret(key.outputs["privateKeyPem"])
    assert is_secret(cert.inputs["privateKeyPem"])
    assert key.urn in cert.dependencies
    inputs = cert.plain_inputs
    assert inputs["isCaCertificate"] is True and inputs["allowedUses"] == CA_USES
    assert inputs["validityPeriodHours"] == 1000
    assert inputs["subject"] == {"commonName": "Acme CA", "organization": "Acme"}


def test_brought_ca_creates_no_tls_resources_and_keeps_the_key_secret(pulumi_mocks):
    """Bring your own CA: the given certificate is used as is, its key stays secret, nothing is generated."""
    given_cert, given_key = "-----BEGIN CERTIFICATE-----\nbrought\n", "-----BEGIN PRIVATE KEY-----\nbrought-key\n"

    @pulumi.runtime.test
    def check():
        ca = CertificateAuthority("ca", CertificateAuthorityArgs(certificate=CertificateSettings(),
                                                                 ca_cert_pem=given_cert, ca_private_key_pem=given_key))
        done, found = collect(ca.cert_pem, ca.private_key_pem)

        def verify(_):
            assert found[0] == (given_cert, False)
            assert found[1] == (given_key, True)

        return done.apply(verify)

    check()
    assert [r.type for r in pulumi_mocks.registered] == [CA_TYPE]


# RSA-4096 only differs from RSA-3072 in rsa_bits (checked above) and costs seconds per key.
@pytest.mark.parametrize("algorithm", [a for a in KEY_TYPES if a != "RSA-4096"])
def test_server_certificate_is_real_signed_and_names_every_host(pulumi_mocks, algorithm):
    """For each key algorithm: the certificate the graph yields verifies against the CA, carries
    every DNS name and IP in subjectAltName, serverAuth EKU, the configured lifetime, a key of the
    configured type; its private key is secret."""
    cert_settings = CertificateSettings(key_algorithm=algorithm, validity_hours=48, renew_before_hours=12)

    @pulumi.runtime.test
    def check():
        ca, server = build_pki(cert_settings)
        done, found = collect(ca.cert_pem, server.cert_pem, server.private_key_pem, server.expiry)

        def verify(_):
            ca_cert = x509.load_pem_x509_certificate(found[0][0].encode())
            cert = x509.load_pem_x509_certificate(found[1][0].encode())
            key_pem, key_secret = found[2]
            assert key_secret is True and found[1][1] is False
            cert.verify_directly_issued_by(ca_cert)
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert sans.get_values_for_type(x509.DNSName) == ["localhost", "registry.example.com"]
            assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
            assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH])
            assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
            assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(hours=48)
            assert found[3][0] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            key = serialization.load_pem_private_key(key_pem.encode(), None)
            key_class, size = KEY_TYPES[algorithm]
            assert isinstance(key, key_class)
            if key_class is rsa.RSAPrivateKey:
                assert key.key_size == size
            elif key_class is ec.EllipticCurvePrivateKey:
                assert key.curve.name == size
            assert cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
                key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

        return done.apply(verify)

    check()


def test_server_certificate_graph(pulumi_mocks):
    """Key, CSR and signed certificate are children of the component, named after it; the CSR
    holds every name and the rotation generation; the signed certificate depends on the CSR and
    the CA and has the CA key as a secret input (and output, as the engine stores it)."""
    cert_settings = CertificateSettings(key_algorithm="RSA-2048", validity_hours=100, renew_before_hours=40)

    @pulumi.runtime.test
    def check():
        _, server = build_pki(cert_settings, now=7 * 60 * 3600 + 5)
        done, found = collect(server.generation)
        return done.apply(lambda _: found[0] == (7, False) or pytest.fail(f"generation {found[0]}"))

    check()
    m = pulumi_mocks
    component = m.one(SERVER_TYPE)
    children = {r.name: r for r in m.registered if r.parent == component.urn}
    assert set(children) == {"srv-key", "srv-csr", "srv-cert"}
    key, csr, cert = children["srv-key"], children["srv-csr"], children["srv-cert"]
    assert key.plain_inputs == {"algorithm": "RSA", "rsaBits": 2048}
    assert csr.plain_inputs["dnsNames"] == ["localhost", "registry.example.com"]
    assert csr.plain_inputs["ipAddresses"] == ["127.0.0.1", "::1"]
    assert csr.plain_inputs["subject"] == {"commonName": "localhost", "organization": "Private Registry",
                                           "serialNumber": "rotation-7"}
    assert is_secret(csr.inputs["privateKeyPem"])
    inputs = cert.plain_inputs
    assert (inputs["validityPeriodHours"], inputs["earlyRenewalHours"]) == (100, 40)
    assert inputs["allowedUses"] == ["digital_signature", "key_encipherment", "server_auth"]
    assert is_secret(cert.inputs["caPrivateKeyPem"]) and is_secret(cert.outputs["caPrivateKeyPem"])
    ca_cert = m.one("tls:index/selfSignedCert:SelfSignedCert")
    ca_key = next(r for r in m.by_type("tls:index/privateKey:PrivateKey") if r.name == "ca-key")
    assert {csr.urn, ca_cert.urn, ca_key.urn} <= set(cert.dependencies)


def test_common_name_falls_back_to_the_first_ip(pulumi_mocks):
    """With only IP addresses, the first IP is the subject's common name (and a SAN)."""

    @pulumi.runtime.test
    def check():
        _, server = build_pki(CertificateSettings(), dns=(), ips=("10.0.0.5",))
        return server.cert_pem

    check()
    csr = pulumi_mocks.one("tls:index/certRequest:CertRequest")
    assert csr.plain_inputs["subject"]["commonName"] == "10.0.0.5"
    assert "dnsNames" not in csr.plain_inputs or csr.plain_inputs["dnsNames"] == []


# --- rotation --------------------------------------------------------------------------------

HOUR = 3600.0


def test_generation_is_stable_within_a_period_and_changes_at_the_boundary():
    """Default settings: a 60-day period (90 days validity - 30 days renewal window)."""
    c = CertificateSettings()
    period = c.rotation_period_hours * HOUR
    start = 1000 * period
    assert rotation_generation(start, c) == 1000
    assert rotation_generation(start + period / 2, c) == 1000
    assert rotation_generation(start + period - 1, c) == 1000
    assert rotation_generation(start + period, c) == 1001


@settings(max_examples=300, deadline=None, database=None)
@given(
    validity=st.integers(min_value=1, max_value=20 * 8760),
    renew_fraction=st.floats(min_value=0, max_value=0.999),
    issued=st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False),
)
def test_certificate_is_replaced_no_later_than_its_renewal_window_opens(validity, renew_fraction, issued):
    """Property: a certificate issued at any time in generation k (its CSR carries k) sees the
    generation change (so a plain `pulumi up` replaces it) after it was issued and no later than
    its renewal window opens (issue time + validity - renewBefore), hence well before it expires."""
    renew = min(validity - 1, int(validity * renew_fraction))
    c = CertificateSettings(validity_hours=validity, renew_before_hours=renew, ca_validity_hours=validity)
    period = c.rotation_period_hours * HOUR
    k = rotation_generation(issued, c)
    boundary = (k + 1) * period
    window_opens = issued + (validity - renew) * HOUR
    # A millisecond of slack for floating point at epoch-sized times.
    assert issued < boundary <= window_opens + 1e-3
    assert rotation_generation(boundary, c) == k + 1
    # Nothing changes between issue and the boundary: no churn before renewal is due.
    for t in (issued, (issued + boundary) / 2, math.nextafter(boundary, 0)):
        if t >= issued:
            assert rotation_generation(t, c) == k


def test_csr_changes_exactly_when_the_generation_does(pulumi_mocks):
    """Within a period the CSR's inputs are identical (no diff); across the boundary only the
    subject's serialNumber differs, which replaces the CSR and so the certificate."""
    c = CertificateSettings(validity_hours=10, renew_before_hours=4)  # 6-hour periods
    times = {"early": 6 * 6 * HOUR, "late": 7 * 6 * HOUR - 1, "next": 7 * 6 * HOUR}

    @pulumi.runtime.test
    def check():
        ca = CertificateAuthority("ca", CertificateAuthorityArgs(certificate=c))
        for label, now in times.items():
            ServerCertificate(label, ServerCertificateArgs(certificate=c, dns_names=["localhost"], ip_addresses=[],
                                                           ca_cert_pem=ca.cert_pem, ca_private_key_pem=ca.private_key_pem,
                                                           now=now))
        return ca.cert_pem

    check()
    subjects = {r.name.removesuffix("-csr"): r.plain_inputs["subject"] for r in
                pulumi_mocks.by_type("tls:index/certRequest:CertRequest")}
    assert subjects["early"] == subjects["late"]
    assert subjects["next"] == {**subjects["early"], "serialNumber": "rotation-7"}
    assert subjects["early"]["serialNumber"] == "rotation-6"
