"""Real registry clients, each driven as a user would drive it, and what each may do.

Five clients from Debian's packages talk to a deployed stack: the Docker client (through the
shared dockerd), podman, buildah, skopeo and containerd's ``ctr`` (through dockerd's containerd);
three more are built from their Go modules by scripts/install-go-tools.sh (found by
:func:`go_tool`): crane, regctl and oras; cosign (:class:`Cosign`) signs and verifies.
Each :class:`Client` gets its own state, so tests never touch another user's: a private
``DOCKER_CONFIG``, podman/buildah storage roots and auth files under a temporary folder, a
containerd namespace of its own. Every operation returns an :class:`Outcome` (exit status and
output); nothing here decides whether an outcome is right. That is the :class:`Policy`'s job: it
states, per identity and action, whether the stack must allow it, so the same test asserts
today's basic-auth stack (one user allowed everything; a wrong password or no login denied) and
a token-auth stack with access rules (a reader that may pull but not push, anonymous pulls of
public repositories).

A denial only counts when the client says why: its output must name an authentication or
authorization failure (401, 403, ``unauthorized``, ``denied``...), so a TLS or network error
cannot pass for a refusal.

Trust: docker reads ``/etc/docker/certs.d/ADDRESS/ca.crt`` (created and removed by
:func:`docker_trust`); podman, buildah and skopeo get ``--cert-dir``; ctr gets ``--hosts-dir``
holding ``ADDRESS/hosts.toml`` that names the CA; crane and cosign read ``SSL_CERT_FILE`` (the
system's CAs plus the stack's, :func:`ca_bundle`), regctl its config (``registry set
--cacert``), oras ``--ca-file``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from tests.support.go_tools import go_tool

# dockerd's own containerd (what it starts when no system containerd runs), else the system one.
CONTAINERD_SOCKET = next(
    (path for path in ("/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock")
     if os.path.exists(path)),
    "/run/docker/containerd/containerd.sock",
)
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
TIMEOUT = 180

ACTIONS = ("login", "push", "pull", "delete")
# What a client prints when the registry (or its token service) refuses who is asking.
DENIAL = re.compile(
    r"\b(401|403)\b|unauthori[sz]ed|denied|forbidden|authentication required|no basic auth credentials"
    r"|incorrect username or password|invalid username/password|insufficient_scope|authorization failed"
    # oras, answered 401 with a Basic challenge while it holds no credentials for the registry.
    r"|basic credential not found",
    re.IGNORECASE,
)


SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ca_bundle(path: Path, ca_file: Path) -> Path:
    """The system's CA certificates plus the stack's CA in one PEM file, what Go programs read
    from ``SSL_CERT_FILE`` in place of the system bundle (a user trusting one more CA)."""
    system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.exists() else ""
    path.write_text(system.rstrip("\n") + "\n" + ca_file.read_text())
    return path


def pulled_layout_digest(layout: Path, marker: Optional[str]) -> Optional[str]:
    """The manifest digest an OCI layout's index names, if the manifest stored there hashes to
    it and (``marker`` given) one of its layers holds a file of exactly ``marker``'s bytes."""
    import hashlib
    import io

    from tests.support import oci

    try:
        digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        raw = oci.read_blob(layout, digest)
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            return None
        if marker is None:
            return digest
        for layer in json.loads(raw)["layers"]:
            with tarfile.open(fileobj=io.BytesIO(oci.read_blob(layout, layer["digest"]))) as tar:
                for member in tar.getmembers():
                    if member.isfile() and tar.extractfile(member).read() == marker.encode():
                        return digest
    except (OSError, ValueError, KeyError, IndexError, tarfile.TarError):
        return None
    return None


@dataclass(frozen=True)
class Identity:
    """Who a client acts as: ``user`` None is anonymous (no login at all)."""

    name: str
    user: Optional[str] = None
    password: Optional[str] = None

    @property
    def anonymous(self) -> bool:
        return self.user is None


@dataclass(frozen=True)
class Policy:
    """The auth mode of a stack and what each identity may do there.

    ``allowed`` maps identity name to the set of actions ("login", "push", "pull", "delete") the
    stack must allow it on the test repositories; any action not listed must be denied.
    ``identities`` are the identities the tests act as, by name.
    """

    mode: str
    identities: dict[str, Identity]
    allowed: dict[str, frozenset[str]]
    # Repositories the tests create: ``<prefix>/<client>-<random>``; the rules above hold there.
    repository_prefix: str = "clients"

    def may(self, identity: str, action: str) -> bool:
        assert action in ACTIONS, action
        return action in self.allowed.get(identity, frozenset())

    def writer(self) -> Identity:
        """An identity allowed to log in, push, pull and delete (sets up what others pull)."""
        return next(self.identities[name] for name, actions in self.allowed.items() if set(ACTIONS) <= actions)


