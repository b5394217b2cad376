"""Hostile settings: every value is refused with a settings error naming the setting, or read
as a value of its kind's grammar; nothing else (no traceback, no half-valid value) comes out.

The sinks (nginx, sh, TOML, htpasswd, ``docker login``) are run for real on the accepted ones
in tests/integration/test_hostile_settings.py.
"""

from __future__ import annotations

import datetime
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from components import grammar
from components.render.trust import KINDS
from components.settings import HOURS_MAX, SettingsError, parse_settings
from tests.support.hostile import CA_CERT, CA_KEY, FRAGMENTS, PASSWORD, SECRET_KEYS, TARGETS, Case, base_config, corpus
from tests.support.program import use_mocks

NOW = datetime.datetime.now(datetime.timezone.utc).timestamp()
KEY_BODY = "".join(line for line in CA_KEY.splitlines() if "-----" not in line)


def _printable_dns_or_ip(value: str) -> bool:
    return grammar.is_dns_name(value) or grammar.parse_ip(value) == value


# What an accepted value must be, per target setting, as the program reads it.
ACCEPTED_KIND = {
    "hosts[0]": lambda s: all(grammar.is_dns_name(h) for h in s.hosts),
    "ips[0]": lambda s: all(grammar.parse_ip(ip) == ip for ip in s.ips),
    "bindAddress": lambda s: grammar.parse_ip(s.bind_address) == s.bind_address,
    "users": lambda s: all(grammar.is_user_name(u) for u in s.users),
    "users.alice": lambda s: not grammar.has_control_character(s.users["alice"].get_secret_value()),
    "defaultUser": lambda s: grammar.is_user_name(s.default_user),
    "certificate.organization": lambda s: s.certificate.organization.isprintable()
    and len(s.certificate.organization) <= 61,
    "certificate.keyAlgorithm": lambda s: s.certificate.key_algorithm in (
        "ECDSA-P256", "ECDSA-P384", "RSA-2048", "RSA-3072", "RSA-4096", "ED25519"),
    "caCertificatePem": lambda s: s.ca_certificate_pem == CA_CERT,
    "images.registry": lambda s: grammar.is_pinned_image_reference(s.images.registry),
    "images.nginx": lambda s: grammar.is_pinned_image_reference(s.images.nginx),
    "volume.name": lambda s: grammar.is_docker_name(s.volume_name),
    "docker.host": lambda s: grammar.is_docker_host(s.docker.host),
    "docker.sshOpts[0]": lambda s: not any(grammar.has_control_character(o) for o in s.docker.ssh_opts),
    "namePrefix": lambda s: grammar.is_docker_name(s.prefix),
    "trust[0].name": lambda s: all(grammar.is_docker_name(t.name) for t in s.trust),
    "trust[1].host": lambda s: all(t.is_local or _printable_dns_or_ip(t.host) for t in s.trust),
    "trust[1].user": lambda s: all(t.user is None or grammar.is_ssh_user(t.user) for t in s.trust),
    "trust[0].kinds[0]": lambda s: all(k in KINDS for t in s.trust for k in t.kinds),
    "maintenance.deletions[0].repository": lambda s: grammar.is_repository(s.maintenance.deletions[0].repository),
    "maintenance.deletions[0].tags[0]": lambda s: all(grammar.is_tag(t) for t in s.maintenance.deletions[0].tags),
    "maintenance.deletions[0].digests[0]": lambda s: all(
        grammar.is_digest(d) for d in s.maintenance.deletions[0].digests),
    "maintenance.retention[0].repositories": lambda s: grammar.is_repository_glob(
        s.maintenance.retention[0].repositories),
    "maintenance.retention[0].keepPatterns[0]": lambda s: all(
        grammar.compile_tag_pattern(p) is not None for p in s.maintenance.retention[0].keep_patterns),
    "maintenance.retention[0].keepYoungerThan": lambda s: 0 < s.maintenance.retention[0].keep_younger_than_hours
    <= HOURS_MAX,
    "maintenance.gc.mode": lambda s: s.maintenance.gc.mode in ("readonly", "stop", "dry-run"),
}


def outcome(config: dict, path: str) -> str:
    """'refused' (a SettingsError with a line naming the setting's own path, e.g.
    maintenance.deletions[0].tags[0] or, for a user name, users.<name>; printable, no secret) or
    'accepted' (the value read is of its kind). Any other exception fails the test."""
    try:
        settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    except SettingsError as exc:
        message = str(exc)
        own = "private-registry:users." if path == "users" else f"private-registry:{path}: "
        assert any(line.startswith(own) for line in message.split("\n  - ")), (path, message)
        assert all(line.isprintable() for line in message.split("\n")), repr(message)
        assert PASSWORD not in message and KEY_BODY[:40] not in message
        return "refused"
    assert ACCEPTED_KIND[path](settings), (path, config)
    return "accepted"


def test_the_base_config_is_valid():
    """Control: the config the hostile values are put into is accepted as it is, so every
    refusal below is the hostile value's."""
    assert parse_settings(base_config(), stack="dev", secret_keys=set(SECRET_KEYS), now=NOW).hosts
    assert set(ACCEPTED_KIND) == {t.path for t in TARGETS}


