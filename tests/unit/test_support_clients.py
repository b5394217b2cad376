"""tests/support/clients.py's helpers for the clients built from Go modules: where each tool is
found (or the message that says how to build it), the CA bundle Go programs read, and the check
of what a client pulled into an OCI layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import clients, go_tools, oci


def _tool(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_go_tool_prefers_the_cache_bin(tmp_path, monkeypatch):
    """A tool linked in $GO_TOOLS_CACHE/bin is the one used, before one on PATH."""
    built = _tool(tmp_path / "cache" / "bin", "crane")
    other = _tool(tmp_path / "path", "crane")
    monkeypatch.setenv("GO_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert go_tools.go_tool("crane") == str(built)


def test_go_tool_falls_back_to_path(tmp_path, monkeypatch):
    """Not in the cache (or not executable there), the tool on PATH is used."""
    (tmp_path / "cache" / "bin").mkdir(parents=True)
    (tmp_path / "cache" / "bin" / "oras").write_text("not executable")
    on_path = _tool(tmp_path / "path", "oras")
    monkeypatch.setenv("GO_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert go_tools.go_tool("oras") == str(on_path)


def test_go_tool_missing_names_the_install_script(tmp_path, monkeypatch):
    """Found nowhere, the error names the folder looked in and scripts/install-go-tools.sh."""
    monkeypatch.setenv("GO_TOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(go_tools.GoToolMissing) as raised:
        go_tools.go_tool("regctl")
    message = str(raised.value)
    assert "scripts/install-go-tools.sh" in message and str(tmp_path / "cache" / "bin") in message


def test_go_tool_default_cache(monkeypatch):
    """Without GO_TOOLS_CACHE the cache is the one install-go-tools.sh uses by default."""
    monkeypatch.delenv("GO_TOOLS_CACHE", raising=False)
    assert go_tools.go_tools_bin() == Path("/var/cache/private-registry/go-tools/bin")


@pytest.mark.parametrize("name", ["../crane", "crane;id", "", "Crane"])
def test_go_tool_refuses_other_names(name):
    with pytest.raises(ValueError):
        go_tools.go_tool(name)


def test_ca_bundle_is_the_system_cas_and_the_stack_ca(tmp_path, monkeypatch):
    """The bundle holds the system's CAs, then the stack's CA, each whole."""
    system = tmp_path / "system.pem"
    system.write_text("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----")
    stack = tmp_path / "ca.crt"
    stack.write_text("-----BEGIN CERTIFICATE-----\nSTACK\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(clients, "SYSTEM_CA_BUNDLE", system)
    bundle = clients.ca_bundle(tmp_path / "bundle.pem", stack).read_text()
    assert bundle == system.read_text() + "\n" + stack.read_text()


def test_pulled_layout_digest_checks_manifest_and_marker(tmp_path):
    """The digest the layout's index names comes back only when the manifest stored there
    hashes to it and a layer holds exactly the marker; a wrong marker or a changed manifest
    gives None."""
    layout = tmp_path / "layout"
    oci.write_image(layout, "latest", [b"marker-123"], seed="x")
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert clients.pulled_layout_digest(layout, "marker-123") == digest
    assert clients.pulled_layout_digest(layout, None) == digest
    assert clients.pulled_layout_digest(layout, "marker-12") is None
    oci.blob_path(layout, digest).write_bytes(b"{}")
    assert clients.pulled_layout_digest(layout, None) is None
    assert clients.pulled_layout_digest(tmp_path / "missing", None) is None