def basic_policy(user: str, password: str, wrong_password: str) -> Policy:
    """Today's stack: basic auth on every /v2/ path, every user allowed everything; a wrong
    password and no credentials at all get nothing (not even a pull)."""
    return Policy(
        mode="basic",
        identities={
            "writer": Identity("writer", user, password),
            "wrong-password": Identity("wrong-password", user, wrong_password),
            "anonymous": Identity("anonymous"),
        },
        allowed={"writer": frozenset(ACTIONS), "wrong-password": frozenset(), "anonymous": frozenset()},
    )


def token_policy(writer: tuple[str, str], reader: tuple[str, str], wrong_password: str,
                 anonymous_pull: bool, repository_prefix: str) -> Policy:
    """A token-auth stack whose access rules give ``writer`` push, pull and delete and ``reader``
    pull only on ``repository_prefix/**``, and anonymous clients pull there iff ``anonymous_pull``.
    Logging in needs only a valid password; what a token grants is decided per repository."""
    return Policy(
        mode="token",
        identities={
            "writer": Identity("writer", *writer),
            "reader": Identity("reader", *reader),
            "wrong-password": Identity("wrong-password", writer[0], wrong_password),
            "anonymous": Identity("anonymous"),
        },
        allowed={"writer": frozenset(ACTIONS), "reader": frozenset({"login", "pull"}),
                 "wrong-password": frozenset(), "anonymous": frozenset({"pull"} if anonymous_pull else ())},
        repository_prefix=repository_prefix,
    )


@dataclass
class Outcome:
    """What a client did: its exit status and combined output (credentials never included)."""

    command: str
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def denied(self) -> bool:
        """Failed, and said it was refused for who is asking (not for TLS, network, a typo)."""
        return not self.ok and DENIAL.search(self.output) is not None

    def __str__(self) -> str:
        return f"{self.command}: exit {self.returncode}: {self.output.strip()[-1500:]}"


def _run(args: list[str], *, label: str, env: Optional[dict] = None, input: Optional[str] = None,
         secrets: tuple[str, ...] = (), cwd: Optional[Path] = None) -> Outcome:
    merged = dict(os.environ)
    merged.pop("AWS_CA_BUNDLE", None)
    merged.update(env or {})
    try:
        done = subprocess.run(args, input=input, capture_output=True, text=True, env=merged, timeout=TIMEOUT,
                              cwd=cwd)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"timed out after {TIMEOUT}s: {exc.stderr or ''}", 124
    for secret in secrets:
        if secret:
            output = output.replace(secret, "***")
    return Outcome(label, code, output)


def make_rootfs_tar(path: Path, marker: str) -> Path:
    """A one-file root filesystem (``/marker.txt`` holding ``marker``) as a tar archive: the
    content of an image built FROM scratch, unique per test run so every push sends new bytes."""
    source = path.with_suffix(".d")
    source.mkdir(parents=True, exist_ok=True)
    (source / "marker.txt").write_text(marker + "\n")
    with tarfile.open(path, "w") as tar:
        tar.add(source / "marker.txt", arcname="marker.txt")
    return path


