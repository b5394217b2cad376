"""The SDK's dynamic provider host, driven the way the Pulumi engine drives it.

:class:`ProviderHost` starts what the ``pulumi-resource-pulumi-python`` launcher runs,
``python -u -m pulumi.dynamic <engine address>``, with cwd = project root (or any other),
reads the port it prints, and speaks the ResourceProvider gRPC protocol with the SDK's own
stubs (Handshake, GetPluginInfo, Configure, Check, Diff, Create, Read, Update, Delete). A
minimal fake Engine service listens at the address passed, for the host's logging.

Properties are marshalled as the engine sends them (:func:`to_wire`): through
``rpc.serialize_properties`` into protobuf Structs, so every number arrives as a float;
inputs not known in a preview travel as the unknown marker and reach the provider as
``pulumi.output.Unknown``; secrets travel plain, since Configure answers
``acceptSecrets=false``. Like the engine, :class:`EngineResource` marks outputs secret by name
again (``additional_secret_outputs`` and secret inputs) before storing them.

:func:`call_in_process` marshals the same way around a provider object called in this process,
for unit tests.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2, provider_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_KEY = "__provider"
UNKNOWN = Unknown()  # what a test passes for "not known in this preview"


def _plain(value: Any) -> Any:
    """Secrets unwrapped, as the engine sends them to a provider that does not accept secrets."""
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_wire(props: dict[str, Any]) -> struct_pb2.Struct:
    """``props`` as the engine puts them on the wire: a Struct, secrets plain, unknowns marked."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(_plain(props), {}))
    finally:
        loop.close()


def from_wire(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as the engine reads a provider's answer (unknowns kept)."""
    return rpc.deserialize_properties(struct, keep_unknowns=True)


def as_host_sees(props: dict[str, Any], *, keep_unknowns: bool = True) -> dict[str, Any]:
    """``props`` after the round trip engine -> provider host: floats, ``Unknown``, plain secrets."""
    return rpc.deserialize_properties(to_wire(props), keep_unknowns=keep_unknowns)


class ProviderCallError(Exception):
    """The provider host answered a call with a gRPC error (the provider raised)."""

    def __init__(self, method: str, error: grpc.RpcError):
        self.method = method
        self.code = error.code()
        self.details = error.details() or ""
        super().__init__(f"{method}: {self.code.name}: {self.details}")


class FakeEngine(engine_pb2_grpc.EngineServicer):
    """The engine's own gRPC service, as far as a provider host uses it: logging."""

    def __init__(self) -> None:
        self.logs: list[str] = []

    def Log(self, request, context):  # noqa: N802 - gRPC method name
        self.logs.append(request.message)
        return empty_pb2.Empty()

    def GetRootResource(self, request, context):  # noqa: N802
        return engine_pb2.GetRootResourceResponse(urn="")

    def SetRootResource(self, request, context):  # noqa: N802
        return engine_pb2.SetRootResourceResponse()


@dataclass
class ProviderHost:
    """One provider host process and a gRPC channel to it; use as a context manager."""

    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    start_timeout: float = 30.0

    def __enter__(self) -> "ProviderHost":
        self.engine = FakeEngine()
        self._engine_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        engine_pb2_grpc.add_EngineServicer_to_server(self.engine, self._engine_server)
        engine_port = self._engine_server.add_insecure_port("127.0.0.1:0")
        self._engine_server.start()
        self.engine_address = f"127.0.0.1:{engine_port}"
        # What the engine's plugin host passes a language plugin's provider.
        env = {**os.environ, "PULUMI_RUNTIME_TOOLCHAIN": "pip", "PULUMI_RUNTIME_VIRTUALENV": str(Path(self.python).parents[1]),
               "PULUMI_PROJECT": "private-registry", **self.env}
        if "PYTHONPATH" not in self.env:
            env.pop("PYTHONPATH", None)
        self.process = subprocess.Popen(
            [self.python, "-u", "-m", "pulumi.dynamic", self.engine_address],
            cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        try:
            self.port = self._read_port()
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
            grpc.channel_ready_future(self.channel).result(timeout=self.start_timeout)
            self.stub = provider_pb2_grpc.ResourceProviderStub(self.channel)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""
                raise RuntimeError(f"provider host printed no port (exit {self.process.poll()}): {stderr[-2000:]}")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 64)
                if not chunk:
                    continue
                line += chunk
        return int(line.strip())

    def __exit__(self, *exc: object) -> None:
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (getattr(self, "process", None) and (self.process.stdout, self.process.stderr)) or ():
            stream.close()
        self._engine_server.stop(0)

    def call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=600)
        except grpc.RpcError as error:
            raise ProviderCallError(method, error) from None

    def start_session(self) -> provider_pb2.ConfigureResponse:
        """What the engine does first: Handshake (the SDK host answers UNIMPLEMENTED, and the
        engine falls back), GetPluginInfo, Configure offering secrets."""
        try:
            self.stub.Handshake(provider_pb2.ProviderHandshakeRequest(
                engine_address=self.engine_address, root_directory=str(ROOT), program_directory=str(ROOT)), timeout=30)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        self.plugin_info = self.call("GetPluginInfo", empty_pb2.Empty())
        return self.call("Configure", provider_pb2.ConfigureRequest(
            acceptSecrets=True, acceptResources=True, args=struct_pb2.Struct()))


