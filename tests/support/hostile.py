"""Hostile setting values and the tools that check what becomes of them.

``FRAGMENTS`` are the pieces a hostile user types (control characters, quotes, command
substitution, nginx and shell metacharacters, Unicode look-alikes, zone ids, very long text);
``corpus()`` puts each of them, alone, before and after a valid value, into every string
setting of ``TARGETS``. ``nginx_directives`` reads nginx.conf the way nginx tokenizes it, so a
test can compare the ``server_name`` tokens and ``location``s with what was configured.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.ports import free_port

# A command a hostile value tries to run; the file it would create must never appear.
# Fixed length (the PID zero-padded), so which values fit a length limit never depends on the PID.
CANARY = Path(f"/tmp/private-registry-hostile-canary-{os.getpid():07d}")
PASSWORD = "Corr3ct-horse-battery-staple-42"
DIGEST = "sha256:" + "ab" * 32
PINNED = f"registry:2.8.3@{DIGEST}"

FRAGMENTS: dict[str, str] = {
    "newline": "\n",
    "carriage return": "\r",
    "NUL": "\x00",
    "tab": "\t",
    "escape": "\x1b[2J",
    "DEL": "\x7f",
    "C1 NEL": "\x85",
    "line separator": "\u2028",
    "space": " ",
    "single quote": "'",
    "double quote": '"',
    "backslash": "\\",
    "command substitution": f"$(touch {CANARY})",
    "backticks": f"`touch {CANARY}`",
    "parameter expansion": "${IFS}",
    "semicolon": ";",
    "pipe": f"|touch {CANARY}",
    "ampersand": "&",
    "redirect": f">{CANARY}",
    "braces": "{}",
    "hash": "#",
    "nginx location injection": "; location ~ / { return 200; } #",
    "heredoc terminator": "\nPRIVATE_REGISTRY_CA_PEM\n",
    "zone id": "%eth0",
    "zone id injection": "%eth0;location/{}",
    "path traversal": "/../../etc/x",
    "glob": "*?[",
    "TOML injection": '"\n[host."https://evil"]\nx = "',
    "Kelvin sign": "\u212a",
    "Cyrillic a": "\u0430",
    "zero-width space": "\u200b",
    "fullwidth colon": "\uff1a",
    "colon": ":",
    "at": "@",
    "percent": "%",
    "very long": "a" * 300,
}


def own_ca_pem() -> tuple[str, str]:
    """A valid CA certificate and its key (P-256, valid for 1000 days from now)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hostile test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


CA_CERT, CA_KEY = own_ca_pem()
SECRET_KEYS = frozenset({"users", "caPrivateKeyPem", "trust"})


def base_config() -> dict:
    """A valid config that gives every string setting a place to be: users, a brought CA, a
    remote and a local trust target, deletion and retention rules (GC off, so sshOpts may be set)."""
    return {
        "hosts": ["registry.example.com"],
        "ips": ["10.0.0.5"],
        "bindAddress": "127.0.0.1",
        "httpsPort": 5443,
        "users": {"alice": PASSWORD},
        "defaultUser": "admin",
        "certificate": {"organization": "Example Org", "keyAlgorithm": "ECDSA-P256"},
        "caCertificatePem": CA_CERT,
        "caPrivateKeyPem": CA_KEY,
        "images": {"registry": PINNED, "nginx": f"nginx:1.28@{DIGEST}"},
        "volume": {"name": "images"},
        "docker": {"host": "ssh://deploy@docker.example.com", "sshOpts": ["-oBatchMode=yes"]},
        "namePrefix": "reg",
        "trust": [
            {"name": "here", "kinds": ["docker", "containerd"]},
            {"name": "there", "host": "build.example.com", "user": "ops", "kinds": ["podman"]},
        ],
        "maintenance": {
            "deletions": [{"repository": "team/app", "tags": ["v1"], "digests": [DIGEST]}],
            "retention": [{"repositories": "team/*", "keepPatterns": ["^v1$"], "keepYoungerThan": "30d"}],
            "gc": {"enabled": False, "mode": "readonly"},
        },
    }


