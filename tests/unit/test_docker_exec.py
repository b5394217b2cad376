"""docker_exec without Docker: output and /proc parsing, config rewriting, the stand-by's
making and the registry's idle stop against fake Docker objects, and the garbage-collection
procedure driven against a recording fake container (the real one is in tests/integration)."""

from __future__ import annotations

import io
import tarfile

import docker.errors
import pytest
import yaml

from components import docker_exec
from components.docker_exec import (
    CONFIG_PATH,
    DockerExecError,
    RegistryContainer,
    busy_connections,
    gc_command,
    garbage_collect,
    parse_gc_output,
    parse_untagged,
    readonly_config,
    listening,
    registry_socket,
    standby_config,
    storage_root,
)
from components.render.registry_config import (
    REGISTRY_SOCKET,
    SOCKET_DIR,
    STANDBY_SOCKET,
    render_registry_config,
    serve_command,
)
from components.render.storage import S3_CA_ENV, S3_CA_PATH

S3_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

# Verbatim from distribution 2.8.2 (`registry garbage-collect --dry-run --delete-untagged`,
# stdout) on a registry holding `app` (two tags) and `multi` (one tagged OCI index).
DRY_RUN_UNTAGGED = """\
app
app: marking manifest sha256:851c538414126f5d264e44ff10fe942e118d0ad7fe176b127c9da240ba52de60 
app: marking blob sha256:37a2f08b8c36b9e2bd875bdd65d226be34c53cd68efcdfabbdc3104a3767d005
app: marking blob sha256:54bca7161ecc4932b1f688eb2cc375075e67214106abc52de5bb99829fe92115
multi
multi: marking manifest sha256:6d8acdb0068ca248437e9a53e4b0ab25e368b0bcf9525a485e2be9b63426ab3b 
multi: marking blob sha256:8fa577c101d50570ccb1a2f3f5504a488158a794cd9347cecc1be42e3bda2e87
multi: marking blob sha256:e1c2975ed427ad65d550968866e080165a44da2f5e2dc94d3508ee369f385b6a
manifest eligible for deletion: sha256:8fa577c101d50570ccb1a2f3f5504a488158a794cd9347cecc1be42e3bda2e87
manifest eligible for deletion: sha256:e1c2975ed427ad65d550968866e080165a44da2f5e2dc94d3508ee369f385b6a

9 blobs marked, 4 blobs and 2 manifests eligible for deletion
blob eligible for deletion: sha256:12960414ae3c49e14ed6ca9c626f4ecef2c531a275557225e7470835cfcee8e7
blob eligible for deletion: sha256:401450d19f2bd9c48d5e75ff9a8f1c1f69fb9ba00ce23ce9fcdb76a3db7f832f
"""

# Verbatim (stdout then stderr) from a real collection after one image was deleted.
REAL_RUN = """\
app
multi

10 blobs marked, 3 blobs and 0 manifests eligible for deletion
blob eligible for deletion: sha256:37a2f08b8c36b9e2bd875bdd65d226be34c53cd68efcdfabbdc3104a3767d005
blob eligible for deletion: sha256:54bca7161ecc4932b1f688eb2cc375075e67214106abc52de5bb99829fe92115
blob eligible for deletion: sha256:851c538414126f5d264e44ff10fe942e118d0ad7fe176b127c9da240ba52de60
time="2026-11-27T17:58:33.283813511Z" level=info msg="Deleting blob: /docker/registry/v2/blobs/sha256/37/37a2f08b8c36b9e2bd875bdd65d226be34c53cd68efcdfabbdc3104a3767d005" go.version=go1.19.8 service=registry
time="2026-11-27T17:58:33.284535058Z" level=info msg="Deleting blob: /docker/registry/v2/blobs/sha256/54/54bca7161ecc4932b1f688eb2cc375075e67214106abc52de5bb99829fe92115" go.version=go1.19.8 service=registry
time="2026-11-27T17:58:33.285364306Z" level=info msg="Deleting blob: /docker/registry/v2/blobs/sha256/85/851c538414126f5d264e44ff10fe942e118d0ad7fe176b127c9da240ba52de60" go.version=go1.19.8 service=registry
"""