class Client:
    """One real client with private state under ``home``. Subclasses implement the actions."""

    name = "client"
    # True when the client sends the credentials it was given on every request (no stored
    # login): after a refused login it keeps trying them. Otherwise a refused login stores
    # nothing and the client goes on anonymously.
    sends_given_credentials = False
    # True when the client's login asks the registry whether the password is right (a wrong
    # one is refused there and then); False when login only records the identity and the
    # refusals come at push and pull.
    login_checks_credentials = True

    def __init__(self, home: Path, address: str, cert_dir: Path):
        self.home = home / self.name
        self.home.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.cert_dir = cert_dir
        self.identity: Optional[Identity] = None

    def ref(self, repository: str, tag: str) -> str:
        return f"{self.address}/{repository}:{tag}"

    # Each returns an Outcome; build() makes a local image holding ``marker`` named ``ref``.
    def build(self, ref: str, marker: str) -> Outcome:
        raise NotImplementedError

    def login(self, identity: Identity) -> Outcome:
        raise NotImplementedError

    def logout(self) -> None:
        self.identity = None

    def push(self, ref: str) -> Outcome:
        raise NotImplementedError

    def pull(self, ref: str) -> Outcome:
        """Pull ``ref`` afresh (any local copy removed first)."""
        raise NotImplementedError

    def content_digest(self, ref: str) -> Optional[str]:
        """The manifest digest of the local image ``ref`` as the registry named it, if known."""
        return None

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class DockerClient(Client):
    """The docker CLI against the shared dockerd, with a private ``DOCKER_CONFIG`` (so logins
    stay in this test's folder). The daemon does the registry I/O and trusts the CA through
    ``/etc/docker/certs.d/ADDRESS/ca.crt`` (see :func:`docker_trust`)."""

    name = "docker"

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.env = {"DOCKER_CONFIG": str(self.home / "config")}
        self.images: set[str] = set()

    def _docker(self, *args: str, input: Optional[str] = None, secrets=()) -> Outcome:
        return _run(["docker", *args], label=f"docker {args[0]}", env=self.env, input=input, secrets=secrets)

    def build(self, ref: str, marker: str) -> Outcome:
        context = self.home / f"ctx-{uuid.uuid4().hex[:6]}"
        context.mkdir()
        (context / "marker.txt").write_text(marker + "\n")
        (context / "Dockerfile").write_text("FROM scratch\nCOPY marker.txt /marker.txt\n")
        self.images.add(ref)
        return _run(["docker", "build", "-q", "-t", ref, str(context)], label="docker build", env=self.env)

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        return self._docker("login", self.address, "--username", identity.user, "--password-stdin",
                            input=identity.password, secrets=(identity.password,))

    def logout(self) -> None:
        self._docker("logout", self.address)
        super().logout()

    def push(self, ref: str) -> Outcome:
        return self._docker("push", ref)

    def pull(self, ref: str) -> Outcome:
        self._docker("rmi", "-f", ref)
        self.images.add(ref)
        return self._docker("pull", ref)

    def content_digest(self, ref: str) -> Optional[str]:
        out = self._docker("inspect", "--format", "{{json .RepoDigests}}", ref)
        if not out.ok:
            return None
        repository = ref.rsplit(":", 1)[0]
        digests = [d.split("@", 1)[1] for d in json.loads(out.output) if d.startswith(repository + "@")]
        return digests[0] if digests else None

    def cleanup(self) -> None:
        for ref in self.images:
            self._docker("rmi", "-f", ref)
        super().cleanup()


class _ContainersClient(Client):
    """podman and buildah: containers/storage under a private root (vfs driver, no overlay
    mounts), a private auth file, the CA through ``--cert-dir``."""

    tool = ""

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.authfile = self.home / "auth.json"
        self._empty_authfile()
        # containers/storage refuses a run root path longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/tmp"))
        self.storage = ["--root", str(self.home / "root"), "--runroot", str(self.runroot),
                        "--storage-driver", "vfs"]
        # Isolated from the machine's registries.conf: only the fully qualified names tests use.
        conf = self.home / "registries.conf"
        conf.write_text("unqualified-search-registries = []\n")
        (self.home / "xdg").mkdir(exist_ok=True)
        self.env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "XDG_RUNTIME_DIR": str(self.home / "xdg")}

    def _empty_authfile(self) -> None:
        if not self.authfile.exists():
            self.authfile.write_text('{"auths": {}}\n')
            self.authfile.chmod(0o600)

    def _tool(self, *args: str, input: Optional[str] = None, secrets=()) -> Outcome:
        return _run([self.tool, *self.storage, *args], label=f"{self.tool} {args[0]}", env=self.env,
                    input=input, secrets=secrets)

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        return self._tool("login", "--authfile", str(self.authfile), "--cert-dir", str(self.cert_dir),
                          "--username", identity.user, "--password-stdin", self.address,
                          input=identity.password, secrets=(identity.password,))

    def logout(self) -> None:
        self._tool("logout", "--authfile", str(self.authfile), "--all")
        self._empty_authfile()
        super().logout()

    def push(self, ref: str) -> Outcome:
        return self._tool("push", "--authfile", str(self.authfile), "--cert-dir", str(self.cert_dir), ref)

    def cleanup(self) -> None:
        # vfs layers are plain directories; the storage root holds nothing mounted.
        self._tool("rmi", "--all", "--force")
        shutil.rmtree(self.runroot, ignore_errors=True)
        super().cleanup()


class PodmanClient(_ContainersClient):
    name = tool = "podman"

    def build(self, ref: str, marker: str) -> Outcome:
        rootfs = make_rootfs_tar(self.home / f"rootfs-{uuid.uuid4().hex[:6]}.tar", marker)
        return self._tool("import", str(rootfs), ref)

    def pull(self, ref: str) -> Outcome:
        self._tool("rmi", "--force", ref)
        return self._tool("pull", "--authfile", str(self.authfile), "--cert-dir", str(self.cert_dir), ref)

    def content_digest(self, ref: str) -> Optional[str]:
        out = self._tool("image", "inspect", "--format", "{{.Digest}}", ref)
        return out.output.strip() if out.ok else None


