"""Stack settings: every invalid value is refused before any resource exists, with a message that
names the setting (``private-registry:<path>``) and the fix, and never echoes a secret."""

from __future__ import annotations

import runpy
import time
from dataclasses import dataclass, field

import pulumi
import pytest

from components.settings import (
    DEFAULT_NGINX_IMAGE,
    DEFAULT_REGISTRY_IMAGE,
    SettingsError,
    load_settings,
    parse_settings,
)
from tests.support.program import MAIN, use_mocks

# Distinctive secrets: if any of them shows up in an error message, it leaked.
PASSWORD = "Corr3ct:horse@battery-staple"
OTHER_PASSWORD = "zz-second:secret@value-42"
LONG_PASSWORD = "L0ng@pass:" + "q" * 63  # 73 bytes
SHORT_PASSWORD = "sh0rt@pw:9"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA-sekrit\n-----END OPENSSH PRIVATE KEY-----"
SSH_PASSWORD = "ssh-pa55:word@host"
CA_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKEYMATERIAL-ca-secret\n-----END EC PRIVATE KEY-----"
ALL_SECRETS = (PASSWORD, OTHER_PASSWORD, LONG_PASSWORD, SHORT_PASSWORD, SSH_KEY, SSH_PASSWORD, CA_KEY,
               "b3BlbnNzaC1rZXktdjEAAAAA-sekrit", "MHcCAQEEIKEYMATERIAL-ca-secret")
SECRET_KEYS = {"users", "caPrivateKeyPem", "trust"}
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Bad:
    """One invalid configuration: what must appear in the message (the setting and the fix)."""

    raw: dict
    names: tuple[str, ...]
    fix: str
    secret_keys: set = field(default_factory=lambda: set(SECRET_KEYS))


def with_user(raw: dict) -> dict:
    """A valid secret user next to the bad value, so a leak of any password would be seen."""
    return {"users": {"alice": PASSWORD, "bob@example.com": OTHER_PASSWORD}, **raw}