def _at(path: tuple) -> Callable[[dict, Any], None]:
    def put(config: dict, value: Any) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return put


def _user_name(config: dict, value: str) -> None:
    config["users"] = {value: PASSWORD}


@dataclass(frozen=True)
class Target:
    """One string setting: its config path (as errors name it), a valid value, how to set it."""

    path: str
    valid: str
    put: Callable[[dict, Any], None]


def _target(path: str, valid: str, put: Callable[[dict, Any], None] | None = None) -> Target:
    keys: list[Any] = []
    for part in re.findall(r"[A-Za-z]+|\[\d+\]", path):
        keys.append(int(part[1:-1]) if part.startswith("[") else part)
    return Target(path, valid, put or _at(tuple(keys)))


TARGETS: tuple[Target, ...] = (
    _target("hosts[0]", "registry.example.com"),
    _target("ips[0]", "10.0.0.5"),
    _target("bindAddress", "127.0.0.1"),
    _target("users", "alice", _user_name),
    _target("users.alice", PASSWORD),
    _target("defaultUser", "admin"),
    _target("certificate.organization", "Example Org"),
    _target("certificate.keyAlgorithm", "ECDSA-P256"),
    _target("caCertificatePem", CA_CERT),
    _target("images.registry", PINNED),
    _target("images.nginx", f"nginx:1.28@{DIGEST}"),
    _target("volume.name", "images"),
    _target("docker.host", "ssh://deploy@docker.example.com"),
    _target("docker.sshOpts[0]", "-oBatchMode=yes"),
    _target("namePrefix", "reg"),
    _target("trust[0].name", "here"),
    _target("trust[1].host", "build.example.com"),
    _target("trust[1].user", "ops"),
    _target("trust[0].kinds[0]", "docker"),
    _target("maintenance.deletions[0].repository", "team/app"),
    _target("maintenance.deletions[0].tags[0]", "v1"),
    _target("maintenance.deletions[0].digests[0]", DIGEST),
    _target("maintenance.retention[0].repositories", "team/*"),
    _target("maintenance.retention[0].keepPatterns[0]", "^v1$"),
    _target("maintenance.retention[0].keepYoungerThan", "30d"),
    _target("maintenance.gc.mode", "readonly"),
)


@dataclass(frozen=True)
class Case:
    target: Target
    fragment: str  # the FRAGMENTS key
    placement: str  # "alone", "before" or "after" the valid value
    value: str

    def config(self) -> dict:
        config = copy.deepcopy(base_config())
        self.target.put(config, self.value)
        return config


def hostile_values(valid: str, fragment: str) -> Iterator[tuple[str, str]]:
    yield "alone", fragment
    yield "before", fragment + valid
    yield "after", valid + fragment


def corpus() -> list[Case]:
    """Every fragment alone, before and after a valid value, in every target setting."""
    return [
        Case(target, name, placement, value)
        for target in TARGETS
        for name, fragment in FRAGMENTS.items()
        for placement, value in hostile_values(target.valid, fragment)
    ]


# --- nginx.conf as nginx reads it -----------------------------------------------------------

_TOKEN = re.compile(r"""\s+|#[^\n]*|"((?:\\.|[^"\\])*)"|'((?:\\.|[^'\\])*)'|([{};])|((?:\\.|[^\s{};"'])+)""", re.S)


def nginx_tokens(text: str) -> list[str]:
    """nginx's tokens: words, quoted strings (unquoted), '{', '}', ';'; comments dropped."""
    tokens: list[str] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"nginx.conf does not tokenize at {text[position:position + 40]!r}")
        position = match.end()
        for group in match.groups():
            if group is not None:
                tokens.append(group)
                break
    return tokens