def test_gc_output_counts_come_from_the_summary_and_the_deleting_lines():
    """Eligible counts are the summary line's; removed blobs are the 'Deleting blob' log lines."""
    counts = parse_gc_output(REAL_RUN)
    assert (counts.blobs_marked, counts.blobs_eligible, counts.manifests_eligible, counts.blobs_deleted) == (10, 3, 0, 3)
    dry = parse_gc_output(DRY_RUN_UNTAGGED)
    assert (dry.blobs_eligible, dry.manifests_eligible, dry.blobs_deleted) == (4, 2, 0)


def test_gc_output_without_a_summary_is_an_error():
    """Output that is not garbage-collect's (an error message, a changed format) is not read as zero."""
    with pytest.raises(ValueError, match="summary"):
        parse_gc_output("failed to construct filesystem driver\n")


def test_untagged_manifests_are_attributed_to_their_repository():
    """The repository line before the eligible-manifest lines says whose they are."""
    assert parse_untagged(DRY_RUN_UNTAGGED) == {
        "multi": [
            "sha256:8fa577c101d50570ccb1a2f3f5504a488158a794cd9347cecc1be42e3bda2e87",
            "sha256:e1c2975ed427ad65d550968866e080165a44da2f5e2dc94d3508ee369f385b6a",
        ]
    }


# Distribution 3.1.2's `garbage-collect --dry-run --delete-untagged` (app:v1 pushed twice; multi:v1
# a two-platform index): the repository is named in the eligible line; the index's platform
# manifests are not eligible.
DRY_RUN_UNTAGGED_3 = """\
app
app: marking manifest sha256:4095a331d2388f6b62b596df0d8e11ec9e6f563141cac22470bcc3adcedeeddc 
app: marking blob sha256:c231ea4d2721a62ce9ac528fb81a5a628a0753ebd6914ab5966eb47c9abda69e
app: marking blob sha256:6b6ba1c3230597dab8b2d9c828b111a7de864d6922273ea7fde7f52fa8860af1
multi
multi: marking manifest sha256:2c0dc5628a8b8047445422e995089d0257eb190d507178d6ac7d4dbd6abce6aa 
multi: marking blob sha256:533ec47394e5fa5f5df3f751592dec2685322ec30394a9ab0a508af94bffe4b6
multi: marking blob sha256:42e439eb1c2d6c559c5689fa163206461c50dd0125145feb6cf0550db394f30d
multi: marking blob sha256:6298f2cc5d29a07570fb6d614107ed91eecea9d2303f8ebb57323ab5269aca89
multi: marking blob sha256:d288d8b369d190c7b46d48217fa567cb4c92297451e002b51918cf2985f0ca62
multi: marking blob sha256:f675d4526c834504f297d52ce04947f92d41a42c9d37371c2cc6ce119f65b418
multi: marking blob sha256:30e2df26f1a94d1e066335f43e3ebf16af43fdf29a321b3df45c3aaefccb9f92
manifest eligible for deletion: {app sha256:c9d426f6429cfe7ecc933f6368a1f99f4272d5895eab03d1a8632f38989eaf90 [v1]}

10 blobs marked, 3 blobs and 1 manifests eligible for deletion
blob eligible for deletion: sha256:60d0e0bb6691f97c9fa546ab9c3fae0341f066fbca02caa790e15ed4070ab65a
blob eligible for deletion: sha256:c9d426f6429cfe7ecc933f6368a1f99f4272d5895eab03d1a8632f38989eaf90
blob eligible for deletion: sha256:e0bb11f9297a715aaab76ffbdd1ea3e7390645f1207ec41b705ec3eb50df6d1c
app: layer link eligible for deletion: sha256:60d0e0bb6691f97c9fa546ab9c3fae0341f066fbca02caa790e15ed4070ab65a
app: layer link eligible for deletion: sha256:e0bb11f9297a715aaab76ffbdd1ea3e7390645f1207ec41b705ec3eb50df6d1c
"""


def test_untagged_manifests_in_distribution_3_output():
    """Distribution 3's eligible-manifest line names its repository itself; a line naming no
    valid repository is an error, not a guess."""
    assert parse_untagged(DRY_RUN_UNTAGGED_3) == {
        "app": ["sha256:c9d426f6429cfe7ecc933f6368a1f99f4272d5895eab03d1a8632f38989eaf90"]}
    assert parse_gc_output(DRY_RUN_UNTAGGED_3).manifests_eligible == 1
    with pytest.raises(ValueError, match="not a repository"):
        parse_untagged("manifest eligible for deletion: {Bad/App sha256:" + "a" * 64 + " []}\n")


