"""One grammar for every kind of value the program accepts, built from named parts.

Modelled on distribution's ``reference`` package: small named expressions composed into the
full ones, each exported as a compiled pattern that is only ever used with ``fullmatch`` (a
``$`` would also match before a final newline). Every pattern is ASCII-only: Python's ``\\w``
and ``\\d`` would accept other scripts' letters and digits, which the registry, nginx and
shells read differently. No pattern here admits a control character, white space, a quote,
``$``, a backtick, ``;``, ``{``, ``}``, ``#`` or ``%``.

This module imports only the standard library, ``re2`` and ``token_service.names`` (standard
library only): settings and the dynamic providers (which run in the engine's provider host) both
import it. Repository names and user names are defined in ``token_service/names.py`` and
re-exported here: the token service checks every name it signs with the same patterns, and
its image holds only ``token_service/``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple, Optional

import re2

# --- Named parts (distribution's reference grammar) --------------------------------------
# The repository name's parts (and user names, below) come from token_service/names.py.
from token_service.names import (  # noqa: F401 - re-exported: the one definition of these names
    ALPHANUMERIC,
    GROUP_PREFIX,
    NAME_TOTAL_LENGTH_MAX,
    PATH_COMPONENT,
    REPOSITORY,
    REPOSITORY_RE,
    SEPARATOR,
    USER_NAME,
    USER_NAME_RE,
    is_repository,
    is_user_name,
)

DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = rf"{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
DIGEST = r"sha256:[a-f0-9]{64}"
# Where a registry serves no referrers API, clients keep what they attach to an image under
# tags derived from its digest: cosign's `sha256-<hex>.sig`, `.att` and `.sbom`, and the OCI
# referrers tag schema's `sha256-<hex>` (an index listing the artifacts; cosign 3, oras).
ATTACHMENT_TAG = r"(?P<algorithm>sha256)-(?P<hex>[a-f0-9]{64})(?:\.(?P<kind>sig|att|sbom))?"
# An image as a Docker engine pulls it: [domain/]repository[:tag][@digest].
IMAGE_REFERENCE = rf"(?:{DOMAIN}/)?{REPOSITORY}(?::{TAG})?(?:@{DIGEST})?"
IMAGE_REFERENCE_PARTS = rf"(?P<name>(?:{DOMAIN}/)?{REPOSITORY})(?::(?P<tag>{TAG}))?(?:@(?P<digest>{DIGEST}))?"

# --- Other kinds of value ------------------------------------------------------------------
DNS_LABEL = r"(?:[a-z0-9]|[a-z0-9][a-z0-9-]{0,61}[a-z0-9])"
DNS_NAME = rf"{DNS_LABEL}(?:\.{DNS_LABEL})*"
DNS_NAME_LENGTH_MAX = 253
# Names of Docker objects (containers, volumes, networks) and of trust targets.
DOCKER_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}"
DURATION = r"(?P<amount>[0-9]{1,6}(?:\.[0-9]{1,3})?)(?P<unit>[hdw])"
# Docker engine addresses the program connects to.
DOCKER_HOST = (
    rf"unix:///[A-Za-z0-9_./-]{{1,200}}"
    rf"|tcp://{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*:[0-9]{{1,5}}"
    rf"|ssh://(?:[a-z_][a-z0-9_-]{{0,31}}@)?{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*(?::[0-9]{{1,5}})?"
)

# Object storage (S3 API): a bucket name as AWS accepts it for path- and virtual-host style,
# a region name, a key prefix of path segments (no '..'), access key ids and secret keys.
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
S3_REGION = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"
OBJECT_PATH = r"(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}){1,16}"
# Credentials: letters, digits and ``_.~+/=@:,-`` (AWS keys are base64; generated passwords
# are alphanumeric). The values go into YAML written by a library.
CREDENTIAL = r"[A-Za-z0-9_.~+/=@:,-]{1,256}"

TAG_RE = re.compile(TAG)
DIGEST_RE = re.compile(DIGEST)
ATTACHMENT_TAG_RE = re.compile(ATTACHMENT_TAG)
IMAGE_REFERENCE_RE = re.compile(IMAGE_REFERENCE)
IMAGE_REFERENCE_PARTS_RE = re.compile(IMAGE_REFERENCE_PARTS)
DNS_NAME_RE = re.compile(DNS_NAME)
DOCKER_NAME_RE = re.compile(DOCKER_NAME)
DURATION_RE = re.compile(DURATION)
DOCKER_HOST_RE = re.compile(DOCKER_HOST)
S3_BUCKET_RE = re.compile(S3_BUCKET)
S3_REGION_RE = re.compile(S3_REGION)
OBJECT_PATH_RE = re.compile(OBJECT_PATH)
CREDENTIAL_RE = re.compile(CREDENTIAL)

# Repository globs of access rules (token_service/access.py matches them): '/'-separated
# segments, each '**' (one or more whole segments) or name characters with '*' wildcards,
# starting with a letter, digit or '*' as a name segment does.
ACCESS_GLOB_SEGMENT = r"(?:\*\*|[a-z0-9*][a-z0-9._*-]{0,127})"
ACCESS_GLOB = rf"{ACCESS_GLOB_SEGMENT}(?:/{ACCESS_GLOB_SEGMENT})*"
ACCESS_GLOB_RE = re.compile(ACCESS_GLOB)

def is_tag(value: object) -> bool:
    """A tag: ASCII letters, digits, '_', '.', '-', not starting with '.' or '-', at most 128."""
    return isinstance(value, str) and TAG_RE.fullmatch(value) is not None


def is_digest(value: object) -> bool:
    """A sha256 digest in the canonical form ``sha256:<64 lowercase hex>``."""
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


def is_image_reference(value: object) -> bool:
    """An image reference; its name part at most 255 characters and any port in 1-65535."""
    if not isinstance(value, str) or IMAGE_REFERENCE_RE.fullmatch(value) is None:
        return False
    name = value.split("@", 1)[0]
    domain, _, path = name.partition("/")
    if path and ":" in domain and not 1 <= int(domain.rsplit(":", 1)[1]) <= 65535:
        return False
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return len(name) <= NAME_TOTAL_LENGTH_MAX


class ImageReference(NamedTuple):
    """An image reference's parts: ``name`` (domain and repository), ``tag`` and ``digest``
    (each None when absent)."""

    name: str
    tag: Optional[str]
    digest: Optional[str]


def parse_image_reference(value: object) -> Optional[ImageReference]:
    """The parts of an image reference (:func:`is_image_reference`), or None."""
    if not is_image_reference(value):
        return None
    match = IMAGE_REFERENCE_PARTS_RE.fullmatch(value)
    return ImageReference(match["name"], match["tag"], match["digest"])


class Attachment(NamedTuple):
    """What a digest-derived tag holds: the ``subject`` digest it is attached to and its
    ``kind``: ``sig``, ``att``, ``sbom`` (cosign's tags) or ``referrers`` (the referrers tag
    schema's index)."""

    subject: str
    kind: str


def parse_attachment_tag(value: object) -> Optional[Attachment]:
    """The subject and kind of an attachment tag (see ``ATTACHMENT_TAG``), or None for any other tag."""
    match = ATTACHMENT_TAG_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    return Attachment(f"{match['algorithm']}:{match['hex']}", match["kind"] or "referrers")


def is_pinned_image_reference(value: object) -> bool:
    """An image reference that names a digest, so every host runs the same bytes."""
    return is_image_reference(value) and "@sha256:" in str(value)


def is_dns_name(value: object) -> bool:
    """A lowercase DNS host name of labels of 1-63 characters, at most 253 in all; not an IP."""
    if not isinstance(value, str) or len(value) > DNS_NAME_LENGTH_MAX or DNS_NAME_RE.fullmatch(value) is None:
        return False
    # All-numeric final label: an IPv4 address or something that reads like one.
    return not value.rsplit(".", 1)[-1].isdigit()


def is_docker_name(value: object) -> bool:
    """A Docker object name: a letter or digit, then letters, digits, '_', '.', '-' (128 at most)."""
    return isinstance(value, str) and DOCKER_NAME_RE.fullmatch(value) is not None


def is_access_glob(value: object) -> bool:
    """An access rule's repository glob (see ``ACCESS_GLOB``), at most 255 characters."""
    return (isinstance(value, str) and len(value) <= NAME_TOTAL_LENGTH_MAX
            and ACCESS_GLOB_RE.fullmatch(value) is not None)


def is_docker_host(value: object) -> bool:
    """A Docker engine address: unix:///path, tcp://host:port or ssh://[user@]host[:port]."""
    if not isinstance(value, str) or DOCKER_HOST_RE.fullmatch(value) is None:
        return False
    authority = value.split("://", 1)[1]
    if value.startswith("unix:") or ":" not in authority:
        return True
    return 1 <= int(authority.rsplit(":", 1)[1]) <= 65535


def is_s3_bucket(value: object) -> bool:
    """An S3 bucket name: 3-63 lowercase letters, digits, '.', '-'; no '..' and not an IPv4 address."""
    return (
        isinstance(value, str)
        and S3_BUCKET_RE.fullmatch(value) is not None
        and ".." not in value
        and parse_ip(value) is None
    )


def is_s3_region(value: object) -> bool:
    """An S3 region name like ``us-east-1`` (lowercase letters, digits, '-')."""
    return isinstance(value, str) and S3_REGION_RE.fullmatch(value) is not None


def is_object_path(value: object) -> bool:
    """A key prefix inside a bucket: '/'-separated segments, none of them '.' or '..'."""
    return (
        isinstance(value, str)
        and OBJECT_PATH_RE.fullmatch(value) is not None
        and not any(part in (".", "..") for part in value.split("/"))
    )


def is_credential(value: object) -> bool:
    """An access key, secret key or password of 1-256 characters (see ``CREDENTIAL``)."""
    return isinstance(value, str) and CREDENTIAL_RE.fullmatch(value) is not None


def parse_endpoint(value: object) -> Optional[tuple[str, str, Optional[int]]]:
    """(scheme, host, port) of an ``http(s)://host[:port]`` URL without path, user or query; or None.

    The host is a DNS name or an IP address (IPv6 in brackets)."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable():
        return None
    match = re.fullmatch(r"(https?)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253})(?::([0-9]{1,5}))?/?", value)
    if match is None:
        return None
    scheme, host, port = match.group(1), match.group(2), match.group(3)
    bare = host[1:-1] if host.startswith("[") else host
    if parse_ip(bare) is None and not is_dns_name(bare.lower()):
        return None
    if host.startswith("[") and ":" not in bare:
        return None
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    return scheme, bare.lower(), int(port) if port else None


def parse_host_port(value: object) -> Optional[tuple[str, int]]:
    """(host, port) of ``host:port`` (a DNS name or IPv4 address, or ``[IPv6]:port``); or None."""
    if not isinstance(value, str):
        return None
    parsed = parse_endpoint(f"http://{value}")
    if parsed is None or parsed[2] is None:
        return None
    return parsed[1], parsed[2]


def ipv6_text(address: ipaddress.IPv6Address) -> str:
    """An IPv6 address in hexadecimal groups only (RFC 5952 section 4: lowercase, no leading
    zeros, the longest run of two or more zero groups, the first of equals, as ``::``), also
    when it is IPv4-mapped: ``::ffff:7f00:1``, never ``::ffff:127.0.0.1``. Distribution's
    reference grammar (Docker, containerd, podman) reads only hex digits and colons between
    the brackets, and Python's own text for mapped addresses differs between versions."""
    groups = [int.from_bytes(address.packed[i:i + 2], "big") for i in range(0, 16, 2)]
    best_start, best_length, start = -1, 1, None
    for index, group in enumerate(groups + [1]):
        if group == 0 and start is None:
            start = index
        elif group != 0 and start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    words = [f"{group:x}" for group in groups]
    if best_start < 0:
        return ":".join(words)
    return ":".join(words[:best_start]) + "::" + ":".join(words[best_start + best_length:])


def parse_ip(value: object) -> Optional[str]:
    """The canonical text of an IPv4 or IPv6 address (IPv6: :func:`ipv6_text`, short, long and
    IPv4-mapped forms alike), or None; zone ids (``%eth0``) and brackets are refused."""
    if not isinstance(value, str) or not value.isascii() or "%" in value or not value.isprintable():
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return ipv6_text(address) if address.version == 6 else str(address)


def url_host(host: str) -> str:
    """A DNS name or canonical IP address as a URL, a ``Host`` header, nginx's ``server_name``
    (compared with ``$host``) and the ``certs.d`` folders write it: an IPv6 address in
    brackets (``[::1]``), anything else as it is."""
    return f"[{host}]" if ":" in host and parse_ip(host) == host else host


def parse_duration_hours(value: object) -> Optional[float]:
    """Hours in a duration like ``36h``, ``30d`` or ``2w``; None when it is not one."""
    if not isinstance(value, str):
        return None
    match = DURATION_RE.fullmatch(value)
    if match is None:
        return None
    return float(match.group("amount")) * {"h": 1, "d": 24, "w": 168}[match.group("unit")]


# --- Tag patterns (retention keepPatterns) ------------------------------------------------
class PatternError(ValueError):
    """A keep pattern is not a regular expression RE2 accepts."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
PATTERN_LENGTH_MAX = 256


def compile_tag_pattern(pattern: str):
    """Compile a keep pattern with RE2, which matches in time linear in the tag's length.

    Backreferences and look-around (which need backtracking) are refused with PatternError, as
    are empty patterns (they would match every tag) and patterns over 256 characters. The
    result's ``fullmatch(tag)`` tells whether a tag is kept: a pattern matches the whole tag.
    """
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("is empty: it would keep every tag; remove it or write a pattern like '^v[0-9]+'")
    if len(pattern) > PATTERN_LENGTH_MAX:
        raise PatternError(f"is longer than {PATTERN_LENGTH_MAX} characters")
    if not pattern.isprintable():
        raise PatternError("holds a control character")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"is not a regular expression RE2 accepts ({reason}); backreferences and look-around are not supported"
        ) from None


# --- Further kinds: SSH logins, repository globs, free text ---------------------------------
# A login name on a client host (POSIX portable user names, as useradd accepts them).
SSH_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
# A retention rule's repository glob: repository characters plus fnmatch's '*' and '?'.
REPOSITORY_GLOB = r"[a-z0-9._/*?-]{1,255}"
SSH_USER_RE = re.compile(SSH_USER)
REPOSITORY_GLOB_RE = re.compile(REPOSITORY_GLOB)


def is_ssh_user(value: object) -> bool:
    """A login name for SSH: a letter or '_', then letters, digits, '_', '.', '-' (32 at most)."""
    return isinstance(value, str) and SSH_USER_RE.fullmatch(value) is not None


def is_repository_glob(value: object) -> bool:
    """A glob over repository names: lowercase letters, digits, '.', '_', '/', '-', '*', '?'."""
    return isinstance(value, str) and REPOSITORY_GLOB_RE.fullmatch(value) is not None


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a C0/C1 control character, DEL, or a line or paragraph separator."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029\u0085" for c in value)


def is_registry_address(value: object) -> bool:
    """host[:port] as clients write it: a DNS name or IPv4 address, or ``[IPv6]``, then an
    optional port 1-65535."""
    if not isinstance(value, str):
        return False
    host, port = value, None
    if value.startswith("["):
        inner, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
        if ":" not in inner or parse_ip(inner) != inner:
            return False
    else:
        if value.count(":") > 1:
            return False
        host, _, port_text = value.partition(":")
        port = port_text if ":" in value else None
        if not is_dns_name(host) and parse_ip(host) != host:
            return False
    if port is None:
        return True
    return port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535


# --- Webhooks: notification endpoints ---------------------------------------------------------
# A URL path and query of unreserved characters: '/'-separated segments, an optional query of
# name=value pairs joined by '&'. No user info (credentials go in headers, which are secrets),
# no fragment, no percent-encoding.
URL_PATH = r"(?:/[A-Za-z0-9._~+=-]*)*"
URL_QUERY = r"[A-Za-z0-9._~+=-]+(?:&[A-Za-z0-9._~+=-]+)*"
HTTP_URL = rf"(?P<base>https?://[^/?]+)(?P<path>{URL_PATH})(?:\?(?P<query>{URL_QUERY}))?"
HTTP_URL_RE = re.compile(HTTP_URL)
# An HTTP header name: a subset of RFC 9110's token (letters, digits and '-', starting with a
# letter or digit; no '$', '#', quotes or '%', which the rest of this grammar refuses too).
HEADER_NAME = r"[A-Za-z0-9][A-Za-z0-9-]{0,63}"
HEADER_NAME_RE = re.compile(HEADER_NAME)
# A media type as distribution compares them: type/subtype, each a restricted token.
MEDIA_TYPE = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,126}/[A-Za-z0-9][A-Za-z0-9._+-]{0,126}"
MEDIA_TYPE_RE = re.compile(MEDIA_TYPE)


class HttpUrl(NamedTuple):
    scheme: str
    host: str
    port: Optional[int]
    path: str
    query: Optional[str]


def parse_http_url(value: object) -> Optional[HttpUrl]:
    """An ``http(s)://host[:port][/path][?query]`` URL whose host is a DNS name or IP address
    (:func:`parse_endpoint`'s), path and query of unreserved characters; or None."""
    if not isinstance(value, str) or len(value) > 2048 or not value.isascii():
        return None
    match = HTTP_URL_RE.fullmatch(value)
    if match is None:
        return None
    endpoint = parse_endpoint(match["base"])
    if endpoint is None or any(part in (".", "..") for part in match["path"].split("/")):
        return None
    return HttpUrl(*endpoint, match["path"], match["query"])


def is_header_name(value: object) -> bool:
    """An HTTP header name (see ``HEADER_NAME``)."""
    return isinstance(value, str) and HEADER_NAME_RE.fullmatch(value) is not None


def is_media_type(value: object) -> bool:
    """A media type ``type/subtype`` (see ``MEDIA_TYPE``)."""
    return isinstance(value, str) and MEDIA_TYPE_RE.fullmatch(value) is not None
