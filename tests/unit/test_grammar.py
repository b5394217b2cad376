"""components.grammar: the one grammar every setting and provider validates with."""

import pytest

from components import grammar as g

HOSTILE_SUFFIXES = ["\n", "\r", "\x00", " ", ";", "$(id)", "`id`", "'", '"', "{", "}", "#", "%eth0", "\u00fc", "\u200b"]


@pytest.mark.parametrize("suffix", HOSTILE_SUFFIXES)
def test_every_kind_refuses_hostile_characters(suffix):
    """A valid value with a control character, quote, shell or nginx metacharacter appended is refused by every kind."""
    assert not g.is_repository("team/app" + suffix)
    assert not g.is_tag("v1" + suffix)
    assert not g.is_digest("sha256:" + "a" * 64 + suffix)
    assert not g.is_image_reference("registry:2.8.3" + suffix)
    assert not g.is_dns_name("registry.example.com" + suffix)
    assert not g.is_docker_name("registry-dev" + suffix)
    assert not g.is_user_name("alice" + suffix)
    assert not g.is_docker_host("unix:///var/run/docker.sock" + suffix)
    assert g.parse_ip("127.0.0.1" + suffix) is None
    assert g.parse_duration_hours("30d" + suffix) is None


def test_reference_grammar_follows_distribution():
    """Repository, tag and digest follow distribution's reference grammar, ASCII only, with its length limits."""
    assert g.is_repository("team/app") and g.is_repository("a/b__c/d-e.f")
    assert not g.is_repository("Team/app") and not g.is_repository("a-") and not g.is_repository("a" * 256)
    assert g.is_tag("a" * 128) and not g.is_tag("a" * 129)
    assert not g.is_tag("\u00fc1") and not g.is_tag(".x") and not g.is_tag("-x")
    assert g.is_digest("sha256:" + "0" * 64) and not g.is_digest("sha256:" + "A" * 64)


def test_image_references():
    """Image references take a domain with a port in range, a tag and a digest; pinned means a digest."""
    pinned = "docker.io/library/registry:2.8.3@sha256:" + "a" * 64
    assert g.is_pinned_image_reference(pinned)
    assert g.is_image_reference("nginx:latest") and not g.is_pinned_image_reference("nginx:latest")
    assert g.is_image_reference("localhost:5000/x:1")
    assert not g.is_image_reference("localhost:99999/x")


def test_image_reference_parts():
    """An image reference parses into name (with its domain), tag and digest, each None when
    absent; what is not a reference parses to None."""
    digest = "sha256:" + "b" * 64
    assert g.parse_image_reference(f"localhost:5000/team/registry:3.1.2@{digest}") == g.ImageReference(
        "localhost:5000/team/registry", "3.1.2", digest)
    assert g.parse_image_reference("registry") == ("registry", None, None)
    assert g.parse_image_reference(f"registry@{digest}") == ("registry", None, digest)
    assert g.parse_image_reference("localhost:5000/x") == ("localhost:5000/x", None, None)
    for bad in ("Registry:3", "registry:3@sha256:abc", "", None, "a" * 256):
        assert g.parse_image_reference(bad) is None


def test_hosts_ips_and_engines():
    """DNS names exclude IP addresses; IPs exclude zone ids; Docker hosts take a port in range."""
    assert g.is_dns_name("localhost") and g.is_dns_name("reg.example.com")
    assert not g.is_dns_name("1.2.3.4") and not g.is_dns_name("a..b") and not g.is_dns_name("-a.com")
    assert g.parse_ip("::1") == "::1" and g.parse_ip("fe80::1%eth0") is None
    assert g.is_docker_host("tcp://h:2376") and g.is_docker_host("ssh://u@h:22")
    assert not g.is_docker_host("tcp://h:99999") and not g.is_docker_host("tcp://h:0")


def test_durations():
    """Durations are a bounded amount and a unit h, d or w."""
    assert g.parse_duration_hours("2w") == 336.0 and g.parse_duration_hours("1.5h") == 1.5
    assert g.parse_duration_hours("99999999w") is None and g.parse_duration_hours(30) is None


def test_tag_patterns_are_linear_time_re2():
    """Keep patterns compile with RE2: backreferences, look-around and empty patterns are refused."""
    import time

    pattern = g.compile_tag_pattern("(a+)+$")
    started = time.monotonic()
    assert pattern.fullmatch("a" * 5000 + "!") is None
    assert time.monotonic() - started < 0.5
    assert g.compile_tag_pattern("v[0-9]+").fullmatch("v12")
    for bad in ["", "(a)\\1", "(?=x)", "a" * 257, "a\nb"]:
        with pytest.raises(g.PatternError):
            g.compile_tag_pattern(bad)


def test_attachment_tags_name_their_subject_and_kind_and_nothing_else_matches():
    """cosign's digest tags and the referrers tag schema's give their subject digest and kind;
    tags that merely look alike (wrong length, upper case, other suffix or algorithm) are images."""
    hexes = "ab" * 32
    assert g.parse_attachment_tag(f"sha256-{hexes}.sig") == g.Attachment(f"sha256:{hexes}", "sig")
    assert g.parse_attachment_tag(f"sha256-{hexes}.att") == (f"sha256:{hexes}", "att")
    assert g.parse_attachment_tag(f"sha256-{hexes}.sbom") == (f"sha256:{hexes}", "sbom")
    assert g.parse_attachment_tag(f"sha256-{hexes}") == (f"sha256:{hexes}", "referrers")
    for tag in (f"sha256-{hexes[:-1]}.sig", f"sha256-{hexes.upper()}.sig", f"sha256-{hexes}.sigx",
                f"sha256-{hexes}.txt", f"sha512-{hexes}.sig", f"v1-sha256-{hexes}", "latest", None, 3):
        assert g.parse_attachment_tag(tag) is None, tag


def test_the_token_service_checks_names_with_this_grammar():
    """The repository and user name patterns the token service checks are the very objects this
    grammar exports (defined once, in token_service/names.py, which the token image ships and
    its Dockerfile copies), not a copy that could drift."""
    from pathlib import Path

    from token_service import access, names

    assert g.REPOSITORY_RE is names.REPOSITORY_RE and g.is_repository is names.is_repository
    assert g.USER_NAME_RE is names.USER_NAME_RE and g.is_user_name is names.is_user_name
    assert access.is_repository is g.is_repository
    dockerfile = (Path(__file__).resolve().parents[2] / "token_service" / "Dockerfile").read_text()
    copied = next(line for line in dockerfile.splitlines() if line.endswith("/app/token_service/")).split()[1:-1]
    modules = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "token_service").glob("*.py"))
    assert sorted(copied) == modules


def test_a_user_name_never_starts_with_the_group_prefix():
    """'@' starts a group reference in access rules, so no user name starts with it; '@' later
    in a name (an e-mail address) is allowed."""
    assert g.GROUP_PREFIX == "@"
    assert not g.is_user_name("@ops") and not g.is_user_name("@") and not g.is_user_name("@@ops")
    assert g.is_user_name("ops@example.com") and g.is_user_name("ops@")