def test_readonly_config_only_switches_readonly_on():
    """The rewritten config differs from the project's own config in that one setting only."""
    original = render_registry_config(http_secret="x" * 32)
    rewritten = yaml.safe_load(readonly_config(original))
    expected = yaml.safe_load(original)
    assert expected["storage"]["maintenance"]["readonly"]["enabled"] is False
    expected["storage"]["maintenance"]["readonly"]["enabled"] = True
    assert rewritten == expected


def test_readonly_config_adds_the_maintenance_section_when_missing():
    """The official image's config has no maintenance section; it is added, the rest kept."""
    rewritten = yaml.safe_load(readonly_config("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /data\n"))
    assert rewritten["storage"] == {"filesystem": {"rootdirectory": "/data"},
                                    "maintenance": {"readonly": {"enabled": True}}}


def test_storage_root_reads_the_filesystem_driver_none_for_s3_or_refuses_others():
    """Sizes are measured under the filesystem driver's root; S3 has none on the Docker host
    (None); any other driver is refused by name."""
    assert storage_root("storage:\n  filesystem:\n    rootdirectory: /srv/reg\n") == "/srv/reg"
    assert storage_root("storage:\n  filesystem: {}\n") == "/var/lib/registry"
    assert storage_root("storage:\n  s3:\n    bucket: b\n  delete:\n    enabled: true\n") is None
    with pytest.raises(ValueError, match="filesystem or s3, not azure"):
        storage_root("storage:\n  azure:\n    container: c\n")


def test_gc_command_uses_the_registry_binary_and_flags():
    """The collection runs /bin/registry garbage-collect with the requested flags and the config path."""
    assert gc_command() == ["/bin/registry", "garbage-collect", CONFIG_PATH]
    assert gc_command(dry_run=True, delete_untagged=True) == [
        "/bin/registry", "garbage-collect", "--dry-run", "--delete-untagged", CONFIG_PATH]


def test_standby_config_is_read_only_and_drains_with_all_else_kept():
    """The stand-by's config: the registry's own plus read-only mode, the stand-by socket (nginx's
    backup) and a drain timeout (so its SIGTERM lets the requests it serves finish), nothing
    else changed."""
    original = render_registry_config(http_secret="x" * 32)
    standby = yaml.safe_load(standby_config(original))
    expected = yaml.safe_load(original)
    expected["storage"]["maintenance"]["readonly"]["enabled"] = True
    expected["http"]["draintimeout"] = f"{docker_exec.STANDBY_DRAIN_SECONDS}s"
    expected["http"]["addr"] = STANDBY_SOCKET
    assert standby == expected and standby["http"]["net"] == "unix"


def test_registry_socket_comes_from_http_net_and_addr():
    """The socket the registry serves on; a TCP address (or none) is an error naming the fix."""
    assert registry_socket(render_registry_config(http_secret="x" * 32)) == REGISTRY_SOCKET
    for text in ("http:\n  addr: 0.0.0.0:5001\n", "version: 0.1\n", "http:\n  net: unix\n  addr: rel.sock\n"):
        with pytest.raises(ValueError, match="http.net must be 'unix'"):
            registry_socket(text)


# /proc/net/unix lines as the kernel writes them for the registry's socket: the listener
# (__SO_ACCEPTCON, in the registry's network namespace), one request being served (accepted:
# 03 with an inode) and one waiting in the accept queue (no inode), both listed in the
# namespace of the process that connected (nginx's), and unrelated sockets.
PROC_NET_UNIX_HEADER = "Num       RefCount Protocol Flags    Type St Inode Path\n"
LISTENER = f"00000000878a97f5: 00000002 00000000 00010000 0001 01 146890 {REGISTRY_SOCKET}\n"
ACCEPTED = f"000000003ce2aab1: 00000003 00000000 00000000 0001 03 146893 {REGISTRY_SOCKET}\n"
QUEUED = f"00000000d09b30f0: 00000002 00000000 00000000 0001 02     0 {REGISTRY_SOCKET}\n"
OTHER = f"00000000cacd2a28: 00000003 00000000 00000000 0001 03 146895 {STANDBY_SOCKET}\n"
UNNAMED = "00000000aaaaaaaa: 00000003 00000000 00000000 0001 03 146899\n"
IDLE = PROC_NET_UNIX_HEADER + LISTENER + QUEUED + OTHER + UNNAMED
BUSY = IDLE + ACCEPTED


