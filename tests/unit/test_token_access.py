"""Access rules (token_service/access.py): globs, rights per principal, grants per scope."""

import pytest
from hypothesis import given, settings, strategies as st

from token_service.access import Policy, PolicyError, Scope, glob_match, open_policy, parse_scopes

POLICY = {
    "version": 1,
    "groups": {"ops": ["alice"], "nodes": ["node1", "node2"]},
    "admins": ["@ops"],
    "rules": [
        {"repositories": ["ci/**"], "push": ["ci"]},
        {"repositories": ["**"], "pull": ["@nodes"]},
        {"repositories": ["team/*/cache"], "delete": ["bob"]},
    ],
    "anonymous_pull": ["public/**"],
    "catalog": ["auditor"],
}


@pytest.mark.parametrize(
    "glob,name,expected",
    [
        ("**", "a", True), ("**", "a/b/c", True),
        ("team/**", "team", False), ("team/**", "team/a", True), ("team/**", "team/a/b", True),
        ("team/**", "teams/a", False), ("team/*", "team/a/b", False), ("team/*", "team/a", True),
        ("a/**/z", "a/z", False), ("a/**/z", "a/b/z", True), ("a/**/z", "a/b/c/z", True),
        ("app-*", "app-x", True), ("app-*", "app-", True), ("app-*", "ap", False),
        ("*-prod", "web-prod", True), ("*-prod", "web-prod/x", False), ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy", False), ("exact", "exact", True), ("exact", "exact/x", False),
    ],
)
def test_glob_match(glob, name, expected):
    """``**`` spans one or more whole segments, ``*`` stays inside one segment, the rest is literal."""
    assert glob_match(glob, name) is expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1, max_size=6))
def test_double_star_matches_every_name(segments):
    """``**`` matches every repository name; ``x/**`` matches exactly the names below ``x``."""
    name = "/".join(segments)
    assert glob_match("**", name)
    assert glob_match("a/**", name) is (len(segments) > 1 and segments[0] == "a")


def test_rights_per_principal():
    """Rights are the union of matching rules; push brings pull; delete stands alone; admins hold all."""
    policy = Policy.from_document(POLICY)
    assert policy.repository_rights("ci", "ci/app") == {"pull", "push"}
    assert policy.repository_rights("ci", "prod/app") == set()
    assert policy.repository_rights("node1", "prod/app") == {"pull"}
    assert policy.repository_rights("node2", "ci/app") == {"pull"}
    assert policy.repository_rights("bob", "team/x/cache") == {"delete"}
    assert policy.repository_rights("bob", "team/x/y/cache") == set()
    assert policy.repository_rights("alice", "anything/at/all") == {"pull", "push", "delete"}
    assert policy.repository_rights(None, "public/base") == {"pull"}
    assert policy.repository_rights(None, "prod/app") == set()
    assert policy.repository_rights("stranger", "public/base") == set()


def test_catalog():
    """The catalog goes to admins and the listed principals only, never to anonymous clients."""
    policy = Policy.from_document(POLICY)
    assert [policy.catalog_allowed(u) for u in ("alice", "auditor", "ci", None)] == [True, True, False, False]
    assert Policy.from_document(open_policy()).catalog_allowed("anyone")
    assert not Policy.from_document(open_policy()).catalog_allowed(None)


def test_grant_intersects_and_never_widens():
    """A grant holds only requested actions the user has; a requested '*' gets the rights held, not '*'."""
    policy = Policy.from_document(POLICY)
    scopes = parse_scopes(["repository:ci/app:pull,push,delete", "repository:prod/app:*",
                           "registry:catalog:*", "repository:ci/app:pull"])
    assert policy.grant("ci", scopes) == [{"type": "repository", "name": "ci/app", "actions": ["pull", "push"]}]
    assert policy.grant("node1", scopes) == [
        {"type": "repository", "name": "ci/app", "actions": ["pull"]},
        {"type": "repository", "name": "prod/app", "actions": ["pull"]},
    ]
    assert {"type": "registry", "name": "catalog", "actions": ["*"]} in policy.grant("alice", scopes)
    assert policy.grant(None, scopes) == []
    assert policy.grant("alice", parse_scopes(["registry:catalog:pull"])) == []


def test_open_policy_gives_every_user_every_right():
    """With no rules every authenticated user holds every right (the behaviour before access rules)."""
    policy = Policy.from_document(open_policy())
    assert policy.repository_rights("anyone", "x/y") == {"pull", "push", "delete"}
    assert policy.repository_rights(None, "x/y") == set()


def test_parse_scopes():
    """Scopes split on spaces, names may hold ':' (a host:port), classes are dropped, junk ignored."""
    assert parse_scopes(["repository:a/b:pull,push registry:catalog:*", "repository(plugin):p:pull"]) == [
        Scope("repository", "a/b", ("pull", "push")),
        Scope("registry", "catalog", ("*",)),
        Scope("repository", "p", ("pull",)),
    ]
    assert parse_scopes(["localhost:5000/x:pull"]) == [Scope("localhost", "5000/x", ("pull",))]
    assert parse_scopes(["repository:x", "", "repository::pull", "repository:\x00:pull", "r:" + "x" * 600 + ":pull"]) == []
    assert len(parse_scopes(["repository:a:pull " * 100])) == 32


@pytest.mark.parametrize(
    "doc,message",
    [
        ([], "JSON object"),
        ({"version": 2}, "version"),
        ({"version": 1, "extra": 1}, "unknown policy fields: extra"),
        ({"version": 1, "rules": [{"repositories": "x"}]}, "rules[0].repositories"),
        ({"version": 1, "rules": [{"repositories": ["x"], "pull": ["@ghost"]}]}, "group 'ghost'"),
        ({"version": 1, "rules": [{"repositories": ["x"], "write": []}]}, "rules[0]"),
        ({"version": 1, "admins": "alice"}, "admins"),
    ],
)
def test_bad_policy_refused(doc, message):
    """A malformed policy is refused with an error naming the field."""
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_document(doc)