CORPUS = corpus()
# Measured by test_hostile_corpus_is_refused_or_read_as_its_kind; README's "Bad input refused" row.
EXPECTED_TOTALS = {"cases": 2808, "refused": 2539, "accepted": 269}
EXPECTED_ACCEPTED = {
    "users.alice": 48, "certificate.organization": 66, "docker.sshOpts[0]": 75,
    "maintenance.retention[0].keepPatterns[0]": 67, "maintenance.retention[0].repositories": 3,
    "users": 1, "defaultUser": 1, "caCertificatePem": 8,
}
# The free-text settings (and the three that take '@' after the first character or surrounding
# white space): their accepted
# hostile values are run through every sink in tests/integration/test_hostile_settings.py.
FREE_TEXT = {"users.alice", "certificate.organization", "docker.sshOpts[0]", "maintenance.retention[0].keepPatterns[0]",
             "users", "defaultUser", "caCertificatePem", "maintenance.retention[0].repositories"}


def test_hostile_corpus_is_refused_or_read_as_its_kind():
    """Each of the FRAGMENTS alone, before and after a valid value, in each of the 26 string
    settings: refused with a settings error naming that setting, or accepted as a value of the
    setting's grammar. The totals are the README's figures."""
    tally = Counter()
    accepted_by_path = Counter()
    for case in CORPUS:
        result = outcome(case.config(), case.target.path)
        tally[result] += 1
        if result == "accepted":
            accepted_by_path[case.target.path] += 1
    totals = {"cases": len(CORPUS), "refused": tally["refused"], "accepted": tally["accepted"]}
    print(f"hostile corpus: {totals}, accepted by setting: {dict(accepted_by_path)}")
    assert totals == EXPECTED_TOTALS
    # Only free-text settings take hostile characters at all; every grammar-bound one refuses them.
    assert set(accepted_by_path) == FREE_TEXT, accepted_by_path
    assert dict(accepted_by_path) == EXPECTED_ACCEPTED
    # The README quotes these figures.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"of **{totals['cases']:,} hostile values, {totals['refused']:,} refused**" in readme
    assert f"the **{totals['accepted']:,} accepted** are free text" in readme


hostile_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=10), st.sampled_from(list(FRAGMENTS.values())),
              st.text(max_size=10)),
)


@hypothesis_settings(max_examples=400, derandomize=True, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS), text=hostile_text, placement=st.sampled_from(["alone", "before", "after"]))
def test_random_hostile_text_is_refused_or_read_as_its_kind(target, text, placement):
    """Random Unicode text (any code point, controls included) and fragments around it, in any
    string setting: a settings error naming it, or a value of its kind; never a traceback."""
    value = {"alone": text, "before": text + target.valid, "after": target.valid + text}[placement]
    outcome(Case(target, "random", placement, value).config(), target.path)


# --- strict types: no bool as a number, no NaN, no text where a number is promised ------------

NUMBER_PATHS = ["httpsPort", "registryHostPort", "minPasswordLength", "generatedPasswordLength", "bcryptRounds",
                "certificate.validityHours", "certificate.caValidityHours", "certificate.renewBeforeHours",
                "trust[1].port", "maintenance.retention[0].keepLast"]
BOOL_PATHS = ["volume.keepOnDestroy", "trust[0].sudo", "maintenance.deletions[0].allowSharedDigest",
              "maintenance.retentionDryRun", "maintenance.gc.enabled", "maintenance.gc.deleteUntagged"]
NOT_NUMBERS = [True, False, "8443", "1e3", 5.0, 5.5, math.nan, math.inf, -math.inf, [5], {"n": 5}, 10**30]
NOT_BOOLS = [1, 0, "true", "false", "yes", None, 1.0, [True]]


def _put(config: dict, path: str, value) -> dict:
    from tests.support.hostile import _target
    _target(path, "").put(config, value)
    return config


@pytest.mark.parametrize("path", NUMBER_PATHS)
@pytest.mark.parametrize("value", NOT_NUMBERS, ids=repr)
def test_numbers_are_strict(path, value):
    """A number setting takes a whole number in range only: true/false, text, fractions, NaN,
    infinities, lists and huge numbers are refused naming the setting."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(_put(base_config(), path, value), stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    assert f"private-registry:{path.split('.')[0].split('[')[0]}" in str(caught.value)


@pytest.mark.parametrize("path", BOOL_PATHS)
@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_switches_are_strict(path, value):
    """A true/false setting takes true or false only (not 1, "yes" or null)."""
    with pytest.raises(SettingsError, match=r"must be true or false|Input should be"):
        parse_settings(_put(base_config(), path, value), stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, -1, 0, 10**9, "99999999w", "1e3h", "30 d", " 30d"],
                         ids=repr)
def test_durations_are_strict(value):
    """keepYoungerThan: a positive finite duration up to 100 years; never true, NaN or an overflow."""
    config = _put(base_config(), "maintenance.retention[0].keepYoungerThan", value)
    with pytest.raises(SettingsError, match=r"private-registry:maintenance\.retention\[0\]\.keepYoungerThan"):
        parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)


@pytest.mark.parametrize("raw, key", [
    ({"https_port": 443}, "https_port"),
    ({"ca_private_key_pem": CA_KEY, "caCertificatePem": CA_CERT}, "ca_private_key_pem"),
    ({"trust": [{"name": "t", "host": "h.example", "user": "u", "private_key": "k"}]}, "trust[0].private_key"),
    ({"certificate": {"validity_hours": 48}}, "certificate.validity_hours"),
    ({"maintenance": {"retention_dry_run": True}}, "maintenance.retention_dry_run"),
    ({"name_prefix": "x"}, "name_prefix"),
])
def test_one_spelling_per_key(raw, key):
    """Only the camelCase key is read: snake_case spellings are unknown settings, so the
    plain-text-secret guard (which looks at the camelCase key) cannot be walked around."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, stack="dev", now=NOW)
    assert f"private-registry:{key}: is not a known setting" in str(caught.value)


