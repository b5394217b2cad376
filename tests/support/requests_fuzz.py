"""Requests that try to get at the registry without valid credentials, sent byte for byte.

Every request is written out as raw bytes and sent over its own TLS connection, so nothing
between the test and nginx normalises the path, the method or the headers (``requests`` and
``http.client`` would). :func:`tricky_probes` is the fixed list of known tricks (encoded
slashes, dot segments, double slashes, case changes, every method, broken and foreign
``Authorization`` headers, right user with wrong password, ...); :func:`random_probes` adds
seeded random combinations of the same ingredients. :func:`leaks` tells whether a response
gave anything away (a manifest, blob, tag list, catalog or upload session).

No probe ever carries the right password: :func:`_guard` refuses to build one that does.
"""

from __future__ import annotations

import base64
import http.client
import io
import random
import re
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
# Statuses that mean "refused": nginx answers these itself, before anything is proxied (421: a
# Host that is not one of the stack's names; 413: a body over the limit; 429: over a limit).
REFUSED = frozenset({400, 401, 404, 405, 413, 414, 421, 429, 505})

METHODS = (
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT",
)
# Methods nginx refuses outright (405) whatever the path; every other token reaches auth.
REFUSED_METHODS = frozenset({"TRACE", "CONNECT"})


@dataclass(frozen=True)
class Target:
    """What really exists behind the proxy, and who may read it."""

    host: str  # Host header value, e.g. localhost:5443
    user: str
    password: str
    repository: str
    tag: str
    manifest_digest: str
    blob_digests: tuple[str, ...]
    # Bytes that appear only in the pushed content (a layer's file, the config): seeing them is a leak.
    canaries: tuple[bytes, ...] = ()

    def api_paths(self) -> list[str]:
        """Every kind of API path, for the repository, tag and blobs that exist."""
        repo = self.repository
        paths = [
            "/v2/",
            "/v2/_catalog",
            "/v2/_catalog?n=1000",
            f"/v2/{repo}/tags/list",
            f"/v2/{repo}/tags/list?n=10&last=",
            f"/v2/{repo}/manifests/{self.tag}",
            f"/v2/{repo}/manifests/{self.manifest_digest}",
            f"/v2/{repo}/blobs/uploads/",
            f"/v2/{repo}/blobs/uploads/?mount={self.blob_digests[0]}&from={repo}",
            f"/v2/{repo}/referrers/{self.manifest_digest}",
        ]
        paths += [f"/v2/{repo}/blobs/{digest}" for digest in self.blob_digests]
        return paths


@dataclass(frozen=True)
class Probe:
    """One request as sent on the wire."""

    family: str  # which trick, for the counts
    raw: bytes
    # (method, request-target) of each request on the connection (pipelining sends several).
    requests: tuple[tuple[str, str], ...]
    # A well-formed request for an API path: nginx must answer exactly 401.
    must_be_401: bool = False


@dataclass
class Response:
    status: int  # 0: HTTP/0.9 answer (body only), -1: no parsable answer
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


# --- building requests -----------------------------------------------------------------------


def basic(user: str, password: str, *, scheme: str = "Basic") -> str:
    return f"{scheme} " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _decoded_basic(value: str) -> bytes | None:
    parts = value.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    try:
        return base64.b64decode(parts[1].strip() + "==", validate=False)
    except ValueError:
        return None


def _guard(target: Target, headers: list[tuple[str, str]]) -> None:
    """Refuse to build a probe that carries the right credentials (it would not be a bypass).

    nginx checks the password with crypt(), which reads a C string: the right password followed
    by a NUL byte and anything else *is* the right password, so it counts as right here.
    """
    right = f"{target.user}:{target.password}".encode()
    for name, value in headers:
        if name.lower() == "authorization":
            decoded = _decoded_basic(value)
            if decoded is not None and decoded.split(b"\x00")[0] == right:
                raise AssertionError("a probe must never carry the right credentials")


def request_bytes(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"",
                  version: str = "HTTP/1.1") -> bytes:
    head = f"{method} {target} {version}\r\n" if version else f"{method} {target}\r\n"
    if not version:  # HTTP/0.9: the request line alone
        return head.encode("latin-1")
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (head + lines + "\r\n").encode("latin-1", errors="surrogateescape") + body


