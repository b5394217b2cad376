"""docker_exec without Docker: output parsing, config rewriting, and the garbage-collection
procedure driven against a recording fake container (the real one is in tests/integration)."""

from __future__ import annotations

import pytest
import yaml

from components import docker_exec
from components.docker_exec import (
    CONFIG_PATH,
    DockerExecError,
    gc_command,
    garbage_collect,
    parse_gc_output,
    parse_untagged,
    readonly_config,
    storage_root,
)
from components.render.registry_config import render_registry_config

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


def test_storage_root_reads_the_filesystem_driver_or_refuses_others():
    """Sizes are measured under the filesystem driver's root; other drivers cannot be measured."""
    assert storage_root("storage:\n  filesystem:\n    rootdirectory: /srv/reg\n") == "/srv/reg"
    assert storage_root("storage:\n  filesystem: {}\n") == "/var/lib/registry"
    with pytest.raises(ValueError, match="s3"):
        storage_root("storage:\n  s3:\n    bucket: b\n  delete:\n    enabled: true\n")


def test_gc_command_uses_the_registry_binary_and_flags():
    """The collection runs /bin/registry garbage-collect with the requested flags and the config path."""
    assert gc_command() == ["/bin/registry", "garbage-collect", CONFIG_PATH]
    assert gc_command(dry_run=True, delete_untagged=True) == [
        "/bin/registry", "garbage-collect", "--dry-run", "--delete-untagged", CONFIG_PATH]


class FakeContainer:
    """Records what garbage_collect does to the container; files live in a dict."""

    host, name = "unix:///fake.sock", "reg"

    def __init__(self, *, gc_fails: bool = False, restart_fails_after: int | None = None):
        self.files = {CONFIG_PATH: render_registry_config(http_secret="s" * 32)}
        self.original = self.files[CONFIG_PATH]
        self.calls: list[str] = []
        self.gc_fails = gc_fails
        self.restart_fails_after = restart_fails_after
        self.bytes = [1000, 400]
        self.config_at_gc: str | None = None

    def _fail(self, reason):
        return DockerExecError(self.host, self.name, reason)

    def read_file(self, path):
        self.calls.append(f"read {path}")
        return self.files[path]

    def write_file(self, path, text):
        self.calls.append(f"write {path} readonly={'enabled: true' in text.split('readonly:')[-1][:30]}")
        self.files[path] = text

    def exec(self, argv, check=True):
        self.calls.append("exec " + " ".join(argv))

    def volume_bytes(self, path):
        self.calls.append(f"du {path}")
        return self.bytes.pop(0)

    def restart(self):
        self.calls.append("restart")
        if self.restart_fails_after is not None:
            self.restart_fails_after -= 1
            if self.restart_fails_after < 0:
                raise self._fail("restart failed")

    def stop(self):
        self.calls.append("stop")

    def start(self):
        self.calls.append("start")

    def wait_healthy(self, timeout, probe=None):
        self.calls.append("healthy")
        return 0.0

    def run_gc(self, *, dry_run, delete_untagged=False):
        self.calls.append(f"gc dry_run={dry_run}")
        self.config_at_gc = self.files[CONFIG_PATH]
        if self.gc_fails:
            raise self._fail("garbage-collect exited 1: boom")
        return REAL_RUN

    def run_gc_one_off(self, config_text):
        self.calls.append("gc one-off")
        return REAL_RUN


def test_readonly_mode_collects_read_only_then_restores_and_restarts():
    """Order: measure, prepare (while writable), back up, switch read-only, restart, check,
    collect, restore, restart, measure; and the report's figures."""
    fake = FakeContainer()
    checked = []
    report = garbage_collect(fake, mode="readonly", check_readonly=lambda: checked.append(True),
                             prepare=lambda: fake.calls.append("prepare"))
    assert fake.calls == [
        f"read {CONFIG_PATH}", "du /var/lib/registry", "prepare",
        f"write {CONFIG_PATH}.pre-gc readonly=False", f"write {CONFIG_PATH} readonly=True", "restart", "healthy",
        "gc dry_run=False",
        f"write {CONFIG_PATH} readonly=False", "restart", "healthy", f"exec rm -f {CONFIG_PATH}.pre-gc",
        "du /var/lib/registry",
    ]
    assert checked == [True]
    assert yaml.safe_load(fake.config_at_gc)["storage"]["maintenance"]["readonly"]["enabled"] is True
    assert fake.files[CONFIG_PATH] == fake.original
    assert (report.bytes_before, report.bytes_after, report.blobs_removed) == (1000, 400, 3)
    assert report.writes_refused_seconds >= report.reads_unavailable_seconds >= 0
    assert set(report.timeline) == {"writes_refused_from", "collect_start", "collect_end", "served_again"}


def test_a_failed_collection_still_restores_the_config_and_restarts():
    """GC fails: the original config is back, the registry restarted, and the error says so."""
    fake = FakeContainer(gc_fails=True)
    with pytest.raises(DockerExecError, match="failed, registry restored: .*boom"):
        garbage_collect(fake, mode="readonly")
    assert fake.files[CONFIG_PATH] == fake.original
    assert fake.calls[-4:] == [f"write {CONFIG_PATH} readonly=False", "restart", "healthy",
                               f"exec rm -f {CONFIG_PATH}.pre-gc"]


def test_a_failed_readonly_check_aborts_before_collecting_and_restores():
    """If writes are still accepted after the switch, nothing is collected and the config is restored."""
    fake = FakeContainer()

    def still_writable():
        raise RuntimeError("still accepts pushes")

    with pytest.raises(DockerExecError, match="still accepts pushes"):
        garbage_collect(fake, mode="readonly", check_readonly=still_writable)
    assert not any(call.startswith("gc ") for call in fake.calls)
    assert fake.files[CONFIG_PATH] == fake.original


def test_a_failed_restore_names_the_backup_file():
    """When even the restore fails, the error points at the saved original config."""
    fake = FakeContainer(restart_fails_after=1)
    with pytest.raises(DockerExecError, match=r"config\.yml\.pre-gc"):
        garbage_collect(fake, mode="readonly")


def test_stop_mode_stops_collects_from_a_one_off_and_starts():
    """The tutorial's way: nothing served from stop to start; the config file is never touched."""
    fake = FakeContainer()
    report = garbage_collect(fake, mode="stop")
    assert fake.calls == [f"read {CONFIG_PATH}", "du /var/lib/registry", "stop", "gc one-off", "start", "healthy",
                          "du /var/lib/registry"]
    assert report.reads_unavailable_seconds == report.writes_refused_seconds


def test_dry_run_mode_changes_nothing():
    """Dry run: one `--dry-run` collection in the live container, no writes, no restarts."""
    fake = FakeContainer()
    report = garbage_collect(fake, mode="dry-run")
    assert fake.calls == [f"read {CONFIG_PATH}", "du /var/lib/registry", "gc dry_run=True"]
    assert (report.bytes_after, report.blobs_removed, report.writes_refused_seconds) == (1000, 0, 0.0)


def test_an_unknown_mode_is_refused():
    """A mode other than readonly, stop or dry-run is refused, listing the valid ones."""
    with pytest.raises(ValueError, match="readonly, stop, dry-run"):
        garbage_collect(FakeContainer(), mode="fast")


def test_docker_errors_name_host_and_container():
    """Errors say which Docker host and container, and why."""
    error = docker_exec.DockerExecError("ssh://ops@reg.example", "reg", "no such container")
    assert str(error) == "docker host ssh://ops@reg.example, container 'reg': no such container"