def test_busy_connections_counts_requests_being_served_not_queued_ones_or_other_sockets():
    """Accepted connections on the registry's socket are busy; queued ones, the listener and
    other sockets are not."""
    assert busy_connections(IDLE, REGISTRY_SOCKET) == 0
    assert busy_connections(BUSY, REGISTRY_SOCKET) == 1
    assert busy_connections(BUSY + ACCEPTED.replace("146893", "146894"), REGISTRY_SOCKET) == 2
    assert busy_connections(BUSY, STANDBY_SOCKET) == 1


def test_listening_needs_a_listener_not_a_stale_socket_file():
    """Listening: a socket with __SO_ACCEPTCON at the path; a file left by a killed registry has
    no entry in /proc/net/unix, and connections alone do not count."""
    assert listening(IDLE, REGISTRY_SOCKET)
    assert not listening(PROC_NET_UNIX_HEADER + ACCEPTED + QUEUED, REGISTRY_SOCKET)
    assert not listening(IDLE, STANDBY_SOCKET)


# --- stop_when_idle and start_standby against fake Docker objects ---------------------------


class FakeDockerContainer:
    """The parts of docker.models.containers.Container the RegistryContainer methods use."""

    def __init__(self, *, proc_net: list[str], exec_fails: bool = False, name: str = "reg",
                 mounts: tuple[str, ...] = ("sockets",)):
        self.id, self.name = name.ljust(64, "c"), name
        self.signals: list[str] = []
        self.proc_net = proc_net
        self.exec_fails = exec_fails
        self.attrs = {"State": {"Status": "running"},
                      "Mounts": [{"Type": "volume", "Name": volume, "Destination": SOCKET_DIR} for volume in mounts]}
        self.labels: dict = {}

    def reload(self):
        pass

    def kill(self, signal):
        self.signals.append(signal)
        if signal == "SIGKILL":
            self.attrs["State"]["Status"] = "exited"

    def stop(self, timeout=10):
        self.signals.append("stop")
        self.attrs["State"]["Status"] = "exited"

    def exec_run(self, argv, demux=True):
        if argv[0] == "cat" and argv[1] == CONFIG_PATH:
            return 0, (render_registry_config(http_secret="s" * 32).encode(), b"")
        if argv[0] == "cat" and argv[1] == S3_CA_PATH:
            return 0, (S3_CA_PEM.encode(), b"")
        if self.exec_fails:
            raise docker.errors.APIError("exec broke")
        return 0, (self.proc_net.pop(0).encode(), b"")


class FakeContainerList:
    """A Docker client whose ``containers.list`` returns the given running containers."""

    def __init__(self, running):
        self.containers, self.running = self, running

    def list(self, filters=None):
        assert filters == {"status": "running"}
        return self.running


def registry_container(container, others=()) -> RegistryContainer:
    target = RegistryContainer.__new__(RegistryContainer)
    target.host, target.name, target.config_path = "unix:///fake.sock", container.name, CONFIG_PATH
    target.socket, target.container = REGISTRY_SOCKET, container
    target.client = FakeContainerList([container, *others])
    return target


def test_stop_when_idle_freezes_looks_and_kills_only_when_nothing_is_served():
    """Frozen with a request being served: thawed and looked at again; frozen with only
    queued connections: killed (the queued ones are reset unanswered, nginx retries them)."""
    container = FakeDockerContainer(proc_net=[BUSY, BUSY, IDLE])
    looks = registry_container(container).stop_when_idle(timeout=1)
    assert looks == 3
    assert container.signals == ["SIGSTOP", "SIGCONT", "SIGSTOP", "SIGCONT", "SIGSTOP", "SIGKILL"]


