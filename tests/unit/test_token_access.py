"""Access rules (token_service/access.py): globs, rights per principal, grants per scope."""

import pytest
from hypothesis import given, settings, strategies as st

from components import grammar
from token_service.access import ACTIONS, Policy, PolicyError, Scope, glob_match, open_policy, parse_scopes

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
        ("app-*", "app-x", True), ("app-*", "app--x", True), ("app-*", "ap", False),
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
    assert policy.repository_rights("stranger", "public/base") == {"pull"}
    assert policy.repository_rights("stranger", "prod/app") == set()


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
    """Scopes split on spaces, classes are dropped, junk ignored; the name is everything between
    the type and the last ':', so a name holding ':' (a tag, a host:port) is not a repository
    and is dropped."""
    assert parse_scopes(["repository:a/b:pull,push registry:catalog:*", "repository(plugin):p:pull"]) == [
        Scope("repository", "a/b", ("pull", "push")),
        Scope("registry", "catalog", ("*",)),
        Scope("repository", "p", ("pull",)),
    ]
    assert parse_scopes(["localhost:5000/x:pull"]) == [Scope("localhost", "5000/x", ("pull",))]
    assert parse_scopes(["repository:localhost:5000/x:pull", "repository:victim/app:latest:pull"]) == []
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


# --- names in tokens: only names of the repository grammar, never an empty segment -------------

# Scopes a client may send whose name (or type) is outside what the registry's grammar accepts.
# Each is asked for by a user who holds every right on every repository ('**').
HOSTILE_SCOPES = [
    "repository:victim/../secret/app:pull", "repository:team/:pull", "repository:victim/app:latest:pull",
    "repository:team//app:pull", "repository:/team/app:pull", "repository:team/app/:pull", "repository:./app:pull",
    "repository:app/.:pull", "repository:..:pull", "repository:Team/app:pull", "repository:-app:pull",
    "repository:app-:pull", "repository:app_:pull", "repository:a%2fb:pull", "repository:a\\b:pull",
    f"repository:app@sha256:{'a' * 64}:pull", "repository:localhost:5000/app:pull", "repository:app*:pull",
    "repository:**:pull", "repository:app\u00e9:pull", "repository:" + "a" * 256 + ":pull",
    "repository:" + "/".join(["a" * 127, "b" * 128]) + ":pull", "repository(:app:pull", "repository(plugin:app:pull",
    "repository()app:pull", "Repository:app:pull", "repository(Plugin):app:pull", "registry:catalog/x:*",
    "registry::*", "registry:other:*",
]
EVERY_RIGHT = {"version": 1, "groups": {}, "admins": ["root"], "anonymous_pull": ["**"], "catalog": [],
               "rules": [{"repositories": ["**", "team/*", "team/**", "*"], "pull": ["*"], "push": ["*"], "delete": ["*"]}]}


@pytest.mark.parametrize("scope", HOSTILE_SCOPES)
def test_a_name_outside_the_grammar_is_never_granted(scope):
    """A scope naming something the registry's repository grammar refuses (a '..' or '.'
    segment, an empty segment as in 'team/', a tag, a domain, upper case, a glob, over 255
    characters) or a malformed type is left out: no one, not an admin holding '**', not a user
    of a '*' rule, not an anonymous client under an anonymous '**', gets it in a token; the
    other scopes of the same request are still granted."""
    policy = Policy.from_document(EVERY_RIGHT)
    valid = "repository:team/app:pull"
    for user in ("root", "someone", None):
        assert policy.grant(user, parse_scopes([scope])) == []
        assert policy.grant(user, parse_scopes([f"{scope} {valid}"])) == [
            {"type": "repository", "name": "team/app", "actions": ["pull"]}]


@pytest.mark.parametrize("glob,name", [
    ("team/*", "team/"), ("team/**", "team/"), ("*", ""), ("**", ""), ("team/*/x", "team//x"),
    ("team/**/x", "team//x"), ("*/app", "/app"), ("**", "/"), ("team/*", "team/a/"), ("**", "a//b"),
])
def test_a_glob_segment_never_matches_an_empty_one(glob, name):
    """'*' and '**' never stand for an empty segment: 'team/*' does not match 'team/', nor
    '**' an empty name or one with '//'; rights on such names are none."""
    assert glob_match(glob, name) is False
    assert Policy.from_document(EVERY_RIGHT).repository_rights("root", name) == set()