class BuildahClient(_ContainersClient):
    name = tool = "buildah"

    def build(self, ref: str, marker: str) -> Outcome:
        made = self._tool("from", "--name", f"clients-{uuid.uuid4().hex[:8]}", "scratch")
        if not made.ok:
            return made
        container = made.output.strip().splitlines()[-1]
        source = self.home / f"marker-{uuid.uuid4().hex[:6]}.txt"
        source.write_text(marker + "\n")
        for step in (("copy", container, str(source), "/marker.txt"), ("commit", "--quiet", container, ref)):
            out = self._tool(*step)
            if not out.ok:
                return out
        self._tool("rm", container)
        return out

    def pull(self, ref: str) -> Outcome:
        self._tool("rmi", "--force", ref)
        return self._tool("pull", "--authfile", str(self.authfile), "--cert-dir", str(self.cert_dir), ref)

    def content_digest(self, ref: str) -> Optional[str]:
        out = self._tool("images", "--json", "--digests", ref)
        if not out.ok:
            return None
        images = json.loads(out.output)
        return images[0].get("digest") if images else None


class SkopeoClient(Client):
    """skopeo: login into a private auth file (``--authfile``), copy from and to OCI layouts,
    inspect, delete. Anonymous means no auth file and no credentials at all."""

    name = "skopeo"
    sends_given_credentials = True

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.authfile = self.home / "auth.json"
        self.layouts = self.home / "layouts"
        self.logged_in = False

    def _skopeo(self, *args: str, input: Optional[str] = None, secrets=()) -> Outcome:
        return _run(["skopeo", *args], label=f"skopeo {args[0]}", input=input, secrets=secrets,
                    env={"REGISTRY_AUTH_FILE": str(self.authfile)})

    def _auth(self, prefix: str = "") -> tuple[list[str], tuple[str, ...]]:
        """Arguments naming the credentials, and the secrets among them: the auth file after a
        successful login, else the identity's credentials as given (a wrong password is sent
        as is), else none at all."""
        if self.identity is None or self.identity.anonymous:
            return [f"--{prefix}no-creds"], ()
        if self.logged_in:
            return ["--authfile", str(self.authfile)], ()
        return [f"--{prefix}creds", f"{self.identity.user}:{self.identity.password}"], (self.identity.password,)

    def _layout(self, ref: str) -> str:
        return f"oci:{self.layouts / re.sub(r'[^A-Za-z0-9]+', '-', ref)}:latest"

    def build(self, ref: str, marker: str) -> Outcome:
        from tests.support import oci

        layout = self.layouts / re.sub(r"[^A-Za-z0-9]+", "-", ref)
        oci.write_image(layout, "latest", [marker.encode()], seed=marker)
        return Outcome("skopeo build (OCI layout)", 0, str(layout))

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        out = self._skopeo("login", "--authfile", str(self.authfile), "--cert-dir", str(self.cert_dir),
                           "--username", identity.user, "--password-stdin", self.address,
                           input=identity.password, secrets=(identity.password,))
        self.logged_in = out.ok
        return out

    def logout(self) -> None:
        self._skopeo("logout", "--authfile", str(self.authfile), "--all")
        self.logged_in = False
        super().logout()

    def push(self, ref: str) -> Outcome:
        auth, secrets = self._auth("dest-")
        return self._skopeo("copy", "--quiet", *auth, "--dest-cert-dir", str(self.cert_dir),
                            self._layout(ref), f"docker://{ref}", secrets=secrets)

    def pull(self, ref: str) -> Outcome:
        target = self.home / f"pulled-{uuid.uuid4().hex[:6]}"
        auth, secrets = self._auth("src-")
        out = self._skopeo("copy", "--quiet", "--preserve-digests", *auth, "--src-cert-dir", str(self.cert_dir),
                           f"docker://{ref}", f"oci:{target}:latest", secrets=secrets)
        if out.ok:
            index = json.loads((target / "index.json").read_text())
            self._pulled = {ref: index["manifests"][0]["digest"]}
        return out

    def inspect(self, ref: str) -> Outcome:
        auth, secrets = self._auth()
        return self._skopeo("inspect", "--raw", *auth, "--cert-dir", str(self.cert_dir), f"docker://{ref}",
                            secrets=secrets)

    def delete(self, ref: str, identity: Identity) -> Outcome:
        """Delete the manifest ``ref`` points to, as ``identity`` (``--creds``: the throwaway
        password of a test stack; anonymous sends none)."""
        auth = ["--no-creds"] if identity.anonymous else ["--creds", f"{identity.user}:{identity.password}"]
        return self._skopeo("delete", *auth, "--cert-dir", str(self.cert_dir), f"docker://{ref}",
                            secrets=(identity.password or "",))

    def content_digest(self, ref: str) -> Optional[str]:
        return getattr(self, "_pulled", {}).get(ref)