def test_stop_when_idle_stops_anyway_after_its_time_and_never_leaves_it_frozen():
    """Never idle within max_wait: thawed, then a plain stop. A failure while frozen thaws and
    stops it before the error goes up (Docker would no longer restart a signalled container
    that crashes, until it is started again)."""
    container = FakeDockerContainer(proc_net=[BUSY])
    registry_container(container).stop_when_idle(max_wait=0, timeout=1)
    assert container.signals == ["SIGSTOP", "SIGCONT", "stop"]

    broken = FakeDockerContainer(proc_net=[], exec_fails=True)
    with pytest.raises(DockerExecError, match="exec broke"):
        registry_container(broken).stop_when_idle(timeout=1)
    assert broken.signals == ["SIGSTOP", "SIGCONT", "stop"]
    assert broken.attrs["State"]["Status"] == "exited"


def test_stop_when_idle_reads_the_connections_where_the_kernel_lists_them():
    """A connection the registry accepted is listed in the connecting process's network
    namespace: a request being served, seen only from the proxy (which shares the socket's
    volume), keeps the registry thawed; a container without that volume is not asked; a
    proxy whose table cannot be read counts as busy, so the registry is stopped the slow way
    once its time is up, never killed blind."""
    registry = FakeDockerContainer(proc_net=[IDLE, IDLE])
    proxy = FakeDockerContainer(proc_net=[BUSY, IDLE], name="proxy")
    unrelated = FakeDockerContainer(proc_net=[], name="other", mounts=("data",))
    looks = registry_container(registry, [proxy, unrelated]).stop_when_idle(timeout=1)
    assert looks == 2
    assert registry.signals == ["SIGSTOP", "SIGCONT", "SIGSTOP", "SIGKILL"]
    assert proxy.proc_net == [] and proxy.signals == []

    registry = FakeDockerContainer(proc_net=[IDLE])
    broken_proxy = FakeDockerContainer(proc_net=[], name="proxy", exec_fails=True)
    registry_container(registry, [broken_proxy]).stop_when_idle(max_wait=0, timeout=1)
    assert registry.signals == ["SIGSTOP", "SIGCONT", "stop"]


class FakeDockerClient:
    """Records containers.create calls and what happens to the created container."""

    def __init__(self):
        self.created: list[dict] = []
        self.events: list[str] = []
        self.archives: list[tuple] = []
        client = self

        class Created:
            name = "reg-gc-standby"

            def put_archive(self, path, data):
                with tarfile.open(fileobj=io.BytesIO(data)) as archive:
                    member = archive.getmembers()[0]
                    client.archive = (path, member.name, member.mode, archive.extractfile(member).read().decode())
                client.archives.append(client.archive)
                client.events.append("put_archive")
                return True

            def start(self):
                client.events.append("start")

        class Containers:
            def create(self, **kwargs):
                client.created.append(kwargs)
                return Created()

        class Network:
            def __init__(self, name):
                self.name = name

            def connect(self, container):
                client.events.append(f"connect {self.name}")

        class Networks:
            def get(self, name):
                return Network(name)

        self.containers = Containers()
        self.networks = Networks()


def test_the_standby_copies_image_volumes_environment_and_user_has_no_network_and_gets_its_config_first():
    """Same image, volumes (volumes_from: the data and the socket volume), environment and
    user; no network at all (nginx reaches it through its socket); served under the umask
    entrypoint from its own config, written (0600: it holds the HTTP secret) outside the
    registry's config folder before it starts; its own name and labels."""
    container = FakeDockerContainer(proc_net=[])
    container.attrs = {
        "Image": "sha256:img",
        "Config": {"Env": ["REGISTRY_HTTP_SECRET=x"], "User": "0:0"},
        "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/var/lib/registry", "RW": True}],
        "State": {"Status": "running"},
    }
    target = registry_container(container)
    target.client = FakeDockerClient()
    standby = target.start_standby("config: text\n")
    created = target.client.created[0]
    assert created["image"] == "sha256:img" and created["name"] == "reg-gc-standby"
    assert created["entrypoint"] == serve_command(docker_exec.STANDBY_CONFIG_PATH)
    assert created["environment"] == ["REGISTRY_HTTP_SECRET=x"] and created["user"] == "0:0"
    assert created["volumes_from"] == [container.id]
    assert created["network_mode"] == "none"
    assert created["labels"] == {"private-registry.role": "gc-standby", "private-registry.gc-standby-of": "reg"}
    assert target.client.events == ["put_archive", "start"]
    assert target.client.archive == ("/", docker_exec.STANDBY_CONFIG_PATH.lstrip("/"), 0o600, "config: text\n")
    assert not docker_exec.STANDBY_CONFIG_PATH.startswith("/etc/docker/registry/")
    assert isinstance(standby, docker_exec.StandbyRegistry)
    assert standby.name == "reg-gc-standby" and standby.config_path == docker_exec.STANDBY_CONFIG_PATH
    assert standby.socket == STANDBY_SOCKET


