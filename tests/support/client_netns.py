"""Clients with addresses of their own: threads that enter the network namespace of a helper
container on a stack's network, so nginx sees each as a different client address.

Connections to the published port on loopback all reach nginx from one address (Docker's
userland proxy), so per-address limits cannot tell loopback clients apart. A thread that has
entered a helper's namespace (``setns``, which moves the calling thread only) connects straight
to the proxy container's address on the stack's network, from the helper's address.
"""

from __future__ import annotations

import ctypes
import os
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import docker

from tests.support.deploy import STANDIN_BUSYBOX

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def enter(pid: int) -> None:
    """Move the calling thread into the network namespace of process ``pid`` for good (a pool's
    worker thread, which ends with its pool)."""
    _setns(f"/proc/{pid}/ns/net")


@contextmanager
def inside(pid: int) -> Iterator[None]:
    """The calling thread in the network namespace of process ``pid``, then back in its own."""
    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    fd = os.open(own, os.O_RDONLY)
    try:
        _setns(f"/proc/{pid}/ns/net")
        try:
            yield
        finally:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "could not return to the thread's own network namespace")
    finally:
        os.close(fd)


@dataclass
class ClientAddresses:
    """``count`` idle helper containers on ``network``; removed by :meth:`remove`."""

    client: docker.DockerClient
    network: str
    count: int
    prefix: str = field(default_factory=lambda: f"netns-{uuid.uuid4().hex[:8]}")
    containers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        try:
            for i in range(self.count):
                container = self.client.containers.run(
                    STANDIN_BUSYBOX, ["sleep", "900"], name=f"{self.prefix}-client-{i}", network=self.network,
                    detach=True, labels={"private-registry.test": "client-netns"},
                )
                self.containers.append(container)
            for container in self.containers:
                container.reload()
        except BaseException:
            self.remove()
            raise

    @property
    def pids(self) -> list[int]:
        return [c.attrs["State"]["Pid"] for c in self.containers]

    @property
    def addresses(self) -> list[str]:
        return [c.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"] for c in self.containers]

    def remove(self) -> None:
        for container in self.containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        self.containers.clear()


def container_address(client: docker.DockerClient, name: str, network: str) -> str:
    """A container's address on ``network``."""
    return client.containers.get(name).attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def pool_initializer(pids: list[int]):
    """A ``ThreadPoolExecutor`` initializer that puts each new worker thread in the next of
    ``pids``' namespaces, round robin."""
    lock, turn = threading.Lock(), [0]

    def initialize() -> None:
        with lock:
            pid = pids[turn[0] % len(pids)]
            turn[0] += 1
        enter(pid)

    return initialize