class CtrClient(Client):
    """containerd's ``ctr`` against dockerd's containerd, in a namespace of its own, trusting
    the CA through ``--hosts-dir`` (``ADDRESS/hosts.toml`` naming ``ca.crt``). ctr has no login:
    each push and pull passes ``--user user:password`` (a throwaway test password; ctr's other
    way is an interactive terminal prompt)."""

    name = "ctr"
    sends_given_credentials = True
    login_checks_credentials = False

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.namespace = f"clients-{uuid.uuid4().hex[:8]}"
        self.hosts_dir = self.home / "hosts"
        host_dir = self.hosts_dir / address
        host_dir.mkdir(parents=True)
        shutil.copy(cert_dir / "ca.crt", host_dir / "ca.crt")
        # The file the program's trust script installs in /etc/containerd/certs.d.
        from components.render.trust import containerd_hosts_toml

        (host_dir / "hosts.toml").write_text(containerd_hosts_toml(address, str(host_dir / "ca.crt")))

    def _ctr(self, *args: str, secrets=()) -> Outcome:
        return _run(["ctr", "--address", CONTAINERD_SOCKET, "--namespace", self.namespace, *args],
                    label=f"ctr {' '.join(args[:2])}", secrets=secrets)

    def _remote(self) -> list[str]:
        args = ["--hosts-dir", str(self.hosts_dir)]
        if self.identity and not self.identity.anonymous:
            args += ["--user", f"{self.identity.user}:{self.identity.password}"]
        return args

    def _secrets(self) -> tuple[str, ...]:
        return (self.identity.password,) if self.identity and self.identity.password else ()

    def build(self, ref: str, marker: str) -> Outcome:
        """An OCI image written by tests/support/oci.py, tarred and imported under ``ref``."""
        from tests.support import oci

        layout = self.home / f"layout-{uuid.uuid4().hex[:6]}"
        oci.write_image(layout, ref, [marker.encode()], seed=marker)
        archive = layout.with_suffix(".tar")
        with tarfile.open(archive, "w") as tar:
            for item in sorted(layout.iterdir()):
                tar.add(item, arcname=item.name)
        return self._ctr("images", "import", "--no-unpack", str(archive))

    def login(self, identity: Identity) -> Outcome:
        """ctr keeps no login: the identity is used on every later push and pull."""
        self.identity = identity
        return Outcome("ctr (no login; --user per command)", 0, "")

    def push(self, ref: str) -> Outcome:
        return self._ctr("images", "push", *self._remote(), ref, secrets=self._secrets())

    def pull(self, ref: str) -> Outcome:
        self._ctr("images", "rm", ref)
        # Fetch only (the shared containerd's snapshotter is not needed to prove the transfer).
        return self._ctr("content", "fetch", *self._remote(), ref, secrets=self._secrets())

    def content_digest(self, ref: str) -> Optional[str]:
        out = self._ctr("images", "ls")
        for line in out.output.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == ref:
                return next((p for p in parts if p.startswith("sha256:")), None)
        return None

    def cleanup(self) -> None:
        listed = self._ctr("images", "ls", "--quiet")
        refs = [line for line in listed.output.splitlines() if line.strip()] if listed.ok else []
        if refs:
            self._ctr("images", "rm", *refs)
        # Removing the images lets containerd's garbage collector drop their content; the
        # namespace goes when it holds nothing.
        content = self._ctr("content", "ls", "--quiet")
        digests = [line for line in content.output.splitlines() if line.startswith("sha256:")] if content.ok else []
        if digests:
            self._ctr("content", "rm", *digests)
        _run(["ctr", "--address", CONTAINERD_SOCKET, "namespaces", "rm", self.namespace], label="ctr ns rm")
        super().cleanup()