INVALID = {
    # Names and addresses.
    "host name with underscore": Bad({"hosts": ["bad_host"]}, ("private-registry:hosts",), "put IP addresses under 'ips'"),
    "host label starting with '-'": Bad({"hosts": ["-x.example.com"]}, ("private-registry:hosts",), "labels of 1-63"),
    "host label too long": Bad({"hosts": ["a" * 64 + ".com"]}, ("private-registry:hosts",), "labels of 1-63"),
    "IP out of range": Bad({"ips": ["300.1.1.1"]}, ("private-registry:ips",), "IPv4 or IPv6 address"),
    "host name in ips": Bad({"ips": ["localhost"]}, ("private-registry:ips",), "IPv4 or IPv6 address"),
    "no name at all": Bad({"hosts": [], "ips": []}, ("hosts", "ips"), "at least one name"),
    "port 0": Bad({"httpsPort": 0}, ("private-registry:httpsPort",), "between 1 and 65535"),
    "port 65536": Bad({"httpsPort": 65536}, ("private-registry:httpsPort",), "between 1 and 65535"),
    "port abc": Bad({"httpsPort": "abc"}, ("private-registry:httpsPort",), "between 1 and 65535"),
    "registry host port 0": Bad({"registryHostPort": 0}, ("private-registry:registryHostPort",), "leave it unset"),
    "bind address name": Bad({"bindAddress": "localhost"}, ("private-registry:bindAddress",), "e.g. 0.0.0.0 or 127.0.0.1"),
    "bind address with port": Bad({"bindAddress": "0.0.0.0:443"}, ("private-registry:bindAddress",), "e.g. 0.0.0.0"),
    # Users.
    "user name with ':'": Bad({"users": {"a:b": PASSWORD}}, ("private-registry:users",), "no ':', spaces"),
    "user name with space": Bad({"users": {"a b": PASSWORD}}, ("private-registry:users",), "no ':', spaces"),
    "user name with tab": Bad({"users": {"a\tb": PASSWORD}}, ("private-registry:users",), "control characters"),
    "empty password": Bad({"users": {"alice": ""}}, ("private-registry:users",), "pulumi config set --secret --path 'users.alice'"),
    "password over 72 bytes": Bad({"users": {"alice": LONG_PASSWORD}}, ("private-registry:users",), "use at most 72 bytes"),
    "password over 72 bytes in UTF-8": Bad({"users": {"alice": "é" * 37}}, ("private-registry:users",), "use at most 72 bytes"),
    "password with line break": Bad({"users": {"alice": PASSWORD + "\n"}}, ("private-registry:users",), "remove it"),
    "short password": Bad({"users": {"alice": SHORT_PASSWORD}}, ("users", "minPasswordLength"), "use a longer one"),
    "default user with ':'": Bad({"defaultUser": "ad:min"}, ("private-registry:defaultUser",), "without ':'"),
    "bcrypt cost 3": Bad({"bcryptRounds": 3}, ("private-registry:bcryptRounds",), "between 4 and 17"),
    "bcrypt cost 18": Bad({"bcryptRounds": 18}, ("private-registry:bcryptRounds",), "between 4 and 17"),
    "plain-text users": Bad({"users": {"alice": PASSWORD}}, ("private-registry:users",), "store it as a secret",
                            secret_keys={"caPrivateKeyPem", "trust"}),
    # Certificates.
    "plain-text CA key": Bad({"caCertificatePem": "-----BEGIN CERTIFICATE-----", "caPrivateKeyPem": CA_KEY},
                             ("private-registry:caPrivateKeyPem",), "store it as a secret",
                             secret_keys={"users", "trust"}),
    "CA cert without key": Bad({"caCertificatePem": "-----BEGIN CERTIFICATE-----"}, ("caCertificatePem", "caPrivateKeyPem"),
                               "set both"),
    "CA key without cert": Bad({"caPrivateKeyPem": CA_KEY}, ("caCertificatePem", "caPrivateKeyPem"), "set both"),
    "negative validity": Bad({"certificate": {"validityHours": -1}}, ("private-registry:certificate.validityHours",),
                             "positive whole number of hours"),
    "zero validity": Bad({"certificate": {"validityHours": 0}}, ("private-registry:certificate.validityHours",),
                         "positive whole number of hours"),
    "zero CA validity": Bad({"certificate": {"caValidityHours": 0}}, ("private-registry:certificate.caValidityHours",),
                            "positive whole number of hours"),
    "negative renewBefore": Bad({"certificate": {"renewBeforeHours": -24}},
                                ("private-registry:certificate.renewBeforeHours",), "zero or more whole hours"),
    "renewBefore equal to validity": Bad({"certificate": {"validityHours": 100, "renewBeforeHours": 100}},
                                         ("private-registry:certificate", "renewBeforeHours"), "must be smaller than"),
    "renewBefore over validity": Bad({"certificate": {"validityHours": 100, "renewBeforeHours": 500}},
                                     ("private-registry:certificate", "renewBeforeHours"), "must be smaller than"),
    "CA validity under server validity": Bad(
        {"certificate": {"validityHours": 100, "renewBeforeHours": 10, "caValidityHours": 50}},
        ("private-registry:certificate", "caValidityHours"), "must be at least certificate.validityHours"),
    "unknown key algorithm": Bad({"certificate": {"keyAlgorithm": "DSA-1024"}},
                                 ("private-registry:certificate.keyAlgorithm",), "use one of ECDSA-P256"),
    # Images, volume, Docker host.
    "image reference with uppercase and '!'": Bad({"images": {"registry": "Registry:latest!"}},
                                                  ("private-registry:images.registry",), "like 'registry:2.8.3@sha256:"),
    "registry image tagged latest": Bad({"images": {"registry": f"registry:latest@{DIGEST}"}},
                                        ("private-registry:images",), "set images.registryVersion to 2 or 3"),
    "registry image by digest, no version": Bad({"images": {"registry": f"registry@{DIGEST}"}},
                                                ("private-registry:images",), "set images.registryVersion to 2 or 3"),
    "registry version 4": Bad({"images": {"registryVersion": 4}}, ("private-registry:images.registryVersion",), "3"),
    "registry version against its tag": Bad({"images": {"registry": f"registry:2.8.3@{DIGEST}", "registryVersion": 3}},
                                            ("private-registry:images",), "set it to 2"),
    "image with short digest": Bad({"images": {"nginx": "nginx:1.28@sha256:abc"}}, ("private-registry:images.nginx",),
                                   "like 'registry:2.8.3@sha256:"),
    "volume name with '/'": Bad({"volume": {"name": "-bad/vol"}}, ("private-registry:volume.name",), "must start with a letter"),
    "docker host http://": Bad({"docker": {"host": "http://docker:2375"}}, ("private-registry:docker.host",), "'ssh://USER@HOST'"),
    "docker host without scheme": Bad({"docker": {"host": "myhost"}}, ("private-registry:docker.host",), "'tcp://HOST:PORT'"),
    # Client trust.
    "unknown trust kind": Bad({"trust": [{"name": "a", "kinds": ["snap"]}]}, ("private-registry:trust[0].kinds[0]",),
                              "use docker, containerd, podman or system"),
    "no trust kind": Bad({"trust": [{"name": "a", "kinds": []}]}, ("private-registry:trust[0]",), "at least one of docker"),
    "remote trust without user": Bad({"trust": [{"name": "a", "host": "build.example.com"}]}, ("private-registry:trust[0]",),
                                     "set 'user'"),
    "trust SSH port 0": Bad({"trust": [{"name": "a", "port": 0}]}, ("private-registry:trust[0].port",), "greater than or equal to 1"),
    "trust name with space": Bad({"trust": [{"name": "my host"}]}, ("private-registry:trust[0].name",), "only letters"),
    "duplicate trust names": Bad({"trust": [{"name": "a"}, {"name": "a"}]}, ("trust",), "must be unique"),
    "plain-text trust key": Bad({"trust": [{"name": "a", "host": "h.example", "user": "u", "privateKey": SSH_KEY}]},
                                ("private-registry:trust[0]",), "--secret --path 'trust[0].privateKey'",
                                secret_keys={"users", "caPrivateKeyPem"}),
    "plain-text trust password": Bad({"trust": [{"name": "a", "host": "h.example", "user": "u", "password": SSH_PASSWORD}]},
                                     ("private-registry:trust[0]",), "--secret", secret_keys={"users", "caPrivateKeyPem"}),
    # Typos.
    "unknown top-level key": Bad({"httpPort": 443}, ("private-registry:httpPort",), "see the README's settings table"),
    "unknown nested key": Bad({"certificate": {"validityHour": 5}}, ("private-registry:certificate.validityHour",),
                              "see the README's settings table"),
    "unknown trust key": Bad({"trust": [{"name": "a", "kind": ["docker"]}]}, ("private-registry:trust[0].kind",),
                             "see the README's settings table"),
    # Maintenance.
    "bad repository": Bad({"maintenance": {"deletions": [{"repository": "Bad Repo", "tags": ["v1"]}]}},
                          ("private-registry:maintenance.deletions[0].repository", "Bad Repo"), "like 'team/app'"),
    "bad tag": Bad({"maintenance": {"deletions": [{"repository": "team/app", "tags": ["-bad tag"]}]}},
                   ("private-registry:maintenance.deletions[0]", "-bad tag"), "letters, digits"),
    "bad digest": Bad({"maintenance": {"deletions": [{"repository": "team/app", "digests": ["sha256:xyz"]}]}},
                      ("private-registry:maintenance.deletions[0]", "sha256:xyz"), "sha256:<64 lowercase hex>"),
    "deletion naming nothing": Bad({"maintenance": {"deletions": [{"repository": "team/app"}]}},
                                   ("private-registry:maintenance.deletions[0]",), "no tags and no digests"),
    "retention keeping nothing": Bad({"maintenance": {"retention": [{"repositories": "team/.*"}]}},
                                     ("private-registry:maintenance.retention[0]",), "set keepLast, keepPatterns or keepYoungerThan"),
    "negative keepLast": Bad({"maintenance": {"retention": [{"repositories": "team/.*", "keepLast": -1}]}},
                             ("private-registry:maintenance.retention[0].keepLast",), "1 or more"),
    "bad duration": Bad({"maintenance": {"retention": [{"repositories": "x", "keepYoungerThan": "3 months"}]}},
                        ("private-registry:maintenance.retention[0].keepYoungerThan",), "like '36h', '30d' or '2w'"),
    "zero duration": Bad({"maintenance": {"retention": [{"repositories": "x", "keepYoungerThan": "0d"}]}},
                         ("private-registry:maintenance.retention[0].keepYoungerThan",), "positive duration"),
    "bad regex": Bad({"maintenance": {"retention": [{"repositories": "x", "keepPatterns": ["(unclosed"]}]}},
                     ("private-registry:maintenance.retention[0].keepPatterns", "(unclosed"), "not a valid regular expression"),
    "unknown gc mode": Bad({"maintenance": {"gc": {"mode": "fast"}}}, ("private-registry:maintenance.gc.mode",),
                           "use readonly (default), stop or dry-run"),
}