scope_names = st.one_of(
    st.text(alphabet="ab09._-/:@*%\\A \x00\u00e9", max_size=24),
    st.lists(st.sampled_from(["a", "b0", "a.b", "a__b", "a-b", "", ".", "..", "A", "a:b", "a-", "_a"]),
             min_size=1, max_size=5).map("/".join),
)
scope_strings = st.builds(
    lambda kind, name, actions: f"{kind}:{name}:{actions}",
    st.sampled_from(["repository", "repository(plugin)", "registry", "repository(", "REPOSITORY", "x"]),
    st.one_of(scope_names, st.just("catalog")),
    st.sampled_from(["pull", "push", "delete", "*", "pull,push", "pull,push,delete", "", "pull,,*", "admin"]),
)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(scopes=st.lists(scope_strings, min_size=1, max_size=6), user=st.sampled_from(["root", "someone", None]))
def test_property_every_granted_name_is_of_the_grammar(scopes, user):
    """Random scope requests (names from an alphabet rich in '/', '.', ':', '@', '*', upper case,
    NUL; segments that are empty, '.' or '..') against a policy granting everything: every name
    in the access claim is a repository of components/grammar.py (or the registry's catalog),
    its actions are a subset of what was asked and of the rights held, never '*' on a
    repository; and every requested scope of the grammar is granted."""
    policy = Policy.from_document(EVERY_RIGHT)
    access = policy.grant(user, parse_scopes([" ".join(scopes)]))
    for entry in access:
        if entry["type"] == "repository":
            assert grammar.is_repository(entry["name"]), entry
            assert set(entry["actions"]) <= policy.repository_rights(user, entry["name"]) <= set(ACTIONS)
        else:
            assert entry == {"type": "registry", "name": "catalog", "actions": ["*"]} and user == "root"
    granted = {entry["name"] for entry in access if entry["type"] == "repository"}
    for item in scopes:
        kind, _, rest = item.partition(":")
        name, _, actions = rest.rpartition(":")
        wanted = {a for a in actions.split(",") if a in ACTIONS or a == "*"}
        if user is None:
            wanted &= {"pull", "*"}  # anonymous clients hold pull only
        if kind in ("repository", "repository(plugin)") and grammar.is_repository(name) and wanted:
            assert name in granted, (item, access)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(name=scope_names, user=st.sampled_from(["root", "someone", None]))
def test_property_the_rule_engine_holds_no_right_outside_the_grammar(name, user):
    """Scopes built directly (not parsed) with any name: the rule engine grants and holds rights
    only on names of the repository grammar, whoever asks and whatever the rules say."""
    policy = Policy.from_document(EVERY_RIGHT)
    access = policy.grant(user, [Scope("repository", name, ("pull", "push", "delete", "*"))])
    if grammar.is_repository(name):
        assert [entry["name"] for entry in access] == [name]
    else:
        assert access == [] and policy.repository_rights(user, name) == set()


@settings(max_examples=400, deadline=None, derandomize=True)
@given(segments=st.lists(st.sampled_from(["a", "b", "ab", "", "a-b"]), min_size=1, max_size=5),
       glob=st.lists(st.sampled_from(["*", "**", "a", "a*", "*b", "a-*"]), min_size=1, max_size=4).map("/".join))
def test_property_globs_match_only_names_of_the_grammar(segments, glob):
    """Any glob against names built of segments some of which are empty or end in a separator:
    a match only ever on a name of the grammar, so no glob opens an empty segment."""
    name = "/".join(segments)
    if glob_match(glob, name):
        assert grammar.is_repository(name), (glob, name)


# --- user names and group references never share a namespace --------------------------------

NOT_USERS = ["@ops", "@nodes", "@", "@@ops", "@*", "*", "", "a:b", "#ops", "ops\n", "x" * 65]