S3_CONFIG = render_registry_config(http_secret="s" * 32, storage={"s3": {"bucket": "b", "region": "us-east-1"}})


def test_on_s3_the_standby_joins_the_registry_networks_and_trusts_the_endpoint_ca():
    """On S3 the stand-by reaches the store as the registry does: on the registry's networks
    (the first at creation, the others connected before it starts), with the registry's
    environment (SSL_CERT_DIR naming the CA folder) and the S3 endpoint's CA file copied from
    the registry (0644, before it starts), next to its read-only config."""
    container = FakeDockerContainer(proc_net=[])
    container.attrs = {
        "Image": "sha256:img", "Config": {"Env": [S3_CA_ENV], "User": "0:0"}, "Mounts": [],
        "State": {"Status": "running"}, "NetworkSettings": {"Networks": {"reg-net": {}, "reg-extra": {}}},
    }
    target = registry_container(container)
    target.client = FakeDockerClient()
    target.start_standby(standby_config(S3_CONFIG))
    created = target.client.created[0]
    assert created["network"] == "reg-extra" and "network_mode" not in created
    assert created["environment"] == [S3_CA_ENV]
    assert target.client.events == ["connect reg-net", "put_archive", "put_archive", "start"]
    assert target.client.archives[1] == ("/", S3_CA_PATH.lstrip("/"), 0o644, S3_CA_PEM)


def test_on_the_filesystem_the_standby_carries_no_ca_and_no_network():
    """Without SSL_CERT_DIR for the S3 CA the registry has no such file: none is read or
    copied; the filesystem driver keeps the stand-by off every network."""
    container = FakeDockerContainer(proc_net=[])
    container.attrs = {"Image": "sha256:img", "Config": {"Env": []}, "Mounts": [], "State": {"Status": "running"},
                       "NetworkSettings": {"Networks": {"reg-net": {}}}}
    target = registry_container(container)
    assert target.carried_files(render_registry_config(http_secret="s" * 32)) == {}
    assert target.twin_settings(render_registry_config(http_secret="s" * 32))[0]["network_mode"] == "none"


def test_a_config_mount_over_the_standby_config_folder_gets_no_standby():
    """A mount where the stand-by's config would go: a clear error, before anything is created."""
    container = FakeDockerContainer(proc_net=[])
    container.attrs = {"Image": "sha256:img", "Config": {}, "State": {"Status": "running"},
                       "Mounts": [{"Destination": "/etc/private-registry-gc"}]}
    target = registry_container(container)
    target.client = FakeDockerClient()
    with pytest.raises(DockerExecError, match="is a mount"):
        target.start_standby("config: text\n")
    assert target.client.created == [] and container.signals == []


# --- the garbage-collection procedure against a recording fake ------------------------------


class FakeStandby:
    name = "reg-gc-standby"

    def __init__(self, calls: list[str], *, answers: bool = True, gc_fails: bool = False):
        self.calls, self.answers, self.gc_fails = calls, answers, gc_fails

    def wait_answering(self, timeout):
        self.calls.append("standby answering")
        if not self.answers:
            raise DockerExecError("unix:///fake.sock", self.name, "not healthy after 1s")

    def run_gc(self, *, dry_run, delete_untagged=False, config_path=None):
        self.calls.append(f"standby gc dry_run={dry_run}")
        if self.gc_fails:
            raise DockerExecError("unix:///fake.sock", self.name, "garbage-collect exited 1: boom")
        return REAL_RUN

    def discard(self):
        self.calls.append("standby removed")


