"""Settings under ``auth`` (components/settings_auth.py): mode, rules, validation messages, the
policy document and the bcrypt cost per mode."""

import pytest

from components.settings import SettingsError, parse_settings
from token_service.access import Policy

USERS = {"alice": "a" * 20, "ci": "c" * 20, "node": "n" * 20}


def settings(**raw):
    secret = {"users"} if "users" in raw else set()
    return parse_settings(raw, stack="dev", secret_keys=secret, now=0)


def test_defaults_are_token_mode_open_policy_cost_11():
    """Default: token mode, every user every right (the open policy), bcrypt cost 11; basic mode: 5."""
    s = settings()
    assert s.auth.token and s.auth.open and s.bcrypt_cost == 11
    policy = Policy.from_document(s.auth.policy_document())
    assert policy.repository_rights("admin", "any/repo") == {"pull", "push", "delete"} and policy.catalog_allowed("admin")
    assert settings(auth={"mode": "basic"}).bcrypt_cost == 5
    assert settings(auth={"mode": "basic"}, bcryptRounds=8).bcrypt_cost == 8


def test_rules_become_the_policy():
    """Rules, groups, admins, anonymous globs and the catalog reach the policy document as written."""
    s = settings(users=USERS, auth={
        "groups": {"nodes": ["node"]}, "admins": ["alice"],
        "rules": [{"repositories": ["ci/**"], "push": ["ci"]}, {"repositories": ["**"], "pull": ["@nodes"]}],
        "anonymousPull": ["public/**"], "catalog": ["@nodes"]})
    policy = Policy.from_document(s.auth.policy_document())
    assert policy.repository_rights("ci", "ci/x") == {"pull", "push"}
    assert policy.repository_rights("ci", "prod/x") == set()
    assert policy.repository_rights("node", "prod/x") == {"pull"}
    assert policy.repository_rights(None, "public/x") == {"pull"}
    assert policy.repository_rights("ci", "public/x") == {"pull"}  # anonymousPull is for anyone
    assert policy.catalog_allowed("node") and not policy.catalog_allowed("ci")
    locked = Policy.from_document(settings(users=USERS, auth={"rules": []}).auth.policy_document())
    assert locked.repository_rights("alice", "x") == set() and not locked.catalog_allowed("alice")


@pytest.mark.parametrize(
    "auth,where,fix",
    [
        ({"mode": "oauth"}, "auth.mode", "token (default) or basic"),
        ({"rules": [{"repositories": ["Team/**"]}]}, "auth.rules[0].repositories", "not a repository glob"),
        ({"rules": [{"repositories": []}]}, "auth.rules[0].repositories", ""),
        ({"rules": [{"repositories": ["x"], "write": ["ci"]}]}, "auth.rules[0].write", "not a known setting"),
        ({"rules": [{"repositories": ["x"], "pull": ["ghost"]}]}, "auth", "'ghost' is not a user"),
        ({"rules": [{"repositories": ["x"], "pull": ["@ops"]}]}, "auth", "group 'ops' is not defined"),
        ({"admins": ["a b"]}, "auth.admins", "not a user name"),
        ({"anonymousPull": ["../x"]}, "auth.anonymousPull", "not a repository glob"),
        ({"groups": {"ops": ["ghost"]}}, "auth", "groups.ops: 'ghost' is not a user"),
        ({"groups": {"@ops": ["alice"]}}, "auth.groups", "starts with '@': name the group without it"),
        ({"groups": {"ops": ["alice"], "all": ["@ops"]}}, "auth.groups", "groups hold users only"),
        ({"admins": ["@@ops"]}, "auth.admins", "not a user name, '@group' or '*'"),
        ({"mode": "basic", "rules": []}, "auth", "need auth.mode token"),
        ({"tokenLifetimeSeconds": 10}, "auth.tokenLifetimeSeconds", ""),
        ({"rateLimitPerSecond": 0}, "auth.rateLimitPerSecond", ""),
        ({"failedLoginsPerMinute": 0}, "auth.failedLoginsPerMinute", ""),
        ({"failedLoginBurst": 1001}, "auth.failedLoginBurst", ""),
        ({"failedLoginBurst": "3"}, "auth.failedLoginBurst", ""),
    ],
)
def test_bad_auth_settings_are_refused(auth, where, fix):
    """A bad auth setting fails with the setting's name and the fix, before any resource."""
    with pytest.raises(SettingsError) as info:
        settings(users=USERS, auth=auth)
    assert f"private-registry:{where}" in str(info.value) and fix in str(info.value)


@pytest.mark.parametrize("raw,where", [
    ({"users": {**USERS, "@ops": "o" * 20}}, "users.@ops"),
    ({"defaultUser": "@ops"}, "defaultUser"),
    ({"users": {**USERS, "@": "o" * 20}}, "users.@"),
])
def test_a_user_named_like_a_group_is_refused_at_preview(raw, where):
    """A user name starting with '@' would read as a group in access rules ('@ops' got group
    ops's rights): refused before any resource, naming the setting and the fix, even where no
    rule names a group; '@' later in a name stays allowed."""
    with pytest.raises(SettingsError) as info:
        settings(**raw, auth={"groups": {"ops": ["alice"]}, "admins": ["@ops"]} if "users" in raw else {})
    message = str(info.value)
    assert f"private-registry:{where}: user name '@" in message and "starts with '@'" in message
    assert "rename the user so it starts with a letter, digit" in message


def test_a_user_with_at_after_the_first_character_is_no_group():
    """'ops@example.com' is a user name, and holds only what rules give it: not group ops's rights."""
    s = settings(users={"alice": "a" * 20, "ops@example.com": "o" * 20},
                 auth={"groups": {"ops": ["alice"]}, "admins": ["@ops"], "rules": []})
    policy = Policy.from_document(s.auth.policy_document())
    assert policy.repository_rights("alice", "x") == {"pull", "push", "delete"}
    assert policy.repository_rights("ops@example.com", "x") == set()


def test_prod_example_is_least_privilege():
    """stacks/Pulumi.prod.example.yaml: the node user only pulls, the CI user only pushes (and
    pulls) ci/**, the admin alone deletes and lists the catalog; nobody anonymous."""
    from pathlib import Path

    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.prod.example.yaml").read_text())
    config = {k.split(":", 1)[1]: v for k, v in raw["config"].items()}
    users = {"alice": "a" * 20, "ci-pusher": "c" * 20, "k8s-node": "n" * 20}
    s = parse_settings({**config, "users": users}, stack="prod", secret_keys={"users"}, now=0)
    policy = Policy.from_document(s.auth.policy_document())
    for repo in ("ci/app", "team/app", "prod/api"):
        assert policy.repository_rights("k8s-node", repo) == {"pull"}
        assert policy.repository_rights("alice", repo) == {"pull", "push", "delete"}
        assert policy.repository_rights(None, repo) == set()
    assert policy.repository_rights("ci-pusher", "ci/app") == {"pull", "push"}
    assert policy.repository_rights("ci-pusher", "team/app") == set()
    assert [u for u in users if policy.catalog_allowed(u)] == ["alice"]