class _GoClient(Client):
    """A client built from its Go module, with its own ``HOME`` and ``DOCKER_CONFIG`` under the
    client's folder (so it reads no one else's logins), images built as OCI layouts (as for
    skopeo) and pulled into OCI layouts whose content is checked (:func:`pulled_layout_digest`)."""

    tool = ""

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.binary = go_tool(self.tool)
        self.layouts = self.home / "layouts"
        self.env = {"HOME": str(self.home), "DOCKER_CONFIG": str(self.home / "docker")}
        self.markers: dict[str, str] = {}
        self._pulled: dict[str, Path] = {}

    def _go(self, *args: str, input: Optional[str] = None, secrets=(), label: str = "") -> Outcome:
        return _run([self.binary, *args], label=label or f"{self.tool} {args[0]}", env=self.env,
                    input=input, secrets=secrets)

    def _layout(self, ref: str) -> Path:
        return self.layouts / re.sub(r"[^A-Za-z0-9]+", "-", ref)

    def build(self, ref: str, marker: str) -> Outcome:
        from tests.support import oci

        layout = self._layout(ref)
        shutil.rmtree(layout, ignore_errors=True)
        oci.write_image(layout, "latest", [marker.encode()], seed=marker)
        self.markers[ref] = marker
        return Outcome(f"{self.tool} build (OCI layout)", 0, str(layout))

    def _pull_target(self, ref: str) -> Path:
        target = self.home / f"pulled-{uuid.uuid4().hex[:6]}"
        self._pulled[ref] = target
        return target

    def content_digest(self, ref: str) -> Optional[str]:
        target = self._pulled.get(ref)
        return pulled_layout_digest(target, self.markers.get(ref)) if target else None

    def delete(self, ref: str, identity: Identity) -> Outcome:
        """Delete the manifest ``ref`` names, logged in (with the tool's own login) as
        ``identity``, or logged out for anonymous."""
        self.logout()
        if not identity.anonymous:
            self.login(identity)
        return self._delete(ref)

    def _delete(self, ref: str) -> Outcome:
        raise NotImplementedError

    def copy(self, source: str, target: str) -> Outcome:
        """Copy the image ``source`` to ``target`` registry to registry, as the logged-in identity."""
        raise NotImplementedError

    def digest(self, ref: str) -> Outcome:
        """The manifest digest of ``ref`` as the registry serves it (output: the digest)."""
        raise NotImplementedError


class CraneClient(_GoClient):
    """crane (go-containerregistry): ``crane auth login`` into its private ``DOCKER_CONFIG``,
    ``crane push`` of an OCI layout, ``crane pull --format oci``, ``crane delete``, ``crane copy``;
    the stack's CA trusted through ``SSL_CERT_FILE`` (the system CAs plus the stack's).

    ``crane auth login`` does not check the password: it writes whatever it is given to the
    config file and exits 0 without a request to the registry (run here against a registry with
    a wrong password: exit 0, the wrong password stored). The refusal comes at push and pull,
    which send the stored credentials."""

    name = tool = "crane"
    sends_given_credentials = True
    login_checks_credentials = False

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.env["SSL_CERT_FILE"] = str(ca_bundle(self.home / "ca-bundle.pem", cert_dir / "ca.crt"))

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        return self._go("auth", "login", self.address, "--username", identity.user, "--password-stdin",
                        input=identity.password, secrets=(identity.password,), label="crane auth login")

    def logout(self) -> None:
        self._go("auth", "logout", self.address, label="crane auth logout")
        super().logout()

    def push(self, ref: str) -> Outcome:
        return self._go("push", str(self._layout(ref)), ref)

    def pull(self, ref: str) -> Outcome:
        return self._go("pull", "--format", "oci", ref, str(self._pull_target(ref)))

    def _delete(self, ref: str) -> Outcome:
        return self._go("delete", ref)

    def copy(self, source: str, target: str) -> Outcome:
        return self._go("copy", source, target)

    def digest(self, ref: str) -> Outcome:
        return self._go("digest", ref)