def test_nan_in_pulumi_config_json_is_refused_not_a_crash():
    """Config as Pulumi hands it over (JSON text): NaN and Infinity are not numbers, refused."""
    from components.settings import load_settings

    use_mocks(config={"maintenance": '{"retention": [{"repositories": "x", "keepYoungerThan": NaN}]}',
                      "certificate": '{"validityHours": Infinity}'})
    with pytest.raises(SettingsError) as caught:
        load_settings(now=NOW)
    assert "private-registry:maintenance" in str(caught.value)
    assert "private-registry:certificate" in str(caught.value)


# --- well-formed but wrong: refused with the setting and the fix (issue classes 3, 4, 5, 7) --


def _ca(*, days: float = 1000, start_days: float = -1, key=None, key_cert_sign: bool | None = None,
        ca: bool = True) -> tuple[str, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(3).not_valid_before(now + datetime.timedelta(days=start_days))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if key_cert_sign is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=True, encipher_only=False,
            decipher_only=False), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def _with_ca(pair: tuple[str, str], **more) -> dict:
    return {"caCertificatePem": pair[0], "caPrivateKeyPem": pair[1], **more}


def _semantic_cases() -> dict[str, tuple[dict, str, str]]:
    expired = _ca(days=-1, start_days=-10)
    cert, key = _ca()
    return {
        "IP in hosts": ({"hosts": ["10.0.0.1"]}, "hosts", "list it under 'ips'"),
        "IPv6 zone id in ips": ({"ips": ["fe80::1%eth0"]}, "ips", "zone id"),
        "zone id in bindAddress": ({"bindAddress": "fe80::1%eth0"}, "bindAddress", "zone id"),
        "trailing newline in host": ({"hosts": ["registry.example.com\n"]}, "hosts", "not a valid DNS host name"),
        "user name starting with '#'": ({"users": {"#alice": PASSWORD}}, "users", "'#'"),
        "control character in user name": ({"users": {"al\x07ice": PASSWORD}}, "users", "control characters"),
        "user named like a group": ({"users": {"@ops": PASSWORD}}, "users", "rename the user so it starts with"),
        "default user named like a group": ({"defaultUser": "@ops"}, "defaultUser", "rename the user so it starts with"),
        "group named with its '@'": ({"users": {"alice": PASSWORD}, "auth": {"groups": {"@ops": ["alice"]}}},
                                     "auth.groups", "name the group without it"),
        "group reference as a group member": (
            {"users": {"alice": PASSWORD}, "auth": {"groups": {"ops": ["alice"], "all": ["@ops"]}}}, "auth.groups",
            "groups hold users only"),
        "NUL in password": ({"users": {"alice": PASSWORD + "\x00"}}, "users", "NUL"),
        "duplicate trust kinds": ({"trust": [{"name": "t", "kinds": ["docker", "docker"]}]}, "trust[0].kinds",
                                  "name each kind once"),
        "two local targets": ({"trust": [{"name": "a"}, {"name": "b", "kinds": ["podman"]}]}, "trust[1].host",
                              "merge their kinds"),
        "privateKey on a local target": ({"trust": [{"name": "a", "privateKey": "k"}]}, "trust[0].privateKey",
                                         "would be ignored"),
        "registryHostPort set": ({"httpsPort": 5443, "registryHostPort": 5999}, "registryHostPort",
                                 "unset registryHostPort"),
        "unpinned image": ({"images": {"nginx": "nginx:latest"}}, "images.nginx", "append '@sha256:<digest>'"),
        "tcp port 99999": ({"docker": {"host": "tcp://h:99999"}}, "docker.host", "port 1-65535"),
        "sshOpts with garbage collection": (
            {"docker": {"host": "ssh://u@h", "sshOpts": ["-v"]},
             "maintenance": {"deletions": [{"repository": "a", "tags": ["v1"]}]}}, "docker.sshOpts", "~/.ssh/config"),
        "sshOpts without ssh": ({"docker": {"sshOpts": ["-v"]}}, "docker.sshOpts", "only apply to an ssh://"),
        "keepLast 0": ({"maintenance": {"retention": [{"repositories": "a", "keepLast": 0}]}},
                       "maintenance.retention[0].keepLast", "1 or more"),
        "keepLast true": ({"maintenance": {"retention": [{"repositories": "a", "keepLast": True}]}},
                          "maintenance.retention[0].keepLast", "whole number"),
        "empty keep pattern": ({"maintenance": {"retention": [{"repositories": "a", "keepPatterns": [""]}]}},
                               "maintenance.retention[0].keepPatterns", "is empty"),
        "empty glob": ({"maintenance": {"retention": [{"repositories": "", "keepLast": 1}]}},
                       "maintenance.retention[0].repositories", "glob"),
        "backreference pattern": ({"maintenance": {"retention": [{"repositories": "a", "keepPatterns": [r"(a)\1"]}]}},
                                  "maintenance.retention[0].keepPatterns", "RE2"),
        "99999999w": ({"maintenance": {"retention": [{"repositories": "a", "keepYoungerThan": "99999999w"}]}},
                      "maintenance.retention[0].keepYoungerThan", "like '36h'"),
        "repository with newline": ({"maintenance": {"deletions": [{"repository": "a\n", "tags": ["v1"]}]}},
                                    "maintenance.deletions[0].repository", "valid repository name"),
        "301-character repository": ({"maintenance": {"deletions": [{"repository": "a" * 301, "tags": ["v1"]}]}},
                                     "maintenance.deletions[0].repository", "at most 255"),
        "expired CA": (_with_ca(expired), "caCertificatePem", "not valid now"),
        "CA without keyCertSign": (_with_ca(_ca(key_cert_sign=False)), "caCertificatePem", "keyCertSign"),
        "CA expiring before the server certificate": (_with_ca(_ca(days=30)), "caCertificatePem", "lives longer"),
        "RSA-1024 CA": (_with_ca(_ca(key=rsa.generate_private_key(65537, 1024))), "caCertificatePem",
                        "at least 2048"),
        "CA on an unsupported curve": (_with_ca(_ca(key=ec.generate_private_key(ec.SECP256K1()))),
                                       "caCertificatePem", "P-256"),
        "private key inside the CA PEM": ({"caCertificatePem": cert + key, "caPrivateKeyPem": key},
                                          "caCertificatePem", "holds a private key"),
        "heredoc terminator in the CA PEM": ({"caCertificatePem": cert + "PRIVATE_REGISTRY_CA_PEM\n",
                                              "caPrivateKeyPem": key}, "caCertificatePem", "exactly one PEM"),
        "first host over 64 characters": ({"hosts": ["a" * 60 + ".example.com"]}, "hosts[0]", "at most 64"),
        "organization over 61 characters": ({"certificate": {"organization": "O" * 62}},
                                            "certificate.organization", "at most 64"),
        "caValidityHours past 9999": ({"certificate": {"caValidityHours": HOURS_MAX}}, "certificate.caValidityHours",
                                      "year 9999"),
    }