@pytest.mark.parametrize("case", INVALID.values(), ids=INVALID.keys())
def test_invalid_setting_is_refused_naming_the_setting_and_the_fix(case: Bad):
    """SettingsError names the setting and says how to fix it; no secret value is in the text."""
    raw = case.raw if "users" in case.raw else with_user(case.raw)
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, stack="dev", secret_keys=case.secret_keys, now=0)
    message = str(caught.value)
    for name in case.names:
        assert name in message, message
    assert case.fix in message, message
    leaked = [secret for secret in ALL_SECRETS if secret in message]
    assert not leaked, f"secret value in message: {message}"
    assert "**********" not in message and "SecretStr" not in message


def test_every_problem_is_reported_at_once():
    """Several bad settings give one error listing each, so a user fixes them in one go."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(with_user({"httpsPort": 0, "bindAddress": "x", "trust": [{"name": "a", "kinds": ["snap"]}]}),
                       stack="dev", secret_keys=SECRET_KEYS, now=0)
    message = str(caught.value)
    for key in ("private-registry:httpsPort", "private-registry:bindAddress", "private-registry:trust[0].kinds[0]"):
        assert key in message
    assert message.count("\n  - ") == 3


VALID_EDGES = {
    "ports 1 and 65535": {"httpsPort": 1, "bindAddress": "127.0.0.1"},
    "port 65535": {"httpsPort": 65535},
    "password of exactly 72 bytes": {"users": {"alice": "p@ss:" + "w" * 67}},
    "password of exactly minPasswordLength": {"users": {"alice": "x" * 16}},
    "lower minPasswordLength": {"users": {"alice": "abc"}, "minPasswordLength": 3},
    "'@' in user names, '@' and ':' in passwords": {"users": {"ci@example.com": "a@b:c@d:e-0123456789"}},
    "renewBefore 0, CA validity equal": {"certificate": {"validityHours": 24, "renewBeforeHours": 0, "caValidityHours": 24}},
    "IPv6 only": {"hosts": [], "ips": ["::1"]},
    "ssh docker host with port": {"docker": {"host": "ssh://deploy@build.example.com:2222"}},
    "tcp docker host": {"docker": {"host": "tcp://docker.example.com:2376"}},
    "image by digest only": {"images": {"registry": f"registry@{DIGEST}", "registryVersion": 2,
                                        "nginx": f"example.com:5000/team/nginx:1.2@{DIGEST}"}},
    "registry 2.8 by its tag": {"images": {"registry": f"registry:2.8.3@{DIGEST}"}},
    "registry v3 tag with a suffix, version stated too": {"images": {"registry": f"r.example/registry:v3.1-x@{DIGEST}",
                                                                     "registryVersion": 3}},
    "every trust kind, remote with secret key": {
        "trust": [{"name": "here", "kinds": ["docker", "containerd", "podman", "system"]},
                  {"name": "there", "host": "10.0.0.9", "user": "ops", "privateKey": SSH_KEY, "sudo": True}]},
    "maintenance rules": {"maintenance": {
        "deletions": [{"repository": "team/app", "tags": ["v1", "v1.0_rc-1"], "digests": [DIGEST]}],
        "retention": [{"repositories": "team/*", "keepLast": 1, "keepPatterns": ["^v\\d+$"], "keepYoungerThan": "2w"}],
        "gc": {"mode": "dry-run", "deleteUntagged": True}}},
}


@pytest.mark.parametrize("raw", VALID_EDGES.values(), ids=VALID_EDGES.keys())
def test_valid_edge_values_are_accepted(raw):
    """Boundary values on the allowed side parse without error."""
    parse_settings(raw, stack="dev", secret_keys=SECRET_KEYS, now=0)


@pytest.mark.parametrize("text, hours", [("36h", 36), ("30d", 720), ("2w", 336), ("1.5d", 36), (12, 12)])
def test_durations_are_read_in_hours(text, hours):
    """keepYoungerThan takes h/d/w suffixes (or a number of hours)."""
    s = parse_settings({"maintenance": {"retention": [{"repositories": "x", "keepYoungerThan": text}]}}, stack="dev", now=0)
    assert s.maintenance.retention[0].keep_younger_than_hours == hours


def test_defaults():
    """With no config: a registry on localhost:443 (127.0.0.1 in the SANs), one generated 'admin'
    user, bcrypt cost 5, ECDSA P-256, 90-day certificates renewed 30 days early, pinned images,
    a volume kept on destroy, the local Docker socket, no trust targets."""
    s = parse_settings({}, stack="dev", now=0)
    assert (s.hosts, s.ips, s.https_port, s.bind_address) == (("localhost",), ("127.0.0.1",), 443, "0.0.0.0")
    assert (s.users, s.user_names, s.bcrypt_cost, s.generated_password_length) == ({}, ("admin",), 11, 32)
    c = s.certificate
    assert (c.key_algorithm, c.validity_hours, c.renew_before_hours, c.ca_validity_hours) == ("ECDSA-P256", 2160, 720, 87600)
    assert c.rotation_period_hours == 1440
    assert (s.images.registry, s.images.nginx) == (DEFAULT_REGISTRY_IMAGE, DEFAULT_NGINX_IMAGE)
    assert "@sha256:" in DEFAULT_REGISTRY_IMAGE and "@sha256:" in DEFAULT_NGINX_IMAGE
    assert s.images.registry_major == 3 and ":3." in DEFAULT_REGISTRY_IMAGE
    assert (s.volume.name, s.volume.keep_on_destroy) == (None, True)
    assert s.docker.host == "unix:///var/run/docker.sock"
    assert s.trust == () and s.registry_host_port is None
    assert (s.ca_certificate_pem, s.ca_private_key_pem) == (None, None)


@pytest.mark.parametrize(
    "raw, address",
    [
        ({}, "localhost"),
        ({"httpsPort": 5443}, "localhost:5443"),
        ({"hosts": ["Registry.Example.COM."], "httpsPort": 443}, "registry.example.com"),
        ({"hosts": [], "ips": ["10.0.0.5"]}, "10.0.0.5"),
        ({"hosts": [], "ips": ["::0001"], "httpsPort": 5443}, "[::1]:5443"),
    ],
)
def test_address_is_the_first_name_without_port_443(raw, address):
    """Clients write host[:port]; :443 is left out as Docker does; IPv6 is bracketed."""
    assert parse_settings(raw, stack="dev", now=0).address == address


def test_names_are_normalised():
    """Host names lowercased without a trailing dot, IPs in canonical form (SANs and certs.d agree)."""
    s = parse_settings({"hosts": ["A.Example."], "ips": ["::0001", "10.0.0.1"]}, stack="dev", now=0)
    assert s.hosts == ("a.example",)
    assert s.ips == ("::1", "10.0.0.1")


def test_prefix_and_volume_name_derive_from_the_stack():
    """Names carry the stack (two stacks on one host do not collide) unless overridden."""
    assert (parse_settings({}, stack="prod", now=0).prefix, parse_settings({}, stack="prod", now=0).volume_name) == (
        "registry-prod", "registry-prod-data")
    s = parse_settings({"namePrefix": "reg"}, stack="prod", now=0)
    assert (s.prefix, s.volume_name) == ("reg", "reg-data")
    assert parse_settings({"volume": {"name": "images"}}, stack="prod", now=0).volume_name == "images"


def test_user_names_in_configured_order_or_the_default_user():
    """Configured users replace the default one; otherwise the default user name is used."""
    s = parse_settings({"users": {"zed": PASSWORD, "amy": OTHER_PASSWORD}}, stack="dev", secret_keys={"users"}, now=0)
    assert s.user_names == ("zed", "amy")
    assert parse_settings({"defaultUser": "ops"}, stack="dev", now=0).user_names == ("ops",)


def test_passwords_are_held_as_secret_strings():
    """Passwords are SecretStr: repr and str of the settings never show them."""
    s = parse_settings({"users": {"alice": PASSWORD}}, stack="dev", secret_keys={"users"}, now=0)
    assert s.users["alice"].get_secret_value() == PASSWORD
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)


# --- through Pulumi's config, as `pulumi up` reads it ---------------------------------------------


def test_load_settings_reads_the_stack_config():
    """Strings from Pulumi config become typed values; JSON objects nest; secret users are accepted."""
    use_mocks(
        stack="staging",
        config={
            "httpsPort": "5443",
            "hosts": ["registry.example.com"],
            "users": {"alice": PASSWORD},
            "volume": {"keepOnDestroy": False},
            "certificate": {"keyAlgorithm": "RSA-2048", "validityHours": 48, "renewBeforeHours": 12},
            "trust": [{"name": "laptop", "kinds": ["docker", "podman"]}],
        },
        secret_keys=["users"],
    )
    s = load_settings(now=1234.5)
    assert (s.stack, s.now, s.https_port, s.hosts, s.address) == (
        "staging", 1234.5, 5443, ("registry.example.com",), "registry.example.com:5443")
    assert s.users["alice"].get_secret_value() == PASSWORD
    assert s.volume.keep_on_destroy is False
    assert (s.certificate.key_algorithm, s.certificate.rotation_period_hours) == ("RSA-2048", 36)
    assert s.trust[0].kinds == ("docker", "podman") and s.trust[0].is_local
    assert s.prefix == "registry-staging"


def test_load_settings_defaults_and_clock():
    """Empty config gives the defaults; without an explicit time, the current time is used."""
    use_mocks(config={})
    before = time.time()
    s = load_settings()
    assert before <= s.now <= time.time()
    assert s == parse_settings({}, stack="dev", now=s.now)


def test_load_settings_refuses_passwords_not_stored_as_secret():
    """`pulumi config set --path users.alice ...` without --secret is refused, without the value."""
    use_mocks(config={"users": {"alice": PASSWORD}})
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "private-registry:users: holds passwords in plain text" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_load_settings_refuses_an_unknown_key():
    """A typo in a config key fails instead of silently using the default."""
    use_mocks(config={"httpsport": "8443"})
    with pytest.raises(SettingsError, match="private-registry:httpsport: is not a known setting"):
        load_settings()


def test_invalid_settings_fail_before_any_resource_is_registered():
    """The whole program with an invalid setting raises SettingsError and registers nothing:
    `pulumi preview` fails before any resource is touched."""
    monitor = use_mocks(config={"users": {"alice": PASSWORD}, "httpsPort": "70000"}, secret_keys=["users"])
    with pytest.raises(SettingsError, match="private-registry:httpsPort"):
        pulumi.runtime.test(lambda: runpy.run_path(str(MAIN), run_name="__pulumi_main__"))()
    assert monitor.registered == []


def test_valid_settings_do_register_resources():
    """Control for the test above: the same program with valid settings registers resources,
    so an empty record means refusal, not a broken harness."""
    monitor = use_mocks(config={"users": {"alice": PASSWORD}, "httpsPort": "8443"}, secret_keys=["users"])
    pulumi.runtime.test(lambda: runpy.run_path(str(MAIN), run_name="__pulumi_main__"))()
    assert len(monitor.registered) > 10


# --- checks across fields name the blamed setting ---

PW = "Corr3ct:horse@battery-staple"

@pytest.mark.parametrize("raw, path", [
    ({"users": {"alice": "sh0rt@pw:9"}}, "private-registry:users"),
    ({"caCertificatePem": "-----BEGIN CERTIFICATE-----"}, "private-registry:caPrivateKeyPem"),
    ({"trust": [{"name": "a"}, {"name": "a"}]}, "private-registry:trust"),
    ({"hosts": [], "ips": []}, "private-registry:hosts"),
    ({"certificate": {"validityHours": 100, "renewBeforeHours": 100}}, "private-registry:certificate.renewBeforeHours"),
])
def test_cross_field_errors_name_the_setting_path(raw, path):
    """A check across fields names the setting it blames as a private-registry:<key> path."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, stack="dev", secret_keys={"users", "caPrivateKeyPem", "trust"}, now=0)
    assert path in str(caught.value)