def wrong_authorizations(target: Target) -> list[tuple[str, str | None]]:
    """(label, Authorization header value or None for none) -- never the right credentials."""
    user, pw = target.user, target.password
    big = "A" * 9000
    values: list[tuple[str, str | None]] = [
        ("none", None),
        ("empty", ""),
        ("scheme only", "Basic"),
        ("scheme and space", "Basic "),
        ("not base64", "Basic !!!not*base64!!!"),
        ("base64 without colon", "Basic " + base64.b64encode(user.encode()).decode()),
        ("user, empty password", basic(user, "")),
        ("empty user, right password", basic("", pw)),
        ("colon only", basic("", "")),
        ("right user, wrong password", basic(user, "wrong-password-0123456789")),
        ("right user, password upper-cased", basic(user, pw.upper())),
        ("right user, password truncated", basic(user, pw[:-1])),
        ("right user, password + space", basic(user, pw + " ")),
        ("right user, password + newline", basic(user, pw + "\n")),
        ("user case changed", basic(user.capitalize() if user != user.capitalize() else user.upper(), pw)),
        ("user + space", basic(user + " ", pw)),
        ("user with ':' (user:x, password)", basic(f"{user}:x", pw)),
        ("user with ':' (x:user, password)", basic(f"x:{user}", pw)),
        ("':' before user", basic("", f"{user}:{pw}")),
        ("password doubled", basic(user, f"{pw}:{pw}")),
        ("other user, right password", basic("admin", pw)),
        ("base64url alphabet", "Basic " + base64.urlsafe_b64encode(f"{user}:wrong_pw?>>".encode()).decode()),
        ("base64 without padding", basic(user, "wrong-pw").rstrip("=")),
        ("Bearer token", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."),
        ("Digest", f'Digest username="{user}", realm="Registry realm", nonce="x", uri="/v2/", response="0"'),
        ("NTLM", "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="),
        ("Negotiate", "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnagMDAuBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICHgYKKwYBBAGCNwICCg=="),
        ("oversized base64", "Basic " + big),
        ("oversized, right user", basic(user, "x" * 6000)),
        ("basic lower-case, wrong password", basic(user, "nope-nope-nope", scheme="basic")),
        ("BASIC upper-case, wrong password", basic(user, "nope-nope-nope", scheme="BASIC")),
        ("two schemes", "Basic " + base64.b64encode(f"{user}:bad".encode()).decode() + ", Bearer x"),
    ]
    for _, value in values:
        if value is not None:
            _guard(target, [("Authorization", value)])
    return values


def _auth_headers(value: str | None) -> list[tuple[str, str]]:
    return [] if value is None else [("Authorization", value)]


# Path tricks: (label, function of an API path, whether nginx still sees the same API path).
def _encode_slashes(path: str) -> str:
    head, _, rest = path.partition("/v2/")
    return head + "/v2/" + rest.replace("/", "%2F") if rest else path.replace("/v2/", "/v2%2F")


def _encode_all(path: str) -> str:
    base, _, query = path.partition("?")
    return "".join(c if c == "/" else f"%{ord(c):02X}" for c in base) + (f"?{query}" if query else "")


def _dot_dot_encoded(path: str) -> str:
    return path.replace("/v2/", "/v2/x/%2e%2e/", 1)


PATH_TRICKS: list[tuple[str, object, bool]] = [
    ("as is", lambda p: p, True),
    ("leading double slash", lambda p: "/" + p, True),
    ("every slash doubled", lambda p: p.split("?")[0].replace("/", "//") + ("?" + p.split("?", 1)[1] if "?" in p else ""), True),
    ("'/./' inserted", lambda p: p.replace("/v2/", "/./v2/./", 1), True),
    ("'/x/../' inserted", lambda p: p.replace("/v2/", "/x/../v2/", 1), True),
    ("via /healthz/..", lambda p: "/healthz/.." + p, True),
    ("encoded slashes %2F", _encode_slashes, True),
    ("lower-case %2f", lambda p: _encode_slashes(p).replace("%2F", "%2f"), True),
    ("dot-dot encoded %2e%2e", _dot_dot_encoded, True),
    ("fully percent-encoded", _encode_all, True),
    ("double-encoded slash %252F", lambda p: _encode_slashes(p).replace("%2F", "%252F"), False),
    ("upper-case V2", lambda p: p.replace("/v2/", "/V2/", 1), False),
    ("upper-case path", lambda p: p.upper(), False),
    ("backslashes", lambda p: p.replace("/", "\\"), False),
    ("above the root /..", lambda p: "/.." + p, False),
    ("above the root /%2e%2e", lambda p: "/%2e%2e" + p, False),
    ("overlong UTF-8 slash %c0%af", lambda p: p.replace("/v2/", "/v2%c0%af", 1), False),
    ("NUL byte %00", lambda p: p + "%00", False),
    ("trailing ;param", lambda p: p.split("?")[0] + ";x=1", True),
    ("trailing #fragment", lambda p: p + "#frag", False),
    ("trailing %20", lambda p: p.split("?")[0] + "%20", True),
    ("absolute-form URI", lambda p: "https://localhost" + p, True),
    # Not one of the stack's names: the default server's 421, never the API.
    ("absolute-form, other host", lambda p: "http://registry:5000" + p, False),
]

# Paths around the API, not in it.
AROUND = [
    "/v2", "/v2..", "/v2../", "/v2../_catalog", "/v2.", "/v2%2F", "/v2%2f_catalog", "/v2;/_catalog", "/v2/..",
    "/v2/../", "/v2/../v2/_catalog", "/healthz/../v2/_catalog", "/healthz/%2e%2e/v2/_catalog",
    "/healthz%2F..%2Fv2/_catalog", "/healthz?/v2/_catalog", "/healthz/v2/_catalog", "/healthz/../../v2/_catalog",
    "/", "/v1/", "/v1/_catalog", "/v3/_catalog", "/_catalog", "/v2_catalog", "/%76%32/_catalog",
    "/v2%00/_catalog", "*", "/debug/vars", "/metrics", "/v2/%2e%2e/v2/_catalog", "/./v2/_catalog",
]


def _headers(target: Target, auth: str | None, extra: list[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    headers = [("Host", target.host), ("User-Agent", "security-probe/1"), ("Accept", ", ".join(MANIFEST_MEDIA_TYPES))]
    headers += _auth_headers(auth)
    headers += list(extra)
    headers.append(("Connection", "close"))
    _guard(target, headers)
    return headers


def _body_for(method: str) -> tuple[bytes, list[tuple[str, str]]]:
    if method in ("POST", "PUT", "PATCH"):
        body = b'{"schemaVersion": 2}'
        return body, [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))]
    return b"", []


def _probe(family: str, target: Target, method: str, path: str, auth: str | None = None,
           extra: list[tuple[str, str]] = (), must_be_401: bool = False, version: str = "HTTP/1.1") -> Probe:
    body, body_headers = _body_for(method)
    raw = request_bytes(method, path, _headers(target, auth, [*body_headers, *extra]), body, version)
    return Probe(family, raw, ((method, path),), must_be_401)


def tricky_probes(target: Target) -> list[Probe]:
    """The fixed list: every known trick against every kind of API path."""
    probes: list[Probe] = []
    api = target.api_paths()
    wrong_pw = basic(target.user, "wrong-password-0123456789")
    auths = wrong_authorizations(target)

    for method in METHODS:
        for path in api:
            probes.append(_probe(f"method {method}", target, method, path, must_be_401=method not in REFUSED_METHODS))
    probes += [_probe("method lower-case", target, m, p) for m in ("get", "Get", "hEAD") for p in api[:6]]
    probes += [_probe("method unknown token", target, m, p) for m in ("FOO", "G3T", "GETS") for p in api[:6]]

    for label, value in auths:
        oversized = value is not None and len(value) > 4000
        for path in api:
            methods = ("GET", "HEAD") if "/manifests/" in path or "/blobs/sha256:" in path else ("GET",)
            for method in methods:
                probes.append(_probe(f"auth {label}", target, method, path, value, must_be_401=not oversized))

    for label, trick, same_path in PATH_TRICKS:
        for path in api:
            for auth in (None, wrong_pw):
                probes.append(_probe(f"path {label}", target, "GET", trick(path), auth, must_be_401=same_path))

    for path in AROUND:
        for method in ("GET", "HEAD", "DELETE", "PUT"):
            for auth in (None, wrong_pw):
                probes.append(_probe("around /v2", target, method, path, auth))

    probes += _protocol_tricks(target, api, wrong_pw)
    return probes


def _protocol_tricks(target: Target, api: list[str], wrong_pw: str) -> list[Probe]:
    """Request framing, Host and forwarding headers, pipelining and smuggling attempts."""
    probes: list[Probe] = []
    catalog, manifest = "/v2/_catalog", f"/v2/{target.repository}/manifests/{target.tag}"
    for path in (catalog, manifest):
        base = [("Host", target.host), ("Connection", "close")]
        variants: list[tuple[str, list[tuple[str, str]], str, bool]] = [
            ("no Host header", [("Connection", "close")], "HTTP/1.1", False),
            ("HTTP/1.0 without Host", [], "HTTP/1.0", False),
            ("Host: registry:5000", [("Host", "registry:5000"), ("Connection", "close")], "HTTP/1.1", False),
            ("Host: 127.0.0.1", [("Host", "127.0.0.1"), ("Connection", "close")], "HTTP/1.1", True),
            ("two Host headers", [("Host", target.host), ("Host", "registry:5000"), ("Connection", "close")], "HTTP/1.1", False),
            ("X-Original-URL", [*base, ("X-Original-URL", path)], "HTTP/1.1", True),
            ("X-Rewrite-URL", [*base, ("X-Rewrite-URL", path)], "HTTP/1.1", True),
            ("X-Forwarded-For loopback", [*base, ("X-Forwarded-For", "127.0.0.1"), ("X-Real-IP", "127.0.0.1")], "HTTP/1.1", True),
            ("X-Forwarded-User", [*base, ("X-Forwarded-User", target.user), ("Remote-User", target.user)], "HTTP/1.1", True),
            ("Proxy-Authorization", [*base, ("Proxy-Authorization", wrong_pw)], "HTTP/1.1", True),
            ("two Authorization headers", [*base, ("Authorization", wrong_pw), ("Authorization", "Basic Og==")], "HTTP/1.1", False),
            ("obs-fold Authorization", [*base, ("Authorization", "Basic\r\n " + wrong_pw.split()[1])], "HTTP/1.1", False),
            ("oversized header", [*base, ("X-Pad", "p" * 20000)], "HTTP/1.1", False),
            ("HTTP/2.0 request line", base, "HTTP/2.0", False),
            ("HTTP/1.2 request line", base, "HTTP/1.2", False),
            ("Docker 1.5 user agent", [*base, ("User-Agent", "docker/1.5.0")], "HTTP/1.1", False),
            ("Go user agent", [*base, ("User-Agent", "Go 1.1 package http")], "HTTP/1.1", False),
        ]
        for label, headers, version, exact in variants:
            _guard(target, headers)
            raw = request_bytes("GET", path, headers, b"", version)
            probes.append(Probe(f"protocol {label}", raw, (("GET", path),), exact))
        # HTTP/0.9: a bare request line, no headers at all.
        probes.append(Probe("protocol HTTP/0.9", request_bytes("GET", path, [], b"", ""), (("GET", path),)))
        # A raw space and a CRLF inside the path.
        for label, bad in (("raw space in path", path.replace("/v2/", "/v2/ ", 1)),
                           ("CRLF in path", path + "\r\nX-Injected: 1")):
            probes.append(Probe(f"protocol {label}", request_bytes("GET", bad, base), (("GET", bad),)))
        # Pipelining: an allowed request first, then the forbidden one on the same connection.
        first = request_bytes("GET", "/healthz", [("Host", target.host)])
        second = request_bytes("GET", path, [("Host", target.host), ("Connection", "close")])
        probes.append(Probe("protocol pipelined after /healthz", first + second, (("GET", "/healthz"), ("GET", path))))
        # Smuggling: a body that is a request, framed two ways at once.
        inner = request_bytes("GET", path, [("Host", target.host)])
        smuggle_te_cl = (
            f"POST /healthz HTTP/1.1\r\nHost: {target.host}\r\nContent-Length: {len(inner) + 5}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        ).encode() + inner
        probes.append(Probe("protocol smuggling CL+TE", smuggle_te_cl, (("POST", "/healthz"), ("GET", path))))
        smuggle_cl = (
            f"POST /healthz HTTP/1.1\r\nHost: {target.host}\r\nContent-Length: {len(inner)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode() + inner + second
        probes.append(Probe("protocol body is a request", smuggle_cl, (("POST", "/healthz"), ("GET", path))))
        chunked = (
            f"PUT {path} HTTP/1.1\r\nHost: {target.host}\r\nAuthorization: {wrong_pw}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
        ).encode()
        probes.append(Probe("protocol chunked body", chunked, (("PUT", path),), True))
    return probes


_SEGMENTS = [
    "v2", "V2", "_catalog", "tags", "list", "manifests", "blobs", "uploads", "healthz", "..", ".", "%2e%2e",
    "%2E", "%2F", "%2f", "", "%00", "%20", "~", "x", "latest", "..%2F", "%2e", ";", "%5C", "*",
]


def _random_path(rng: random.Random, target: Target) -> str:
    if rng.random() < 0.6:
        path = rng.choice(target.api_paths())
        for _ in range(rng.randint(1, 3)):
            label, trick, _ = rng.choice(PATH_TRICKS)
            path = trick(path)
        return path
    segments = []
    for _ in range(rng.randint(1, 7)):
        pick = rng.random()
        if pick < 0.5:
            segments.append(rng.choice(_SEGMENTS))
        elif pick < 0.8:
            segments.append(rng.choice([target.repository, target.tag, target.manifest_digest, *target.blob_digests]))
        else:
            segments.append(quote(bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))), safe=""))
    path = "/" + "/".join(segments)
    if rng.random() < 0.2:
        path += "?" + rng.choice(["n=1", "last=", "mount=" + target.blob_digests[0], "x=/v2/_catalog", "%2F"])
    return path