SEMANTIC = _semantic_cases()


@pytest.mark.parametrize("name", SEMANTIC)
def test_well_formed_but_wrong_values_are_refused_with_the_fix(name):
    """Each value that parses but cannot work (or does harm) is refused before any resource,
    naming the setting and the fix; no key material in the message."""
    raw, path, fix = SEMANTIC[name]
    now = NOW if name != "caValidityHours past 9999" else datetime.datetime(9950, 1, 1).timestamp()
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, stack="dev", secret_keys=set(SECRET_KEYS), now=now)
    message = str(caught.value)
    assert f"private-registry:{path}" in message and fix in message, message
    assert "PRIVATE KEY" not in message and KEY_BODY[:40] not in message


# --- any shape of value in any key: a settings error, never a traceback ------------------------

TOP_KEYS = ["hosts", "ips", "httpsPort", "bindAddress", "users", "defaultUser", "minPasswordLength",
            "generatedPasswordLength", "bcryptRounds", "certificate", "caCertificatePem", "caPrivateKeyPem", "images",
            "volume", "docker", "namePrefix", "registryHostPort", "trust", "maintenance"]
NESTED_PATHS = ["certificate.organization", "certificate.keyAlgorithm", "trust[0].kinds", "trust[1].host",
                "trust[1].port", "maintenance.deletions[0].tags", "maintenance.retention[0].keepPatterns",
                "maintenance.retention[0].keepYoungerThan", "maintenance.gc", "docker.sshOpts", "users.alice",
                "trust[1].privateKey", "trust[1].user", "trust[0]", "maintenance.deletions[0].digests",
                "maintenance.retention[0].keepLast", "maintenance.deletions", "maintenance.retention", "volume.name",
                "images.nginx", "docker.host", "certificate.validityHours"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


@hypothesis_settings(max_examples=400, derandomize=True, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(TOP_KEYS + NESTED_PATHS), value=json_values)
def test_any_shape_in_any_setting_is_a_settings_error_or_valid(path, value):
    """null, true/false, huge integers, NaN, infinities, text, lists and maps of those, in any
    top-level or nested setting: parse_settings returns valid settings or raises SettingsError."""
    try:
        parse_settings(_put(base_config(), path, value), stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    except SettingsError as exc:
        assert all(line.isprintable() for line in str(exc).split("\n")), repr(str(exc))


@hypothesis_settings(max_examples=150, derandomize=True, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, 10_000), replacement=st.sampled_from(list("AZaz09+/=\n-")), count=st.integers(1, 3))
def test_a_damaged_brought_ca_is_a_settings_error_or_the_same_ca(position, replacement, count):
    """The brought CA's PEM with characters of its base64 body replaced: refused naming
    caCertificatePem, or (where the damage leaves a parsable certificate) still only a
    certificate; never a traceback, never the key in the message."""
    lines = CA_CERT.splitlines()
    body = "".join(lines[1:-1])
    at = position % len(body)
    damaged = body[:at] + replacement * count + body[at + count:]
    pem = "\n".join([lines[0], *[damaged[i:i + 64] for i in range(0, len(damaged), 64)], lines[-1]]) + "\n"
    config = {**base_config(), "caCertificatePem": pem}
    try:
        settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    except SettingsError as exc:
        assert "private-registry:caCertificatePem" in str(exc)
        assert KEY_BODY[:40] not in str(exc)
        return
    x509.load_pem_x509_certificate(settings.ca_certificate_pem.encode())
    assert "PRIVATE KEY" not in settings.ca_certificate_pem


def test_corpus_through_pulumi_config_strings_gives_the_same_outcome():
    """The same hostile values as Pulumi hands them over (every value a string, objects and
    lists as JSON) are refused or accepted exactly as when parsed directly."""
    from components.settings import load_settings

    checked = Counter()
    for case in CORPUS[::7]:  # a seventh of the corpus: every setting, fragment and placement mixes
        config = case.config()
        use_mocks(config=config, secret_keys=SECRET_KEYS)
        try:
            via_pulumi = load_settings(now=NOW)
        except SettingsError:
            via_pulumi = None
        try:
            direct = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
        except SettingsError:
            direct = None
        assert (via_pulumi is None) == (direct is None), case
        assert via_pulumi is None or via_pulumi == direct, case
        checked[direct is None] += 1
    assert checked[True] > 300 and checked[False] > 30, checked


@pytest.mark.parametrize("config", [
    {"ips": ["fe80::1%eth0;location ~ / { proxy_pass http://registry:5000; } #"]},
    {"hosts": ["registry.example.com\n"]},
    {"bindAddress": "fe80::1%$(id)"},
    {"users": {"#alice": PASSWORD}},
    {"users": {"@ops": PASSWORD}},
], ids=["zone id injection", "trailing newline", "bindAddress zone id", "comment user", "user named like a group"])
def test_the_program_with_a_hostile_setting_registers_nothing(config):
    """The whole program with a hostile setting stops with SettingsError before any resource is
    registered: `pulumi preview` fails before anything is touched."""
    import runpy

    import pulumi

    from tests.support.program import MAIN

    monitor = use_mocks(config=config, secret_keys=SECRET_KEYS)
    with pytest.raises(SettingsError):
        pulumi.runtime.test(lambda: runpy.run_path(str(MAIN), run_name="__pulumi_main__"))()
    assert monitor.registered == []


# --- address forms: every way to write an address, through every renderer (issue 21) -----------

# (as configured, canonical): short, long, upper case and IPv4-mapped forms all read as one
# address, written as distribution's reference grammar reads it (hex digits and colons only).
ADDRESS_FORMS = {
    "IPv4": ("192.0.2.10", "192.0.2.10"),
    "IPv4 loopback": ("127.0.0.1", "127.0.0.1"),
    "IPv6 short": ("2001:db8::10", "2001:db8::10"),
    "IPv6 loopback short": ("::1", "::1"),
    "IPv6 long": ("2001:0DB8:0000:0000:0000:0000:0000:0010", "2001:db8::10"),
    "IPv6 loopback long": ("0:0:0:0:0:0:0:1", "::1"),
    "IPv6 two zero runs": ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    "IPv4-mapped dotted": ("::ffff:127.0.0.1", "::ffff:7f00:1"),
    "IPv4-mapped long": ("0000:0000:0000:0000:0000:FFFF:7F00:0001", "::ffff:7f00:1"),
}
ZONE_IDS = {
    "link-local with interface": ("fe80::1%eth0", "fe80::1"),
    "numeric zone": ("fe80::1%2", "fe80::1"),
    "IPv4 with a zone": ("10.0.0.1%eth0", "10.0.0.1"),
    "zone carrying nginx syntax": ("fe80::1%eth0;location/{}", "fe80::1"),
}


def _bracketed(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _address_stack(configured: str) -> tuple:
    """The whole program for a stack addressed by ``configured`` alone (no DNS name): token
    mode, trust of every kind on this host, a deletion rule; (settings, run)."""
    config = {"hosts": [], "ips": [configured], "httpsPort": 5443, "bindAddress": configured,
              "users": {"alice": PASSWORD}, "trust": [{"name": "here", "kinds": list(KINDS)}],
              "maintenance": {"deletions": [{"repository": "team/app", "tags": ["v1"]}], "gc": {"enabled": False}}}
    settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    from tests.support.program import run_program

    return settings, run_program(config, secret_keys=SECRET_KEYS)


@pytest.mark.parametrize("form", ADDRESS_FORMS)
def test_every_address_form_is_read_as_its_canonical_text(form):
    """ips, bindAddress and a trust target's host take every form of an address and keep one
    text for it: IPv6 in hex groups, compressed, lowercase; IPv4-mapped as ::ffff:hex."""
    configured, canonical = ADDRESS_FORMS[form]
    config = {**base_config(), "ips": [configured], "bindAddress": configured}
    config["trust"][1]["host"] = configured
    settings = parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    assert settings.ips == (canonical,)
    assert settings.bind_address == canonical and settings.trust[1].host == canonical
    assert grammar.parse_ip(canonical) == canonical


@pytest.mark.parametrize("form", ADDRESS_FORMS)
def test_every_address_form_reaches_each_renderer_in_the_form_its_reader_expects(form, tmp_path):
    """One stack per form, addressed by the IP alone, through the whole program: nginx's
    server_name in brackets for IPv6 (nginx compares $host, which keeps them); the certificate
    request and the certificate with an IP subjectAltName, no DNS name; the port bound on the bare
    address; registryAddress, loginCommand, the token realm and service, the maintenance URL and
    the trust scripts' certs.d folders (Docker, containerd, podman) and hosts.toml all
    ``[v6]:port``, hex digits and colons only between the brackets (distribution's reference
    grammar, which Docker, containerd and podman parse names with)."""
    import ipaddress
    import shlex
    import subprocess
    import tomllib

    import yaml

    from tests.support.hostile import server_names

    configured, canonical = ADDRESS_FORMS[form]
    settings, run = _address_stack(configured)
    address = f"{_bracketed(canonical)}:5443"
    assert settings.address == address == run.exports["registryAddress"]
    if ":" in canonical:
        assert re.fullmatch(r"\[[0-9a-f:]+\]:5443", address), address

    containers = {r.name: r for r in run.monitor.by_type("docker:index/container:Container")}
    proxy = next(r for n, r in containers.items() if n.endswith("proxy-container"))
    uploads = {u["file"]: u["content"] for u in proxy.plain_inputs["uploads"]}
    conf = next(c for p, c in uploads.items() if p.endswith("nginx.conf"))
    assert server_names(conf) == [[""], [_bracketed(canonical)]]
    assert [p["ip"] for p in proxy.plain_inputs["ports"]] == [canonical]

    (csr,) = run.monitor.by_type("tls:index/certRequest:CertRequest")
    assert csr.plain_inputs["ipAddresses"] == [canonical] and not csr.plain_inputs.get("dnsNames")
    cert = x509.load_pem_x509_certificate(next(c for p, c in uploads.items() if p.endswith(".crt")).encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(canonical)]
    assert sans.get_values_for_type(x509.DNSName) == []

    registry = next(r for n, r in containers.items() if n.endswith("registry-container"))
    config_yml = yaml.safe_load(next(u["content"] for u in registry.plain_inputs["uploads"]
                                     if u["file"].endswith("config.yml")))
    assert config_yml["auth"]["token"]["realm"] == f"https://{address}/token"
    assert config_yml["auth"]["token"]["service"] == address
    token = next(r for n, r in containers.items() if n.endswith("token-container"))
    assert f"TOKEN_SERVICE={address}" in token.plain_inputs["envs"]
    (deletion,) = [r for r in run.monitor.registered if r.type.endswith("ImageDeletion")]
    assert deletion.plain_inputs["registryUrl"] == f"https://{address}"

    login = shlex.split(run.exports["loginCommand"].rsplit("|", 1)[1])
    assert login == ["docker", "login", address, "--username", "alice", "--password-stdin"]

    (command,) = run.monitor.by_type("command:local:Command")
    (tmp_path / "usr/local/share/ca-certificates").mkdir(parents=True)  # the system store, as Debian has it
    installed = subprocess.run(["sh", "-c", command.plain_inputs["create"]], capture_output=True, text=True,
                               env={"TRUST_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=30)
    assert installed.returncode == 0, installed.stderr
    for folder in ("docker", "containers", "containerd"):
        assert (tmp_path / "etc" / folder / "certs.d" / address / "ca.crt").is_file(), folder
    hosts_toml = tomllib.loads((tmp_path / "etc/containerd/certs.d" / address / "hosts.toml").read_text())
    assert hosts_toml == {"server": f"https://{address}", "capabilities": ["pull", "resolve", "push"],
                          "ca": f"/etc/containerd/certs.d/{address}/ca.crt", "host": {}}
    assert sorted(p.name for p in (tmp_path / "etc/docker/certs.d").iterdir()) == [address]
    assert len(list((tmp_path / "usr/local/share/ca-certificates").glob("private-registry-*.crt"))) == 1


@pytest.mark.parametrize("zone", ZONE_IDS)
@pytest.mark.parametrize("path", ["ips[0]", "bindAddress"])
def test_zone_ids_are_refused_naming_the_setting_and_the_address_to_write(zone, path):
    """An address with a zone id (an interface of one host) is refused in ips and bindAddress,
    naming the setting and the address to write instead."""
    value, bare = ZONE_IDS[zone]
    with pytest.raises(SettingsError) as caught:
        parse_settings(_put(base_config(), path, value), stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    message = str(caught.value)
    assert f"private-registry:{path}: " in message and "zone id" in message, message
    assert f"write {bare!r}" in message, message


@pytest.mark.parametrize("zone", ZONE_IDS)
def test_zone_ids_are_refused_in_trust_hosts(zone):
    """A trust target's host with a zone id is refused naming trust[i].host."""
    config = base_config()
    config["trust"][1]["host"] = ZONE_IDS[zone][0]
    with pytest.raises(SettingsError, match=r"private-registry:trust\[1\]\.host: .*no zone id"):
        parse_settings(config, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)


@pytest.mark.parametrize("value", ["[::1]", "[2001:db8::10]"])
def test_bracketed_addresses_are_refused_with_the_bare_form(value):
    """An IPv6 address written in brackets in ips is refused, naming the bare form to write."""
    with pytest.raises(SettingsError) as caught:
        parse_settings({**base_config(), "ips": [value]}, stack="dev", secret_keys=set(SECRET_KEYS), now=NOW)
    assert "private-registry:ips[0]: " in str(caught.value) and f"({value[1:-1]!r})" in str(caught.value)


@pytest.mark.parametrize("name", ["::1", "2001:db8::10", "::ffff:7f00:1"])
def test_the_nginx_renderer_brackets_ipv6_server_names_itself(name):
    """render_nginx_conf writes an IPv6 server name as [v6] on its own (not relying on settings),
    and refuses a non-canonical or bracketed one."""
    from components.render.nginx import NginxOptions, render_nginx_conf
    from tests.support.hostile import server_names

    conf = render_nginx_conf(NginxOptions(server_names=("localhost", name)))
    assert server_names(conf)[-1] == ["localhost", f"[{name}]"]
    for wrong in (f"[{name}]", name.upper() if name.upper() != name else "0:0:0:0:0:0:0:1"):
        with pytest.raises(ValueError, match="not a DNS name or an IP address"):
            render_nginx_conf(NginxOptions(server_names=("localhost", wrong)))


@hypothesis_settings(max_examples=300, derandomize=True, deadline=None)
@given(number=st.integers(0, 2**128 - 1), mapped=st.booleans())
def test_the_canonical_ipv6_text_is_hex_only_and_reads_back_as_the_same_address(number, mapped):
    """Any IPv6 address (half of them IPv4-mapped): its canonical text is hex groups and
    colons, reads back as the same address, is its own canonical text, and is Python's
    compressed form wherever that form is hex only (every address but IPv4-mapped ones)."""
    import ipaddress

    address = ipaddress.IPv6Address((0xFFFF << 32) | (number & 0xFFFFFFFF) if mapped else number)
    text = grammar.parse_ip(address.exploded)
    assert re.fullmatch(r"[0-9a-f:]+", text) and ipaddress.IPv6Address(text) == address
    assert grammar.parse_ip(text) == text and grammar.parse_ip(text.upper()) == text
    if address.ipv4_mapped is None:
        assert text == address.compressed


# --- every refusal names the deepest setting path (issue 21) -------------------------------------

from tests.support.hostile import setting_nodes, put_at  # noqa: E402

NODES = setting_nodes()
SCALE_SECRETS = set(SECRET_KEYS) | {"storage", "redis"}


def _lines_at(message: str, path: str) -> list[str]:
    return [line for line in message.split("\n  - ")[1:] if line.startswith(f"private-registry:{path}: ")]


def test_the_settings_tree_is_walked_from_the_models():
    """Control: the walk over the pydantic models finds every kind of node, nested lists of
    objects included (the cases below are generated from it, not listed by hand)."""
    paths = {n.path for n in NODES}
    assert {"maintenance.retention[0].keepYoungerThan", "auth.rules[0].pull[0]", "auth.groups.k1[0]",
            "storage.s3.chunkSizeMib", "trust[0].kinds[0]", "users.k1"} <= paths
    assert len(NODES) == 133 and sum(n.kind in ("object", "map") for n in NODES) == 21


@pytest.mark.parametrize("shape", ["NaN", "wrong shape"])
@pytest.mark.parametrize("node", NODES, ids=lambda n: n.path)
def test_every_wrongly_typed_setting_is_refused_at_its_own_path_with_the_fix(node, shape):
    """NaN, or a value of the wrong shape (a map where a value or list belongs, a list where a
    map belongs), at any depth of the settings: refused by a line naming exactly that setting's
    path (camelCase keys, list indexes) with a fix, never only an enclosing one."""
    wrong = math.nan if shape == "NaN" else ([math.nan] if node.kind in ("object", "map") else {"x": math.nan})
    config = put_at(base_config(), node.keys, wrong)
    with pytest.raises(SettingsError) as caught:
        parse_settings(config, stack="dev", secret_keys=SCALE_SECRETS, now=NOW)
    lines = _lines_at(str(caught.value), node.path)
    assert lines and all("fix: " in line for line in lines), str(caught.value)


@pytest.mark.parametrize("node", [n for n in NODES if len(n.keys) > 1], ids=lambda n: n.path)
def test_nan_inside_pulumi_json_text_is_refused_at_its_own_path(node):
    """The same NaN as Pulumi hands it over, inside a key's JSON text (e.g.
    maintenance.retention[0].keepYoungerThan): refused at its own path, not as 'maintenance:
    Input should be a dictionary'."""
    from components.settings import load_settings

    use_mocks(config=put_at(base_config(), node.keys, math.nan), secret_keys=SCALE_SECRETS)
    with pytest.raises(SettingsError) as caught:
        load_settings(now=NOW)
    assert _lines_at(str(caught.value), node.path), str(caught.value)
    assert "Input should be a dictionary" not in str(caught.value)


# Words by which a grammar's refusal says what to write instead.
_SAYS_WHAT_TO_WRITE = ("must ", "use ", "like ", "fix: ", "remove", "set ", "write ", "of the form", "is not a ")


@pytest.mark.parametrize("node", [n for n in NODES if n.kind == "value"], ids=lambda n: n.path)
def test_every_value_outside_its_grammar_is_refused_at_its_own_path(node):
    """Text no setting takes (a line break, ';', braces) in every value setting at any depth:
    refused by a line naming exactly that path, which says what to write."""
    config = put_at(base_config(), node.keys, "x\n;{}")
    with pytest.raises(SettingsError) as caught:
        parse_settings(config, stack="dev", secret_keys=SCALE_SECRETS, now=NOW)
    lines = _lines_at(str(caught.value), node.path)
    assert lines and all(any(w in line for w in _SAYS_WHAT_TO_WRITE) for line in lines), str(caught.value)
    assert "x\n;{}" not in str(caught.value)  # shown escaped, if at all


# --- duplicate keys in JSON text (issue 21) ------------------------------------------------------

MAPPINGS = [n for n in NODES if n.kind in ("object", "map")]
OTHER_PASSWORD = "Another-password-entirely-0123"


def _with_repeated_key(node) -> tuple[dict, str, list[str]]:
    """The base config as Pulumi hands it over, with the top-level key of ``node`` as JSON text
    in which the mapping at ``node`` names one key twice; (config, key, the two values' texts)."""
    import json

    config = put_at(base_config(), node.keys, {}) if len(node.keys) > 1 or node.keys[0] not in base_config() \
        else base_config()
    target: object = config
    for key in node.keys:
        target = target[key]
    if node.kind == "map":
        key = "alice" if node.path == "users" else "ops"
        values = [PASSWORD, OTHER_PASSWORD] if node.path == "users" else [["alice"], []]
    else:
        key = next(iter(node.model.__pydantic_fields__.values())).alias
        values = [target.get(key, "x"), "y"]
    target.pop(key, None)
    target["\x00repeat"] = 0
    top = node.keys[0]
    pairs = ", ".join(f"{json.dumps(key)}: {json.dumps(v)}" for v in values)
    text = json.dumps(config[top]).replace('"\\u0000repeat": 0', pairs)
    assert text.count(json.dumps(key) + ":") >= 2
    return {**config, top: text}, key, [json.dumps(v) for v in values]


@pytest.mark.parametrize("node", MAPPINGS, ids=lambda n: n.path)
def test_a_key_given_twice_in_any_mapping_is_refused_naming_the_setting_and_the_key(node):
    """Every mapping setting (each settings object at any depth, users, auth.groups) as JSON
    text naming one key twice: refused at preview, naming the mapping's path and the key, never
    the values (a password); json.loads alone would keep the last one silently."""
    from components.settings import load_settings

    config, key, values = _with_repeated_key(node)
    use_mocks(config=config, secret_keys=SCALE_SECRETS)
    with pytest.raises(SettingsError) as caught:
        load_settings(now=NOW)
    message = str(caught.value)
    lines = [line for line in _lines_at(message, node.path) if f"names {key!r} more than once" in line]
    assert lines and all("fix: give each key once" in line for line in lines), message
    assert PASSWORD not in message and OTHER_PASSWORD not in message


def test_a_user_given_twice_is_refused_and_once_is_read():
    """Control for the duplicate check: the users map with alice once is read with her password;
    with alice twice (two passwords) it is refused naming users and 'alice'."""
    from components.settings import load_settings

    use_mocks(config={"users": f'{{"alice": "{PASSWORD}"}}'}, secret_keys=["users"])
    assert load_settings(now=NOW).users["alice"].get_secret_value() == PASSWORD
    use_mocks(config={"users": f'{{"alice": "{PASSWORD}", "alice": "{OTHER_PASSWORD}"}}'}, secret_keys=["users"])
    with pytest.raises(SettingsError, match=r"private-registry:users: names 'alice' more than once"):
        load_settings(now=NOW)


def test_the_readme_gives_the_counts_of_these_generated_cases():
    """The README's 'Hostile settings' row quotes exactly the numbers of cases above: address
    forms, zone ids, mappings, settings nodes (nested ones and values among them)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    nested = sum(len(n.keys) > 1 for n in NODES)
    values = sum(n.kind == "value" for n in NODES)
    for phrase in (f"**{len(ADDRESS_FORMS)} address forms**", f"**{len(ZONE_IDS)} zone ids**",
                   f"**{len(MAPPINGS)} mappings**", f"**{len(NODES)} settings nodes** ({2 * len(NODES)})",
                   f"at the {nested} nested ones", f"at the {values} values"):
        assert phrase in readme, phrase