def nginx_directives(text: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every directive as (enclosing block names, words), e.g. (('http', 'server'), ('server_name', 'a'))."""
    out: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    stack: list[str] = []
    words: list[str] = []
    for token in nginx_tokens(text):
        if token == ";":
            out.append((tuple(stack), tuple(words)))
            words = []
        elif token == "{":
            out.append((tuple(stack), tuple(words)))
            stack.append(" ".join(words))
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token)
    return out


def server_names(text: str) -> list[list[str]]:
    return [list(words[1:]) for _, words in nginx_directives(text) if words and words[0] == "server_name"]


def locations(text: str) -> list[str]:
    return [" ".join(words[1:]) for _, words in nginx_directives(text) if words and words[0] == "location"]


def localize_nginx_conf(conf: str, root: Path, upstream: str) -> tuple[str, dict[str, int]]:
    """The rendered config runnable by an unprivileged nginx under ``root``: every absolute
    path moved under it, every TCP ``listen`` moved to a free loopback port (returned, by the
    original address), the registry upstream pointed at ``upstream``. Only file locations,
    sockets and the upstream change; server names, locations and auth stay as rendered."""
    ports: dict[str, int] = {}

    def listen(match: re.Match) -> str:
        address = match.group(1)
        if address.startswith("unix:"):
            return match.group(0)
        ports[address] = free_port()
        return f"listen 127.0.0.1:{ports[address]}"

    conf = re.sub(r"listen\s+([^\s;]+)", listen, conf)
    conf = re.sub(r"(?<=[\s:])/(etc|tmp|run|var)/", lambda m: f"{root}/{m.group(1)}/", conf)
    conf = re.sub(r"\bregistry:5000\b", upstream, conf)
    return conf, ports


# --- every setting, from the models themselves --------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One place in the settings tree: ``path`` as errors name it (camelCase keys, ``[0]`` for a
    list's first item, ``.k1`` for a map's entry), ``keys`` to put a value there, and ``kind``:
    'object' (a settings model), 'map' (names to values), 'list', or 'value'."""

    path: str
    keys: tuple
    kind: str
    model: Any = None  # the model of an 'object'


def _unwrap(annotation: Any) -> Any:
    import types
    import typing

    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def setting_nodes(model: Any = None, path: str = "", keys: tuple = ()) -> list[Node]:
    """Every node of the settings tree under ``model`` (default: the whole of Settings but its
    two internal fields, ``stack`` and ``now``), walked from the pydantic models' own fields."""
    import typing

    from components.settings import Settings

    model = model or Settings
    nodes: list[Node] = []

    def walk(annotation: Any, here: str, at: tuple) -> None:
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if hasattr(annotation, "__pydantic_fields__"):
            nodes.append(Node(here, at, "object", annotation))
            for name, info in annotation.__pydantic_fields__.items():
                if annotation is Settings and name in ("stack", "now"):
                    continue
                alias = info.alias or name
                walk(info.annotation, f"{here}.{alias}" if here else alias, at + (alias,))
        elif origin is tuple:
            nodes.append(Node(here, at, "list"))
            walk(typing.get_args(annotation)[0], f"{here}[0]", at + (0,))
        elif origin is dict:
            nodes.append(Node(here, at, "map"))
            walk(typing.get_args(annotation)[1], f"{here}.k1", at + ("k1",))
        else:
            nodes.append(Node(here, at, "value"))

    walk(model, path, keys)
    return [n for n in nodes if n.path]


def put_at(config: dict, keys: tuple, value: Any) -> dict:
    """``config`` with ``value`` at ``keys``, making the maps and lists on the way (a list gets
    its first item, a map the entry): the rest of ``config`` as it was."""
    node: Any = config
    for key, following in zip(keys[:-1], keys[1:]):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(key, int):
            if not node:
                node.append(empty)
            elif not isinstance(node[0], type(empty)):
                node[0] = empty
            node = node[0]
        else:
            if not isinstance(node.get(key), type(empty)):
                node[key] = empty
            node = node[key]
    last = keys[-1]
    if isinstance(last, int):
        node[:] = [value]
    else:
        node[last] = value
    return config