def random_probes(target: Target, count: int, seed: int) -> list[Probe]:
    """``count`` random combinations of method, path trick, Authorization and extra headers."""
    rng = random.Random(seed)
    auths = [value for _, value in wrong_authorizations(target)]
    extras = [
        ("X-Forwarded-For", "127.0.0.1"), ("X-Original-URL", "/v2/_catalog"), ("Range", "bytes=0-10"),
        ("If-None-Match", "*"), ("Expect", "100-continue"), ("Cookie", "session=admin"),
        ("Origin", "https://evil.example"), ("Accept-Encoding", "gzip, br"), ("Docker-Distribution-Api-Version", "registry/2.0"),
    ]
    probes = []
    for _ in range(count):
        method = rng.choice(METHODS) if rng.random() < 0.9 else rng.choice(["get", "FOO", "M-SEARCH", "BREW"])
        path = _random_path(rng, target)
        auth = rng.choice(auths)
        extra = rng.sample(extras, rng.randint(0, 2))
        if method not in ("POST", "PUT", "PATCH"):
            extra = [h for h in extra if h[0] != "Expect"]
        version = "HTTP/1.1" if rng.random() < 0.9 else "HTTP/1.0"
        probes.append(_probe("random", target, method, path, auth, extra, version=version))
    return probes


