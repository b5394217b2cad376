"""Users: stable-salt htpasswd (secret), a generated admin password when none is configured,
and any characters in passwords."""

from __future__ import annotations

import pulumi
import pytest
from passlib.apache import HtpasswdFile

from components.users import Htpasswd, HtpasswdArgs, resource_slug
from tests.support.engine import is_secret
from tests.support.program import use_mocks

HTPASSWD_TYPE = "registry:users:Htpasswd"
BYTES_TYPE = "random:index/randomBytes:RandomBytes"
PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"


def build(passwords: dict, **kwargs) -> dict:
    """Build one Htpasswd under fresh mocks; return its resolved outputs, secretness and the monitor."""
    monitor = use_mocks()
    result: dict = {"monitor": monitor}

    @pulumi.runtime.test
    def run():
        users = Htpasswd("users", HtpasswdArgs(passwords={u: pulumi.Output.secret(p) for u, p in passwords.items()},
                                               **kwargs))

        async def gather(_):
            for name in ("content", "user_names", "passwords"):
                output = getattr(users, name)
                result[name] = await output.future()
                result[f"{name}_secret"] = await output.is_secret()

        return pulumi.Output.from_input(None).apply(gather)

    run()
    return result


def test_resource_slug_is_readable_safe_and_unique():
    """User names with '@', '/' or spaces give distinct, stable resource-name parts."""
    assert resource_slug("alice") == resource_slug("alice")
    assert resource_slug("ci@example.com").startswith("ci-example.com-")
    assert resource_slug("a@b") != resource_slug("a-b")
    assert all(c.isalnum() or c in "_.-" for c in resource_slug("x/y z@ü"))


def test_configured_users_get_one_stable_salt_each_and_a_secret_htpasswd():
    """One RandomBytes salt (16 bytes) per user, children of the component; no generated password;
    the content verifies every password, lists users sorted, and is secret, as are the passwords."""
    passwords = {"zed": "zed-password-0123456789", "ci@example.com": "p@ss:w:rd@@-0123456789"}
    out = build(passwords)
    m = out["monitor"]
    component = m.one(HTPASSWD_TYPE)
    salts = m.by_type(BYTES_TYPE)
    assert sorted(s.name for s in salts) == sorted(f"users-salt-{resource_slug(u)}" for u in passwords)
    assert all(s.parent == component.urn and s.plain_inputs == {"length": 16} for s in salts)
    assert m.by_type(PASSWORD_TYPE) == []
    assert out["content_secret"] is True and out["passwords_secret"] is True
    assert out["user_names"] == ["ci@example.com", "zed"] and out["user_names_secret"] is False
    assert out["passwords"] == passwords
    htpasswd = HtpasswdFile.from_string(out["content"])
    assert sorted(htpasswd.users()) == ["ci@example.com", "zed"]
    for user, password in passwords.items():
        assert htpasswd.check_password(user, password) is True
        assert htpasswd.check_password(user, "wrong") is False
    assert all(line.split(":", 1)[1].startswith("$2y$05$") for line in out["content"].splitlines())


def test_no_users_gives_one_admin_with_a_generated_secret_password():
    """No configured user: 'admin' (or defaultUser) with a 32-character letters-and-digits
    password from RandomPassword, secret, that the htpasswd verifies."""
    out = build({})
    m = out["monitor"]
    generated = m.one(PASSWORD_TYPE)
    assert generated.name == f"users-password-{resource_slug('admin')}"
    assert generated.plain_inputs == {"length": 32, "special": False}
    assert generated.parent == m.one(HTPASSWD_TYPE).urn
    assert is_secret(generated.outputs["result"])
    assert out["user_names"] == ["admin"] and out["passwords_secret"] is True
    password = out["passwords"]["admin"]
    assert len(password) == 32 and password.isalnum()
    assert HtpasswdFile.from_string(out["content"]).check_password("admin", password) is True


def test_generated_user_name_and_length_follow_the_settings():
    """defaultUser and generatedPasswordLength are honoured."""
    out = build({}, default_user="ops", generated_password_length=40)
    assert out["user_names"] == ["ops"] and len(out["passwords"]["ops"]) == 40


def test_unchanged_users_hash_to_the_identical_file():
    """Salts are kept in state (stable per resource), so a second run yields the same bytes:
    no diff, no container replacement."""
    passwords = {"alice": "p@ss:word-0123456789", "bob": "another-password-42"}
    assert build(passwords)["content"] == build(passwords)["content"]


def test_changing_one_password_changes_only_that_line():
    """Bob's line is unchanged when Alice's password changes."""
    before = build({"alice": "p@ss:word-0123456789", "bob": "another-password-42"})["content"].splitlines()
    after = build({"alice": "new:p@ssword-0123456", "bob": "another-password-42"})["content"].splitlines()
    assert before[0] != after[0] and before[1] == after[1]


def test_bcrypt_cost_change_rehashes_every_line():
    """Raising bcryptRounds re-hashes all users with the new cost."""
    passwords = {"alice": "p@ss:word-0123456789"}
    low, high = build(passwords)["content"], build(passwords, bcrypt_rounds=6)["content"]
    assert low != high and high.split(":", 1)[1].startswith("$2y$06$")
    assert HtpasswdFile.from_string(high).check_password("alice", passwords["alice"])


@pytest.mark.parametrize("user, password", [
    ("ci@example.com", "a:b@c:d@e-0123456"),
    ("alice", "with space and 'quotes' \"double\" $dollar `tick` \\"),
    ("bob", "ünïcödé-pässwörd-€"),
])
def test_any_password_hashes_and_verifies(user, password):
    """'@' in user names and any character in passwords hash and verify (passlib)."""
    content = build({user: password})["content"]
    assert HtpasswdFile.from_string(content).check_password(user, password) is True
