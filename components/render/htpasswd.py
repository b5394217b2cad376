"""htpasswd text from users, passwords and stable salts (bcrypt via libpass, imported as passlib).

bcrypt salts are normally random, which would re-hash every password on every ``pulumi up``
and make an unchanged stack show a diff. The salt is instead derived from 16 random bytes that
Pulumi keeps in state (one ``random.RandomBytes`` per user), so the same password, salt and
cost always give the same line, and a changed password or cost gives a new one.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from passlib.hash import bcrypt
from passlib.utils.binary import bcrypt64

from components import grammar

SALT_BYTES = 16


def bcrypt_salt(raw_b64: str) -> str:
    """Turn 16 random bytes (standard base64, as RandomBytes gives them) into a bcrypt salt."""
    raw = base64.b64decode(raw_b64)
    if len(raw) < SALT_BYTES:
        raise ValueError(f"a bcrypt salt needs {SALT_BYTES} random bytes, got {len(raw)}")
    # 16 bytes encode to 22 characters whose last one carries 4 unused bits; clear them so the
    # salt is canonical and libpass does not rewrite it (which would change the hash).
    return bcrypt64.repair_unused(bcrypt64.encode_bytes(raw[:SALT_BYTES]).decode())


def htpasswd_line(user: str, password: str, salt: str, rounds: int) -> str:
    """One ``user:$2y$...`` line. ``$2y$`` is what Apache's htpasswd writes and nginx accepts.

    The user name must be one of the grammar's: a ':' would end the name early, a line break
    would start another entry, and a leading '#' would make nginx skip the line as a comment.
    A password with a control character (NUL, line break) is refused: Basic auth cannot carry it.
    """
    if not grammar.is_user_name(user):
        raise ValueError(f"user name {user!r} cannot be written to htpasswd: no ':', white space, "
                         "quotes, '#' or control characters (see components.grammar.USER_NAME)")
    if grammar.has_control_character(password):
        raise ValueError(f"the password of user {user!r} holds a control character")
    digest = bcrypt.using(salt=salt, rounds=rounds, ident="2y").hash(password)
    return f"{user}:{digest}"


def render_htpasswd(entries: Mapping[str, tuple[str, str]], rounds: int) -> str:
    """htpasswd file text; ``entries`` maps user -> (password, salt from :func:`bcrypt_salt`)."""
    lines = [htpasswd_line(user, password, salt, rounds) for user, (password, salt) in sorted(entries.items())]
    return "\n".join(lines) + "\n"