# --- sending and judging ---------------------------------------------------------------------


class _Unclosable(io.BytesIO):
    def close(self) -> None:  # http.client closes its file when a response ends; keep reading after it
        pass


class _FakeSocket:
    def __init__(self, stream: io.BytesIO):
        self._stream = stream

    def makefile(self, *_args, **_kwargs):
        return self._stream


def parse_responses(raw: bytes, methods: tuple[str, ...]) -> list[Response]:
    """Every HTTP response in ``raw`` (what nginx wrote before closing), in order."""
    if not raw:
        return [Response(-1)]
    if not raw.startswith(b"HTTP/"):
        return [Response(0, body=raw)]
    stream = _Unclosable(raw)
    responses = []
    index = 0
    while stream.tell() < len(raw):
        if not raw[stream.tell():].startswith(b"HTTP/"):
            responses.append(Response(-1, body=raw[stream.tell():]))
            break
        method = methods[min(index, len(methods) - 1)]
        message = http.client.HTTPResponse(_FakeSocket(stream), method=method.upper())
        try:
            message.begin()
            body = message.read()
        except (http.client.HTTPException, ValueError):
            responses.append(Response(-1, body=raw[stream.tell():]))
            break
        responses.append(Response(message.status, list(message.getheaders()), body))
        index += 1
    return responses