class FakeContainer:
    """Records what garbage_collect does to the registry container and its stand-by. It has no
    way to write a file: the registry's own config is never touched."""

    host, name = "unix:///fake.sock", "reg"

    def __init__(self, *, standby_answers=True, gc_fails=False, start_fails=False, leftover=False):
        self.config = render_registry_config(http_secret="s" * 32)
        self.calls: list[str] = []
        self.running = True
        self.start_fails = start_fails
        self.bytes = [1000, 400]
        self.standby = FakeStandby(self.calls, answers=standby_answers, gc_fails=gc_fails)
        self.leftover = FakeStandby(self.calls) if leftover else None
        self.standby_config: str | None = None
        self.files = {S3_CA_PATH: S3_CA_PEM}

    def _fail(self, reason):
        return DockerExecError(self.host, self.name, reason)

    def find_standby(self):
        self.calls.append("find standby")
        return self.leftover

    def read_file(self, path):
        self.calls.append(f"read {path}")
        return self.config

    def volume_bytes(self, path):
        self.calls.append(f"du {path}")
        return self.bytes.pop(0)

    def carried_files(self, config_text):
        self.calls.append("read carried files")
        return self.files

    def start_standby(self, config_text, files):
        self.calls.append("standby started")
        self.standby_config, self.standby_files = config_text, files
        return self.standby

    def stop_when_idle(self):
        self.calls.append("stop when idle")
        self.running = False

    def status(self):
        return ("running" if self.running else "exited"), None

    def stop(self):
        self.calls.append("stop")
        self.running = False

    def start(self):
        self.calls.append("start")
        if self.start_fails:
            raise self._fail("start failed: no such image")
        self.running = True

    def wait_answering(self, timeout):
        self.calls.append("answering")

    def wait_healthy(self, timeout, probe=None):
        self.calls.append("healthy" + (" via probe" if probe else ""))
        return 0.0

    def run_gc(self, *, dry_run, delete_untagged=False):
        self.calls.append(f"gc dry_run={dry_run}")
        return REAL_RUN

    def run_gc_one_off(self, config_text, files):
        self.calls.append("gc one-off")
        self.one_off_files = files
        return REAL_RUN


