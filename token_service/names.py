"""Repository names and user names: the parts of the project's one grammar that the token
service needs, defined once, here.

``components/grammar.py`` (the grammar of every value the program accepts) builds its image
references on these parts and re-exports them, so the settings, the dynamic providers and the
token service all read the very same patterns. They live in this package because the token
service's image holds only ``token_service/`` (its build context) and installs neither the
program nor RE2. Standard library only; every pattern is used with ``fullmatch`` only.
"""

from __future__ import annotations

import re

# --- distribution's reference grammar: a repository name -----------------------------------
ALPHANUMERIC = r"[a-z0-9]+"
SEPARATOR = r"(?:[._]|__|-+)"
PATH_COMPONENT = rf"{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*"
REPOSITORY = rf"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
# distribution refuses a repository name (with its domain) over 255 characters.
NAME_TOTAL_LENGTH_MAX = 255

# --- user names and group references ------------------------------------------------------
# Access rules name a group as '@group': a user name never starts with it, so user names and
# group references never share a namespace (a user named '@ops' would read as group 'ops').
GROUP_PREFIX = "@"
# Registry user names: printable ASCII without ':' (Basic auth splits on it), white space,
# quotes, '\\', a leading '#' (htpasswd readers take such a line for a comment) or a leading
# '@' (a group reference); 1 to 64 characters. '@' later in the name (an e-mail address) is fine.
USER_NAME = r"[A-Za-z0-9_.+-][A-Za-z0-9_.@+-]{0,63}"

REPOSITORY_RE = re.compile(REPOSITORY)
USER_NAME_RE = re.compile(USER_NAME)


def is_repository(value: object) -> bool:
    """A repository name as distribution accepts it (path components, at most 255 characters)."""
    return isinstance(value, str) and len(value) <= NAME_TOTAL_LENGTH_MAX and REPOSITORY_RE.fullmatch(value) is not None


def is_user_name(value: object) -> bool:
    """A registry user name (see ``USER_NAME``): never a group reference."""
    return isinstance(value, str) and USER_NAME_RE.fullmatch(value) is not None