def send(probe: Probe, address: tuple[str, int], context: ssl.SSLContext, server_name: str,
         timeout: float = 15.0) -> list[Response]:
    """Send the probe's bytes on a fresh TLS connection; read until nginx closes it."""
    chunks = []
    with socket.create_connection(address, timeout=timeout) as plain:
        with context.wrap_socket(plain, server_hostname=server_name) as tls:
            tls.sendall(probe.raw)
            while True:
                try:
                    data = tls.recv(65536)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not data:
                    break
                chunks.append(data)
    return parse_responses(b"".join(chunks), tuple(m for m, _ in probe.requests))


def leaks(response: Response, target: Target) -> list[str]:
    """What a response gave away about the registry's content or write access; empty if nothing."""
    found = []
    if response.header("Docker-Content-Digest"):
        found.append("Docker-Content-Digest header")
    if response.header("Docker-Upload-UUID") or any("/blobs/uploads/" in v for v in response.header("Location")):
        found.append("an upload session")
    content_type = " ".join(response.header("Content-Type")).lower()
    if any(media in content_type for media in MANIFEST_MEDIA_TYPES):
        found.append(f"manifest Content-Type {content_type}")
    if 200 <= response.status < 300 and response.body:
        found.append(f"a {response.status} with a {len(response.body)}-byte body")
    body = response.body
    markers = {
        b'"tags"': "a tag list",
        b'"repositories"': "a catalog",
        b'"schemaVersion"': "a manifest",
        b'"layers"': "a manifest",
        target.repository.encode(): "the repository name",
        target.manifest_digest.split(":")[1].encode(): "the manifest digest",
    }
    markers.update({d.split(":")[1].encode(): "a blob digest" for d in target.blob_digests})
    markers.update({canary: "pushed content" for canary in target.canaries})
    for marker, what in markers.items():
        if marker and marker in body:
            found.append(f"{what} in the body")
    return found