@dataclass
class Stored:
    """A resource as the engine keeps it in state."""

    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]


@dataclass
class Preview:
    """What one resource contributes to a preview."""

    inputs: dict[str, Any]  # the checked inputs
    failures: list[str]
    changes: Optional[bool] = None  # None: a create (no diff)
    replaces: list[str] = field(default_factory=list)


class PreviewFailed(Exception):
    """Check returned failures: the engine stops the preview or update with them."""


@dataclass
class EngineResource:
    """The engine's steps for one dynamic resource: preview, up, refresh, destroy."""

    host: ProviderHost
    provider: str  # the pickled provider, as the SDK stores it in ``__provider``
    type: str
    name: str
    secret_outputs: tuple[str, ...] = ("password",)

    @classmethod
    def of(cls, host: ProviderHost, provider: Any, type_: str, name: str, **kwargs: Any) -> "EngineResource":
        return cls(host, serialize_provider(provider), type_, name, **kwargs)

    @property
    def urn(self) -> str:
        return f"urn:pulumi:test::private-registry::pulumi-python:dynamic/registry:{self.type}::{self.name}"

    def _news(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {**inputs, PROVIDER_KEY: self.provider}

    def check(self, inputs: dict[str, Any], stored: Optional[Stored] = None) -> tuple[dict[str, Any], list[str]]:
        response = self.host.call("Check", provider_pb2.CheckRequest(
            urn=self.urn, name=self.name, type=self.type, olds=to_wire(stored.inputs if stored else {}),
            news=to_wire(self._news(inputs)), randomSeed=b"0" * 32))
        return from_wire(response.inputs), [f.reason for f in response.failures]

    def diff(self, stored: Stored, checked: dict[str, Any]) -> provider_pb2.DiffResponse:
        return self.host.call("Diff", provider_pb2.DiffRequest(
            id=stored.id, urn=self.urn, name=self.name, type=self.type, olds=to_wire(stored.outputs),
            news=to_wire(checked), old_inputs=to_wire(stored.inputs)))

    def preview(self, inputs: dict[str, Any], stored: Optional[Stored] = None) -> Preview:
        checked, failures = self.check(inputs, stored)
        if failures or stored is None:
            return Preview(checked, failures)
        diff = self.diff(stored, checked)
        return Preview(checked, failures, diff.changes == provider_pb2.DiffResponse.DIFF_SOME, list(diff.replaces))

    def _store(self, id_: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> Stored:
        secret_inputs = [k for k in self.secret_outputs if k in inputs]
        marked = {k: rpc.wrap_rpc_secret(v) if k in secret_inputs and not rpc.is_rpc_secret(v) else v
                  for k, v in outputs.items()}
        return Stored(id_, inputs, marked)

    def up(self, inputs: dict[str, Any], stored: Optional[Stored] = None) -> Stored:
        """``pulumi up`` for this resource: check, then create, or diff and update if it changed."""
        checked, failures = self.check(inputs, stored)
        if failures:
            raise PreviewFailed("; ".join(failures))
        if stored is None:
            response = self.host.call("Create", provider_pb2.CreateRequest(
                urn=self.urn, name=self.name, type=self.type, properties=to_wire(checked)))
            return self._store(response.id, checked, from_wire(response.properties))
        diff = self.diff(stored, checked)
        if diff.changes != provider_pb2.DiffResponse.DIFF_SOME:
            return stored
        if list(diff.replaces):
            self.destroy(stored)
            return self.up(inputs, None)
        response = self.host.call("Update", provider_pb2.UpdateRequest(
            id=stored.id, urn=self.urn, name=self.name, type=self.type, olds=to_wire(stored.outputs),
            news=to_wire(checked), old_inputs=to_wire(stored.inputs)))
        return self._store(stored.id, checked, from_wire(response.properties))

    def refresh(self, stored: Stored) -> Stored:
        response = self.host.call("Read", provider_pb2.ReadRequest(
            id=stored.id, urn=self.urn, name=self.name, type=self.type, properties=to_wire(stored.outputs),
            inputs=to_wire(stored.inputs)))
        return self._store(response.id, stored.inputs, from_wire(response.properties))

    def destroy(self, stored: Stored) -> None:
        self.host.call("Delete", provider_pb2.DeleteRequest(
            id=stored.id, urn=self.urn, name=self.name, type=self.type, properties=to_wire(stored.outputs),
            old_inputs=to_wire(stored.inputs)))


def call_in_process(provider: Any, method: str, *args: Any) -> Any:
    """Call ``provider.<method>`` with every property dict marshalled as the host hands it over.

    Check and Diff keep unknowns (``Unknown`` objects); the other calls do not, as in the host.
    """
    keep = method in ("check", "diff")
    marshalled = [as_host_sees(a, keep_unknowns=keep) if isinstance(a, dict) else a for a in args]
    return getattr(provider, method)(*marshalled)


PROTOCOL = ("check", "diff", "create", "update", "read", "delete")


class Wired:
    """A provider whose protocol methods receive their property dicts as the host hands them
    over (:func:`call_in_process`); everything else passes through."""

    def __init__(self, provider: Any):
        self.provider = provider

    def __getattr__(self, name: str) -> Any:
        if name in PROTOCOL:
            return lambda *args: call_in_process(self.provider, name, *args)
        return getattr(self.provider, name)