@pytest.mark.parametrize("user", NOT_USERS, ids=repr)
def test_a_name_outside_the_user_grammar_holds_only_what_anonymous_holds(user):
    """A user literally named '@ops' (or '@nodes', '*', a name with ':' ...) that reaches the
    rule engine, say from a stale htpasswd, is no user: it never holds group ops's admin
    rights, pull from '@nodes' rules, or the catalog; only the anonymous pull of public/**.
    Before the principals were kept apart by kind, '@ops' was an admin."""
    policy = Policy.from_document(POLICY)
    for repository in ("prod/app", "ci/app", "team/x/cache", "public/base"):
        assert policy.repository_rights(user, repository) == policy.repository_rights(None, repository)
    assert not policy.is_admin(user) and not policy.catalog_allowed(user)
    scopes = parse_scopes(["repository:prod/app:pull,push,delete", "registry:catalog:*", "repository:public/base:*"])
    assert policy.grant(user, scopes) == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]


def test_a_group_reference_is_never_a_user_principal():
    """'@ops' in a rule is the group ops and only that: a user named '@ops' listed as a group
    member (a hand-written or stale policy) is still no user, while the group's real members and
    a user whose name holds '@' later ('ops@example.com') are matched as written."""
    policy = Policy.from_document({
        "version": 1, "groups": {"ops": ["alice", "@ops"]}, "admins": [], "anonymous_pull": [], "catalog": ["@ops"],
        "rules": [{"repositories": ["prod/**"], "pull": ["@ops"], "push": ["@ops"], "delete": ["ops@example.com"]}],
    })
    assert policy.repository_rights("alice", "prod/app") == {"pull", "push"} and policy.catalog_allowed("alice")
    assert policy.repository_rights("@ops", "prod/app") == set() and not policy.catalog_allowed("@ops")
    assert policy.repository_rights("ops", "prod/app") == set()
    assert policy.repository_rights("ops@example.com", "prod/app") == {"delete"}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(user=st.one_of(st.sampled_from(["@ops", "@nodes", "@alice", "@ci"]),
                      st.text(alphabet="@opsnde*:a1", min_size=1, max_size=8).map(lambda t: "@" + t)),
       repository=st.sampled_from(["prod/app", "ci/app", "team/x/cache", "public/base", "public/a/b"]))
def test_property_a_name_starting_with_at_is_never_a_user(user, repository):
    """Any name starting with '@' (every group reference among them) holds exactly what an
    anonymous client holds, on every repository, and never the catalog."""
    policy = Policy.from_document(POLICY)
    assert policy.repository_rights(user, repository) == policy.repository_rights(None, repository)
    assert not policy.catalog_allowed(user)


# --- a logged-in user holds at least what anonymous clients hold ------------------------------

@pytest.mark.parametrize("user", ["ci", "node1", "bob", "stranger", "auditor", "alice"])
def test_a_logged_in_user_pulls_what_anonymous_clients_pull(user):
    """anonymousPull globs are for anyone: a user who logged in (docker login) and has no rule
    for public/** still pulls there, as an anonymous client does; it gets no push or delete
    there from that, and nothing outside the globs. Before, such a user was refused."""
    policy = Policy.from_document(POLICY)
    rights = policy.repository_rights(user, "public/base")
    assert "pull" in rights and policy.repository_rights(user, "public/a/b") >= {"pull"}
    if user not in ("alice",):  # alice is an admin: everything everywhere
        assert rights == {"pull"}
    scopes = parse_scopes(["repository:public/base:pull,push,delete"])
    assert policy.grant(user, scopes)[0]["actions"] == (["pull", "push", "delete"] if user == "alice" else ["pull"])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(user=st.one_of(st.sampled_from(["ci", "node1", "bob", "stranger", "auditor", "alice"]),
                      st.from_regex(grammar.USER_NAME_RE, fullmatch=True)),
       anonymous=st.lists(st.sampled_from(["public/**", "**", "public/*", "*", "team/*/cache", "ci/app"]), max_size=3),
       repository=st.lists(st.sampled_from(["public", "ci", "team", "x", "cache", "app"]), min_size=1,
                           max_size=4).map("/".join))
def test_property_logged_in_rights_include_the_anonymous_ones(user, anonymous, repository):
    """For any user of the grammar, any anonymousPull globs and any repository: what a user
    holds includes what an anonymous client holds, and logging in never adds the catalog by
    itself."""
    policy = Policy.from_document({**POLICY, "anonymous_pull": anonymous})
    assert policy.repository_rights(user, repository) >= policy.repository_rights(None, repository)
    assert policy.catalog_allowed(user) is (user in ("alice", "auditor"))