def normalised_path(target: str) -> str:
    """The path nginx routes on: decoded once, slashes merged, dot segments resolved (best effort)."""
    if "://" in target:
        target = urlsplit(target).path or "/"
    path = unquote(target.split("?")[0].split("#")[0])
    out: list[str] = []
    for segment in re.sub("/+", "/", path).split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return "/" + "/".join(out)


def judge(probe: Probe, responses: list[Response], target: Target) -> list[str]:
    """Problems with the answers to one probe: a leak, an unexpected status, or no 401 where one is due."""
    problems = []
    for response in responses:
        problems += leaks(response, target)
    first = responses[0]
    if first.status == 0:
        # HTTP/0.9 has no status line; nginx's error page says what it was.
        if not re.search(rb"<title>(400|401|404|405|421) ", first.body):
            problems.append(f"HTTP/0.9 answer is not an error page: {first.body[:80]!r}")
        return problems
    if probe.must_be_401 and first.status != 401:
        problems.append(f"status {first.status}, expected 401")
    for response, (method, request_target) in zip(responses, probe.requests):
        status = response.status
        if status in REFUSED:
            continue
        where = normalised_path(request_target)
        if status == 200 and not response.body and where == "/healthz":
            continue  # the unauthenticated health check answers 200 with an empty body
        if status == 301 and where == "/v2" and all(v.endswith("/v2/") for v in response.header("Location")):
            continue  # nginx's own redirect of /v2 to /v2/ (which then wants credentials)
        problems.append(f"status {status} to {method} {request_target[:80]!r}")
    return problems