def test_bad_ip_message_has_a_fix():
    """A bad IP address comes with a fix."""
    with pytest.raises(SettingsError) as caught:
        parse_settings({"ips": ["300.1.1.1"]}, stack="dev", now=0)
    assert "fix:" in str(caught.value)


# --- bring your own CA ---

def _own_ca(is_ca: bool = True):
    import datetime

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "Own CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        cx509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1000))
        .add_extension(cx509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_own_ca_pair_is_accepted():
    """A CA certificate with its own key is accepted as brought."""
    cert, key = _own_ca()
    s = parse_settings({"caCertificatePem": cert, "caPrivateKeyPem": key}, stack="dev", secret_keys={"caPrivateKeyPem"})
    assert s.ca_certificate_pem == cert


@pytest.mark.parametrize("case", ["not a CA", "mismatched key", "garbage key", "garbage certificate"])
def test_own_ca_problems_are_refused_without_echoing_the_key(case):
    """A brought CA that is no CA, a key of another pair, or unparsable PEM is refused, naming
    the setting; the key's material never appears in the message."""
    cert, key = _own_ca(is_ca=case != "not a CA")
    if case == "mismatched key":
        key = _own_ca()[1]
    if case == "garbage key":
        key = "-----BEGIN PRIVATE KEY-----\nTm90QUtleVNlY3JldE1hdGVyaWFs\n-----END PRIVATE KEY-----\n"
    if case == "garbage certificate":
        cert = "-----BEGIN CERTIFICATE-----\nbm90YWNlcnQ=\n-----END CERTIFICATE-----\n"
    with pytest.raises(SettingsError) as caught:
        parse_settings({"caCertificatePem": cert, "caPrivateKeyPem": key}, stack="dev",
                       secret_keys={"caPrivateKeyPem"})
    message = str(caught.value)
    expected = "private-registry:caCertificatePem" if case in ("not a CA", "garbage certificate") else (
        "private-registry:caPrivateKeyPem")
    assert expected in message
    body = "".join(line for line in key.splitlines() if "-----" not in line)
    assert body[:24] not in message
