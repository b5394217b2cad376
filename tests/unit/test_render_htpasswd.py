"""htpasswd rendering: stable bcrypt lines from (user, password, salt, cost), verifiable by libpass."""

from __future__ import annotations

import base64

import pytest
from passlib.apache import HtpasswdFile
from passlib.hash import bcrypt
from passlib.utils.binary import bcrypt64

from components.render.htpasswd import SALT_BYTES, bcrypt_salt, htpasswd_line, render_htpasswd

RAW_SALT = base64.b64encode(bytes(range(16))).decode()
OTHER_RAW_SALT = base64.b64encode(bytes(range(100, 116))).decode()
PASSWORD = "p@ss:w0rd with spaces and ünïcode"


def test_same_password_salt_and_cost_give_the_identical_line():
    """The line is a pure function of its inputs: no churn for an unchanged user."""
    salt = bcrypt_salt(RAW_SALT)
    assert htpasswd_line("alice", PASSWORD, salt, 5) == htpasswd_line("alice", PASSWORD, bcrypt_salt(RAW_SALT), 5)


def test_line_is_apache_2y_bcrypt_with_the_given_cost_and_salt():
    """`user:$2y$NN$<22-char salt><31-char hash>`: the format Apache writes and nginx reads."""
    salt = bcrypt_salt(RAW_SALT)
    user, digest = htpasswd_line("alice", PASSWORD, salt, 7).split(":", 1)
    assert user == "alice"
    assert digest.startswith("$2y$07$")
    assert digest[7:29] == salt
    assert len(digest) == 60


def test_cost_change_gives_a_new_line_that_still_verifies():
    """Raising the bcrypt cost re-hashes (a new line), and both lines verify the password."""
    salt = bcrypt_salt(RAW_SALT)
    low, high = htpasswd_line("alice", PASSWORD, salt, 5), htpasswd_line("alice", PASSWORD, salt, 6)
    assert low != high
    assert high.split(":", 1)[1].startswith("$2y$06$")
    assert bcrypt.verify(PASSWORD, low.split(":", 1)[1]) and bcrypt.verify(PASSWORD, high.split(":", 1)[1])


def test_salt_or_password_change_gives_a_new_line():
    """Another salt or another password hashes differently."""
    base = htpasswd_line("alice", PASSWORD, bcrypt_salt(RAW_SALT), 5)
    assert htpasswd_line("alice", PASSWORD, bcrypt_salt(OTHER_RAW_SALT), 5) != base
    assert htpasswd_line("alice", PASSWORD + "!", bcrypt_salt(RAW_SALT), 5) != base


def test_bcrypt_salt_is_canonical_22_characters():
    """16 bytes become a 22-character bcrypt64 salt whose unused bits are clear, so libpass keeps
    it as given (a salt libpass 'repairs' would silently change the hash)."""
    salt = bcrypt_salt(RAW_SALT)
    assert len(salt) == 22
    assert bcrypt64.repair_unused(salt) == salt
    assert bcrypt_salt(RAW_SALT) == salt
    assert bcrypt_salt(OTHER_RAW_SALT) != salt


def test_bcrypt_salt_refuses_too_few_bytes():
    """A salt from fewer than 16 random bytes is refused rather than padded."""
    with pytest.raises(ValueError, match=str(SALT_BYTES)):
        bcrypt_salt(base64.b64encode(b"short").decode())


@pytest.mark.parametrize(
    "user, password",
    [("alice", "p@ss:word"), ("ci@example.com", "a:b:c@d@e"), ("bob", "quote'\"back\\slash$dollar"), ("dave", "x" * 72)],
)
def test_any_password_and_at_sign_user_verify_with_passlib(user, password):
    """Users with '@' and passwords with '@', ':', quotes, '$' and 72 bytes verify; a wrong one does not."""
    text = render_htpasswd({user: (password, bcrypt_salt(RAW_SALT))}, 5)
    htpasswd = HtpasswdFile.from_string(text)
    assert htpasswd.users() == [user]
    assert htpasswd.check_password(user, password) is True
    assert htpasswd.check_password(user, password[:-1] + "?") is False


def test_user_name_with_colon_is_refused():
    """htpasswd and HTTP Basic split on the first ':'; such a name could never log in."""
    with pytest.raises(ValueError, match="':'"):
        htpasswd_line("a:b", PASSWORD, bcrypt_salt(RAW_SALT), 5)


def test_file_has_one_sorted_line_per_user_and_ends_with_newline():
    """Order does not depend on the mapping's order (stable file), and each user has one line."""
    entries = {"zed": ("pw-zed-0123456789", bcrypt_salt(RAW_SALT)), "amy": ("pw-amy-0123456789", bcrypt_salt(OTHER_RAW_SALT))}
    text = render_htpasswd(entries, 5)
    reversed_text = render_htpasswd(dict(reversed(list(entries.items()))), 5)
    assert text == reversed_text
    assert text.endswith("\n")
    assert [line.split(":", 1)[0] for line in text.splitlines()] == ["amy", "zed"]
