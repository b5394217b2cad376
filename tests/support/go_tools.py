"""The Go programs scripts/install-go-tools.sh builds (distribution 3's registry, crane, regctl,
oras, cosign), found where it links them, and the registry binary of each distribution."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

# scripts/install-go-tools.sh's default cache (its GO_TOOLS_CACHE).
GO_TOOLS_CACHE = "/var/cache/private-registry/go-tools"


class GoToolMissing(RuntimeError):
    """A program built from its Go module is not installed."""


def go_tools_bin() -> Path:
    """Where scripts/install-go-tools.sh links the tools it builds: ``$GO_TOOLS_CACHE/bin``."""
    return Path(os.environ.get("GO_TOOLS_CACHE") or GO_TOOLS_CACHE) / "bin"


def go_tool(name: str) -> str:
    """The path of the Go-built tool ``name``: the one scripts/install-go-tools.sh built (in
    :func:`go_tools_bin`), else one on PATH. Missing, it raises :class:`GoToolMissing`, whose
    message says how to build it (so a test fails, saying so, rather than skipping)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ValueError(f"not a tool name: {name!r}")
    built = go_tools_bin() / name
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    found = shutil.which(name)
    if found:
        return found
    raise GoToolMissing(
        f"{name} not found in {go_tools_bin()} nor on PATH: build it with scripts/install-go-tools.sh "
        f"(needs go on PATH, e.g. /usr/local/go/bin; set GO_TOOLS_CACHE if its cache is elsewhere)")


def registry_binary(version: int) -> str:
    """distribution ``version``'s registry on this host: 3 built from its Go module, 2.8 Debian's."""
    return go_tool("registry") if version == 3 else "docker-registry"