class RegctlClient(_GoClient):
    """regctl (regclient): its config file (``REGCTL_CONFIG`` under the client's folder) names
    the stack's CA (``regctl registry set ADDRESS --cacert PEM``); ``regctl registry login``;
    ``regctl image copy`` from and to OCI layouts (``ocidir://``), ``regctl manifest delete``.

    ``regctl registry login`` checks the password (a wrong one: exit 1, "unauthorized") but
    stores the credentials all the same ("credentials were still stored"), so later commands
    keep sending them."""

    name = tool = "regctl"
    sends_given_credentials = True

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.env["REGCTL_CONFIG"] = str(self.home / "regctl.json")
        # --cacert takes the PEM itself, not a file name; --skip-check: nothing to log in with yet.
        trusted = self._go("registry", "set", address, "--cacert", (cert_dir / "ca.crt").read_text(),
                           "--skip-check", label="regctl registry set")
        if not trusted.ok:
            raise RuntimeError(str(trusted))

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        return self._go("registry", "login", self.address, "--user", identity.user, "--pass-stdin",
                        input=identity.password, secrets=(identity.password,), label="regctl registry login")

    def logout(self) -> None:
        self._go("registry", "logout", self.address, label="regctl registry logout")
        super().logout()

    def push(self, ref: str) -> Outcome:
        return self._go("image", "copy", f"ocidir://{self._layout(ref)}:latest", ref, label="regctl image copy")

    def pull(self, ref: str) -> Outcome:
        return self._go("image", "copy", ref, f"ocidir://{self._pull_target(ref)}:latest", label="regctl image copy")

    def _delete(self, ref: str) -> Outcome:
        return self._go("manifest", "delete", ref, label="regctl manifest delete")

    def copy(self, source: str, target: str) -> Outcome:
        return self._go("image", "copy", source, target, label="regctl image copy")

    def digest(self, ref: str) -> Outcome:
        return self._go("image", "digest", ref, label="regctl image digest")


class OrasClient(_GoClient):
    """oras: ``oras login`` into a private ``--registry-config`` file, the stack's CA through
    ``--ca-file``; images go with ``oras cp`` from and to OCI layouts, artifacts with ``oras
    push`` and ``oras pull``; ``oras manifest delete``. A refused login stores nothing.

    oras speaks plain HTTP to ``localhost`` unless told otherwise (the tests' address: the stack
    answered its HTTP request with 400), so every remote command says ``--plain-http=false``."""

    name = tool = "oras"

    def __init__(self, home: Path, address: str, cert_dir: Path):
        super().__init__(home, address, cert_dir)
        self.auth_file = self.home / "auth.json"
        self.ca_file = cert_dir / "ca.crt"
        self.remote = ["--registry-config", str(self.auth_file), "--ca-file", str(self.ca_file), "--plain-http=false"]

    def login(self, identity: Identity) -> Outcome:
        self.identity = identity
        return self._go("login", *self.remote, "--username", identity.user, "--password-stdin", self.address,
                        input=identity.password, secrets=(identity.password,))

    def logout(self) -> None:
        self._go("logout", "--registry-config", str(self.auth_file), self.address)
        super().logout()

    def push(self, ref: str) -> Outcome:
        return self._go("cp", "--to-registry-config", str(self.auth_file), "--to-ca-file", str(self.ca_file),
                        "--to-plain-http=false", "--from-oci-layout", f"{self._layout(ref)}:latest", ref)

    def pull(self, ref: str) -> Outcome:
        return self._go("cp", "--from-registry-config", str(self.auth_file), "--from-ca-file", str(self.ca_file),
                        "--from-plain-http=false", ref, "--to-oci-layout", f"{self._pull_target(ref)}:latest")

    def _delete(self, ref: str) -> Outcome:
        return self._go("manifest", "delete", "--force", *self.remote, ref, label="oras manifest delete")

    def digest(self, ref: str) -> Outcome:
        return self._go("resolve", *self.remote, ref)

    def push_artifact(self, ref: str, files: list[tuple[Path, str]], artifact_type: str) -> Outcome:
        """``oras push`` of ``files`` (path, media type) as one artifact of ``artifact_type``;
        run in the files' folder so each is named by its base name, as oras wants."""
        folders = {path.parent for path, _ in files}
        assert len(folders) == 1, folders
        return _run([self.binary, "push", *self.remote, "--artifact-type", artifact_type, ref,
                     *(f"{path.name}:{media_type}" for path, media_type in files)],
                    label="oras push", env=self.env, cwd=folders.pop())

    def pull_artifact(self, ref: str, folder: Path) -> Outcome:
        return self._go("pull", *self.remote, "--output", str(folder), ref)

    def attach(self, subject: str, path: Path, artifact_type: str) -> Outcome:
        """``oras attach`` of the file at ``path`` to ``subject``: an artifact manifest whose
        subject is ``subject``, listed in its referrers (the ``sha256-<hex>`` index here)."""
        return _run([self.binary, "attach", *self.remote, "--artifact-type", artifact_type, subject, path.name],
                    label="oras attach", env=self.env, cwd=path.parent)