@pytest.fixture
def sleeps(monkeypatch):
    """time.sleep in docker_exec recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(docker_exec.time, "sleep", recorded.append)
    return recorded


def test_readonly_mode_hands_reads_to_a_standby_while_collecting(sleeps):
    """Order: measure, prepare (while writable), stand-by up and answering, stop the registry
    when idle, check writes are refused, collect in the stand-by, registry back and answering,
    stand-by gone, probe, measure; no waiting for nginx (it tries the registry's socket on every
    request). The registry's config is only read; the stand-by's is the read-only one."""
    fake = FakeContainer()
    report = garbage_collect(fake, mode="readonly", probe=lambda: None,
                             check_readonly=lambda: fake.calls.append("check read-only"),
                             prepare=lambda: fake.calls.append("prepare"))
    assert fake.calls == [
        "find standby", f"read {CONFIG_PATH}", "du /var/lib/registry", "prepare",
        "read carried files", "standby started", "standby answering", "stop when idle", "check read-only", "standby gc dry_run=False",
        "start", "answering", "standby removed", "healthy via probe",
        "du /var/lib/registry",
    ]
    assert sleeps == []
    assert fake.standby_config == standby_config(fake.config) and fake.standby_files == fake.files
    assert (report.bytes_before, report.bytes_after, report.blobs_removed) == (1000, 400, 3)
    assert report.writes_refused_seconds > 0 and report.reads_unavailable_seconds == 0.0
    marks = ["writes_refused_from", "registry_stopped", "collect_start", "collect_end", "registry_serving",
             "served_again"]
    assert set(report.timeline) == set(marks)
    assert [report.timeline[m] for m in marks] == sorted(report.timeline[m] for m in marks)


def test_a_failed_collection_starts_the_registry_and_removes_the_standby(sleeps):
    """GC fails in the stand-by: the registry is started and answers before the stand-by goes,
    and the error says the registry was restored and why the collection failed."""
    fake = FakeContainer(gc_fails=True)
    with pytest.raises(DockerExecError, match="failed, registry restored: .*boom"):
        garbage_collect(fake, mode="readonly")
    assert fake.calls[-4:] == ["standby gc dry_run=False", "start", "answering", "standby removed"]
    assert fake.running


def test_a_failed_readonly_check_aborts_before_collecting(sleeps):
    """If writes are still accepted once only the stand-by serves, nothing is collected; the
    registry comes back and the stand-by goes."""
    fake = FakeContainer()

    def still_writable():
        raise RuntimeError("still accepts pushes")

    with pytest.raises(DockerExecError, match="still accepts pushes"):
        garbage_collect(fake, mode="readonly", check_readonly=still_writable)
    assert not any("gc dry_run" in call for call in fake.calls)
    assert fake.calls[-3:] == ["start", "answering", "standby removed"] and fake.running


def test_a_standby_that_never_answers_leaves_the_registry_alone(sleeps):
    """The stand-by does not come up: the registry is never stopped, the stand-by is removed."""
    fake = FakeContainer(standby_answers=False)
    with pytest.raises(DockerExecError, match="not healthy"):
        garbage_collect(fake, mode="readonly")
    assert "stop when idle" not in fake.calls and "start" not in fake.calls
    assert fake.calls[-2:] == ["answering", "standby removed"]


def test_a_registry_that_does_not_come_back_keeps_the_standby_serving(sleeps):
    """If the registry cannot start again, the read-only stand-by stays (pulls keep working)
    and the error names it and says what to do."""
    fake = FakeContainer(start_fails=True)
    with pytest.raises(DockerExecError, match="did not come back.*'reg-gc-standby' keeps serving pulls"):
        garbage_collect(fake, mode="readonly")
    assert "standby removed" not in fake.calls


@pytest.mark.parametrize("mode", ["readonly", "stop", "dry-run"])
def test_a_leftover_standby_is_handed_back_first(sleeps, mode):
    """A stand-by left by a crashed run (registry stopped) is handed back before anything else,
    in every mode: registry started and answering, then the stand-by removed."""
    fake = FakeContainer(leftover=True)
    fake.running = False
    garbage_collect(fake, mode=mode)
    assert fake.calls[:5] == ["find standby", "start", "answering", "standby removed", f"read {CONFIG_PATH}"]


def test_stop_mode_stops_collects_from_a_one_off_and_starts():
    """The tutorial's way: nothing served from stop to start; no stand-by; the registry is back
    by the same restore path as in readonly mode."""
    fake = FakeContainer()
    report = garbage_collect(fake, mode="stop")
    assert fake.calls == ["find standby", f"read {CONFIG_PATH}", "du /var/lib/registry", "read carried files", "stop",
                          "gc one-off", "start", "answering", "du /var/lib/registry"]
    assert report.reads_unavailable_seconds == report.writes_refused_seconds > 0
    assert fake.one_off_files == fake.files


@pytest.mark.parametrize("mode", ["readonly", "stop", "dry-run"])
def test_on_s3_nothing_is_measured_on_the_docker_host(sleeps, mode):
    """On S3 the collection runs (the same steps) but measures no bytes: None before and after."""
    fake = FakeContainer()
    fake.config = S3_CONFIG
    report = garbage_collect(fake, mode=mode)
    assert not any(call.startswith("du ") for call in fake.calls)
    assert (report.bytes_before, report.bytes_after) == (None, None)
    assert report.blobs_eligible == 3


def test_dry_run_mode_changes_nothing():
    """Dry run: one `--dry-run` collection in the live container, no stand-by, no restarts."""
    fake = FakeContainer()
    report = garbage_collect(fake, mode="dry-run")
    assert fake.calls == ["find standby", f"read {CONFIG_PATH}", "du /var/lib/registry", "gc dry_run=True"]
    assert (report.bytes_after, report.blobs_removed, report.writes_refused_seconds) == (1000, 0, 0.0)


def test_an_unknown_mode_is_refused():
    """A mode other than readonly, stop or dry-run is refused, listing the valid ones."""
    with pytest.raises(ValueError, match="readonly, stop, dry-run"):
        garbage_collect(FakeContainer(), mode="fast")


def test_docker_errors_name_host_and_container():
    """Errors say which Docker host and container, and why."""
    error = docker_exec.DockerExecError("ssh://ops@reg.example", "reg", "no such container")
    assert str(error) == "docker host ssh://ops@reg.example, container 'reg': no such container"