class Cosign:
    """cosign, signing with a key pair made for the test and nothing of Sigstore's public
    services: ``--use-signing-config=false`` and ``--tlog-upload=false`` (no TUF signing config,
    no transparency log) at signing, ``--insecure-ignore-tlog=true`` at verifying. Its own
    ``HOME`` and ``DOCKER_CONFIG`` (``cosign login``), the stack's CA through ``SSL_CERT_FILE``
    and ``--registry-cacert``. The key's password goes in ``COSIGN_PASSWORD``.

    ``cosign login`` (crane's login) checks no password: it writes what it is given to the
    config file and exits 0 (run here with a wrong password: exit 0); refusals come at sign."""

    def __init__(self, home: Path, address: str, cert_dir: Path):
        self.home = home / "cosign"
        self.home.mkdir(parents=True, exist_ok=True)
        self.binary = go_tool("cosign")
        self.address = address
        self.ca_file = cert_dir / "ca.crt"
        self.env = {"HOME": str(self.home), "DOCKER_CONFIG": str(self.home / "docker"),
                    "SSL_CERT_FILE": str(ca_bundle(self.home / "ca-bundle.pem", self.ca_file))}

    def _cosign(self, *args: str, input: Optional[str] = None, env: Optional[dict] = None, secrets=()) -> Outcome:
        return _run([self.binary, *args], label=f"cosign {args[0]}", env={**self.env, **(env or {})},
                    input=input, secrets=secrets)

    def login(self, identity: Identity) -> Outcome:
        return self._cosign("login", self.address, "--username", identity.user, "--password-stdin",
                            input=identity.password, secrets=(identity.password,))

    def logout(self) -> None:
        shutil.rmtree(self.home / "docker", ignore_errors=True)

    def generate_key_pair(self, folder: Path, password: str) -> tuple[Path, Path]:
        """A key pair in ``folder`` (``cosign.key`` encrypted with ``password``, ``cosign.pub``)."""
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder / "cosign"
        made = self._cosign("generate-key-pair", "--output-key-prefix", str(prefix),
                            env={"COSIGN_PASSWORD": password}, secrets=(password,))
        if not made.ok:
            raise RuntimeError(str(made))
        return prefix.with_suffix(".key"), prefix.with_suffix(".pub")

    def sign(self, ref: str, key: Path, password: str, *, legacy: bool = False) -> Outcome:
        """Sign ``ref``: cosign 3's bundle under the referrers tag schema's ``sha256-<hex>`` index
        (where the registry serves no referrers API), or with ``legacy`` the ``sha256-<hex>.sig``
        tag of cosign before 3 (``--new-bundle-format=false``)."""
        legacy_flags = ["--new-bundle-format=false"] if legacy else []
        return self._cosign("sign", "--key", str(key), "--use-signing-config=false", "--tlog-upload=false",
                            *legacy_flags, "--yes", "--registry-cacert", str(self.ca_file), ref,
                            env={"COSIGN_PASSWORD": password}, secrets=(password,))

    def attest(self, ref: str, key: Path, password: str, predicate: Path) -> Outcome:
        """An in-toto attestation of ``predicate`` (type ``custom``) under the ``sha256-<hex>.att`` tag."""
        return self._cosign("attest", "--key", str(key), "--use-signing-config=false", "--tlog-upload=false",
                            "--new-bundle-format=false", "--yes", "--registry-cacert", str(self.ca_file),
                            "--predicate", str(predicate), "--type", "custom", ref,
                            env={"COSIGN_PASSWORD": password}, secrets=(password,))

    def attach_sbom(self, ref: str, sbom: Path) -> Outcome:
        """An SPDX SBOM under the ``sha256-<hex>.sbom`` tag (``cosign attach sbom``, deprecated in 3, still served)."""
        return self._cosign("attach", "sbom", "--sbom", str(sbom), "--type", "spdx",
                            "--registry-cacert", str(self.ca_file), ref)

    def verify(self, ref: str, public_key: Path) -> Outcome:
        return self._cosign("verify", "--key", str(public_key), "--insecure-ignore-tlog=true",
                            "--registry-cacert", str(self.ca_file), ref)

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


CLIENTS: dict[str, type[Client]] = {
    cls.name: cls for cls in (DockerClient, PodmanClient, BuildahClient, SkopeoClient, CtrClient,
                              CraneClient, RegctlClient, OrasClient)
}


@contextmanager
def docker_trust(address: str, ca_file: Path) -> Iterator[Path]:
    """Make the shared dockerd trust the stack's CA for ``address`` only (its own port), and
    remove exactly that afterwards. dockerd reads certs.d per connection: no restart."""
    directory = DOCKER_CERTS_D / address
    if directory.exists():
        raise RuntimeError(f"{directory} exists already: another stack uses the address {address}")
    directory.mkdir(parents=True)
    try:
        shutil.copy(ca_file, directory / "ca.crt")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
