"""Secrets stay secret, wherever the program puts text: resource inputs and outputs, the
engine's log, Python logging, stdout/stderr, error messages and tracebacks, the trust
scripts' command lines, and the dynamic providers' pickled code and error messages.

Complements tests/unit/test_private_registry.py (state text of the default graph) and
tests/unit/test_maintenance.py (pickled providers after success): here every configuration that
brings its own secret (bring-your-own CA key, SSH key *and* password, sudo, generated admin) is
scanned generically, and the failure paths are covered. Each check has a control showing that the
same search finds the secret where it is legitimately held, so a silent search means something.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import pickle
import traceback

import dill
import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks_module

from components.maintenance import (
    GarbageCollection,
    GarbageCollectionProvider,
    ImageDeletion,
    ImageDeletionProvider,
    MaintenanceError,
    RetentionPolicy,
    RetentionProvider,
)
from components.render.nginx import HTPASSWD_PATH
from components.render.token_service import HTPASSWD_PATH as TOKEN_HTPASSWD_PATH
from components.settings import DeletionRule, GcSettings, RetentionRule
from tests.support.engine import EngineMonitor, is_secret, redact, reveal
from tests.support.program import run_program, use_mocks

ALICE = "al1ce:Pass@word-9f3e1c7a5b"
BOB = "b0b-Second:secret@2d8c4e6f"
SSH_PASSWORD = "ssh-Pa55:word@builder-77e1"
HOOK_TOKEN = "Bearer hook-7c1e5b3a9f-token"
COMMAND = "command:local:Command"
REMOTE = "command:remote:Command"


def _ssh_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def _ca() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Own CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


SSH_KEY = _ssh_key()
CA_CERT, CA_KEY = _ca()
TRUST = [
    {"name": "laptop", "kinds": ["docker", "podman"]},
    {"name": "builder", "host": "10.9.8.7", "port": 2222, "user": "ops", "privateKey": SSH_KEY,
     "password": SSH_PASSWORD, "kinds": ["docker", "containerd", "system"], "sudo": True},
]
# Deletion, retention and GC resources (dynamic providers) that log in as the first user.
MAINTENANCE = {"deletions": [{"repository": "team/app", "tags": ["old"]}],
               "retention": [{"repositories": "team/*", "keepLast": 3}], "gc": {"deleteUntagged": True}}
CONFIGS = {
    "users, remote trust with key and password, maintenance": (
        {"users": {"alice": ALICE, "ci@example.com": BOB}, "trust": TRUST, "maintenance": MAINTENANCE},
        ["users", "trust"]),
    "own CA key": (
        {"users": {"alice": ALICE}, "caCertificatePem": CA_CERT, "caPrivateKeyPem": CA_KEY, "trust": TRUST[:1]},
        ["users", "caPrivateKeyPem"]),
    "generated admin password, maintenance": ({"trust": TRUST, "maintenance": MAINTENANCE}, ["trust"]),
    "notification endpoint with a secret header": (
        {"users": {"alice": ALICE}, "notifications": [
            {"name": "audit", "url": "http://hooks.internal:8080/events", "headers": {"Authorization": HOOK_TOKEN}}]},
        ["users", "notifications"]),
}


def _pem_body(pem: str) -> str:
    """The first base64 line of a private key PEM: private material, and long enough to be unique."""
    return pem.strip().splitlines()[1]


def held_secrets(run) -> dict[str, str]:
    """Every secret the run's resources hold, by what it is (configured and generated ones)."""
    m = run.monitor
    found = {"password alice": ALICE, "password ci@example.com": BOB, "SSH password": SSH_PASSWORD,
             "SSH key": _pem_body(SSH_KEY), "own CA key": _pem_body(CA_KEY), "notification header": HOOK_TOKEN}
    for key in m.by_type("tls:index/privateKey:PrivateKey"):
        found[f"{key.name} PEM"] = _pem_body(key.plain_outputs["privateKeyPem"])
    for password in m.by_type("random:index/randomPassword:RandomPassword"):
        found[password.name] = password.plain_outputs["result"]
    for container in m.by_type("docker:index/container:Container"):
        for upload in container.plain_inputs.get("uploads") or []:
            if upload["file"] in (HTPASSWD_PATH, TOKEN_HTPASSWD_PATH):
                for line in upload["content"].splitlines():
                    found[f"htpasswd hash of {line.split(':')[0]}"] = line.split(":", 1)[1]
    for user, password in run.exports["passwords"].items():
        found[f"exported password of {user}"] = password
    return found


def exposed(value, secrets: dict[str, str], path: str = "") -> list[str]:
    """Where in ``value`` a secret appears outside a secret wrapper."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [hit for key, item in value.items() for hit in exposed(item, secrets, f"{path}.{key}")]
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in exposed(item, secrets, f"{path}[{i}]")]
    if isinstance(value, str):
        return [f"{path}: {what}" for what, secret in secrets.items() if secret and secret in value]
    return []


class EngineLog:
    """Records every message the program sends to the engine's log (what `pulumi up` prints)."""

    def __init__(self, monkeypatch):
        self.messages: list[str] = []
        original = pulumi_mocks_module.MockEngine.Log

        def record(engine, request):
            self.messages.append(request.message)
            return original(engine, request)

        monkeypatch.setattr(pulumi_mocks_module.MockEngine, "Log", record)


@pytest.fixture
def engine_log(monkeypatch) -> EngineLog:
    return EngineLog(monkeypatch)


@pytest.fixture
def wire(monkeypatch) -> dict[str, dict]:
    """Each resource's inputs exactly as the SDK sends them to the engine, by resource name.

    The engine stores inputs as sent, with secret markers where they are -- possibly deep in a
    list. Deserialising (as the recorded ``Registered.inputs`` are) hoists a nested secret to
    the whole top-level value, which would hide a plain-text value sitting next to a secret in
    the same list (an htpasswd upload beside the key upload, say); so the raw form is checked.
    """
    sent: dict[str, dict] = {}
    original = EngineMonitor.RegisterResource

    def record(monitor, request):
        sent[request.name] = json_format.MessageToDict(request.object)
        return original(monitor, request)

    monkeypatch.setattr(EngineMonitor, "RegisterResource", record)
    return sent


@pytest.mark.parametrize("config, secret_keys", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_secret_is_wrapped_wherever_it_is_held(config, secret_keys, wire):
    """In every resource's inputs (as sent to the engine, secret markers where they are) and
    outputs (with additional_secret_outputs applied, as the engine does), each password, private
    key, SSH credential, htpasswd hash and generated secret sits inside a secret wrapper, so the
    state the engine writes holds none of them. Control: with the wrappers removed, the same
    search finds every expected secret."""
    run = run_program(config, secret_keys=secret_keys)
    secrets = held_secrets(run)
    present = json.dumps([[reveal(r.inputs), reveal(r.outputs)] for r in run.monitor.registered])
    held = {what: value for what, value in secrets.items() if json.dumps(value)[1:-1] in present}
    expected = {"registry-registry-http-secret", "registry-server-key PEM"}
    expected |= {f"htpasswd hash of {user}" for user in run.exports["userNames"]}
    expected |= {"own CA key"} if "caPrivateKeyPem" in config else {"registry-ca-key PEM"}
    if any("privateKey" in target for target in config.get("trust", [])):
        expected |= {"SSH key", "SSH password"}
    if any(endpoint.get("headers") for endpoint in config.get("notifications", [])):
        expected |= {"notification header"}
    dynamic = [r for r in run.monitor.registered if "__provider" in r.inputs]
    if "maintenance" in config:
        # The maintenance resources hold the first user's password (configured or generated).
        first = run.exports["userNames"][0]
        expected |= {f"exported password of {first}"}
        assert len(dynamic) == 3
    assert expected <= set(held), sorted(expected - set(held))
    problems = []
    for r in run.monitor.registered:
        problems += [f"{r.name} input{hit}" for hit in exposed(wire[r.name], held)]
        problems += [f"{r.name} output{hit}" for hit in exposed(r.outputs, held)]
    for r in dynamic:
        # The provider's code, dill-pickled by Pulumi, is stored in state with the resource.
        pickled = base64.b64decode(r.plain_inputs["__provider"])
        assert b"components.maintenance" in pickled
        problems += [f"{r.name} pickled provider: {what}" for what, value in held.items() if value.encode() in pickled]
    assert problems == []
    state = json.dumps([[redact(wire[r.name]), redact(r.outputs)] for r in run.monitor.registered])
    assert [what for what, value in held.items() if json.dumps(value)[1:-1] in state] == []
    assert "passwords" in run.secret_exports


def test_trust_command_lines_hold_no_secret():
    """The install, update and delete scripts of every trust target -- local and over SSH, with
    sudo -- carry the CA certificate but no password, SSH key or SSH password, no private key
    and no htpasswd hash: command lines end up in process lists, shell history and logs.
    Control: the CA certificate's body is found in the same text."""
    config, secret_keys = CONFIGS["users, remote trust with key and password, maintenance"]
    run = run_program(config, secret_keys=secret_keys)
    secrets = held_secrets(run)
    commands = run.monitor.by_type(COMMAND) + run.monitor.by_type(REMOTE)
    assert {c.type for c in commands} == {COMMAND, REMOTE}
    ca_body = run.exports["caCertificatePem"].strip().splitlines()[1]
    for command in commands:
        inputs = command.plain_inputs
        scripts = {k: inputs[k] for k in ("create", "update", "delete") if inputs.get(k)}
        assert set(scripts) == {"create", "update", "delete"}
        assert ca_body in scripts["create"]
        text = json.dumps({k: v for k, v in inputs.items() if k != "connection"})
        assert [what for what, value in secrets.items() if value in text or json.dumps(value)[1:-1] in text] == []
    remote = run.monitor.one(REMOTE)
    connection = remote.inputs["connection"]
    assert is_secret(connection) or (is_secret(connection["privateKey"]) and is_secret(connection["password"]))


@pytest.mark.parametrize("config, secret_keys", CONFIGS.values(), ids=CONFIGS.keys())
def test_logs_and_output_hold_no_secret(config, secret_keys, engine_log, caplog, capfd):
    """Nothing the program writes to the engine's log, to Python logging (the runtime logs every
    registration at debug level) or to stdout/stderr contains a secret."""
    with caplog.at_level(logging.DEBUG):
        run = run_program(config, secret_keys=secret_keys)
    out, err = capfd.readouterr()
    secrets = held_secrets(run)
    text = "\n".join([*engine_log.messages, caplog.text, out, err])
    assert "registering resource" in caplog.text  # the debug log was captured
    assert [what for what, value in secrets.items() if value in text] == []


def test_the_log_capture_sees_what_the_program_logs(engine_log, caplog):
    """Control: a message sent with pulumi.log during a mocked run reaches both captures."""
    use_mocks()

    @pulumi.runtime.test
    def program():
        pulumi.log.warn("control-message-4e7b")
        return pulumi.Output.from_input(None)

    with caplog.at_level(logging.DEBUG):
        program()
    assert "control-message-4e7b" in engine_log.messages
    assert "control-message-4e7b" in caplog.text


BAD = {
    "short password": ({"users": {"alice": ALICE, "bob": "sh0rt:pw@1"}}, ["users"], "sh0rt:pw@1"),
    "password with a line break": ({"users": {"alice": "line1-Pass@word\nline2-secret"}}, ["users"], "line1-Pass@word"),
    "password over 72 bytes": ({"users": {"alice": "L0ng:pass@" + "w" * 70}}, ["users"], "L0ng:pass@" + "w" * 70),
    "user name with ':'": ({"users": {"ali:ce": ALICE}}, ["users"], ALICE),
    "passwords not stored as secret": ({"users": {"alice": ALICE}}, [], ALICE),
    "SSH credentials not stored as secret": ({"users": {"alice": ALICE}, "trust": TRUST}, ["users"], SSH_PASSWORD),
    "own CA key without its certificate": ({"users": {"alice": ALICE}, "caPrivateKeyPem": CA_KEY},
                                           ["users", "caPrivateKeyPem"], _pem_body(CA_KEY)),
    "notification header not stored as secret": (
        {"users": {"alice": ALICE}, "notifications": [{"name": "a", "url": "http://h/", "headers": {"X-Key": HOOK_TOKEN}}]},
        ["users"], HOOK_TOKEN),
    "bad notification URL next to a header": (
        {"users": {"alice": ALICE}, "notifications": [{"name": "a", "url": "ftp://h/", "headers": {"X-Key": HOOK_TOKEN}}]},
        ["users", "notifications"], HOOK_TOKEN),
    "unknown key next to secrets": ({"users": {"alice": ALICE}, "trust": TRUST, "usres": {"x": ALICE}},
                                    ["users", "trust"], SSH_PASSWORD),
}


@pytest.mark.parametrize("config, secret_keys, secret", BAD.values(), ids=BAD.keys())
def test_settings_errors_name_the_setting_but_hold_no_secret(config, secret_keys, secret, engine_log, caplog, capfd):
    """A refused configuration fails the whole program run (as `pulumi preview` would) with a
    message naming the setting; neither the message, the full traceback with its chained
    causes, the engine log, Python logging nor stdout/stderr shows any configured secret."""
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as caught:
        run_program(config, secret_keys=secret_keys, preview=True)
    message = str(caught.value)
    assert "private-registry:" in message, message
    text = "\n".join([message, repr(caught.value), *traceback.format_exception(caught.value),
                      *engine_log.messages, caplog.text, *capfd.readouterr()])
    every = [secret, ALICE, SSH_PASSWORD, _pem_body(SSH_KEY), _pem_body(CA_KEY)]
    assert [s for s in every if s in text] == []


# --- dynamic providers ---------------------------------------------------------------------------

MAINT_PASSWORD = "Maint-Pa55:word@dyn-3c9a"
UNREACHABLE = "https://127.0.0.1:1"


def _connection():
    return {"registry_url": UNREACHABLE, "ca_pem": CA_CERT, "username": "admin",
            "password": pulumi.Output.secret(MAINT_PASSWORD)}


def test_dynamic_resources_keep_the_password_out_of_state_and_pickled_code(pulumi_mocks):
    """ImageDeletion, RetentionPolicy and GarbageCollection registered as Pulumi would: the
    password input and output are secret, the state text does not hold it, and neither does the
    dill-pickled provider Pulumi stores with each resource (decoded from its input)."""

    @pulumi.runtime.test
    def program():
        resources = [
            ImageDeletion("del", rule=DeletionRule(repository="app", tags=("v1",)), **_connection()),
            RetentionPolicy("ret", rule=RetentionRule(repositories="team/*", keep_last=2), **_connection()),
            GarbageCollection("gc", docker_host="unix:///var/run/docker.sock", container_name="reg",
                              gc=GcSettings(), trigger="t", **_connection()),
        ]
        return pulumi.Output.all(*[r.id for r in resources])

    program()
    dynamic = [r for r in pulumi_mocks.registered if r.type.startswith("pulumi-python:dynamic/")]
    assert len(dynamic) == 3
    for resource in dynamic:
        assert is_secret(resource.inputs["password"]) and is_secret(resource.outputs["password"])
        pickled = base64.b64decode(resource.plain_inputs["__provider"])
        assert b"components.maintenance" in pickled
        assert MAINT_PASSWORD.encode() not in pickled
    assert MAINT_PASSWORD not in pulumi_mocks.state_text()


def test_provider_failures_hold_no_secret(caplog, monkeypatch):
    """When a provider cannot reach the registry or the Docker host, its error (message, chained
    causes, traceback) and the logs never show the password, and the provider still pickles
    without it afterwards. Control: dill does capture a password a provider keeps."""
    # Providers wait (bounded) for a registry that is still starting; no need to wait here.
    monkeypatch.setattr("components.maintenance_providers.READY_TIMEOUT_SECONDS", 0.5)
    props = {"registryUrl": UNREACHABLE, "caPem": CA_CERT, "username": "admin", "password": MAINT_PASSWORD}
    attempts = [
        (ImageDeletionProvider(), {**props, "repository": "app", "tags": ["v1"], "digests": []}),
        (RetentionProvider(), {**props, "repositories": "team/*", "keepLast": 1}),
        (GarbageCollectionProvider(), {**props, "dockerHost": "tcp://127.0.0.1:1", "containerName": "reg",
                                       "mode": "readonly", "trigger": "t"}),
    ]
    with caplog.at_level(logging.DEBUG):
        for provider, inputs in attempts:
            with pytest.raises(MaintenanceError) as caught:
                provider.create(inputs)
            text = "".join(traceback.format_exception(caught.value))
            assert MAINT_PASSWORD not in text, text
            assert MAINT_PASSWORD.encode() not in dill.dumps(provider, protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    assert MAINT_PASSWORD not in caplog.text

    class Leaky(ImageDeletionProvider):
        def __init__(self):
            self.kept = MAINT_PASSWORD

    assert MAINT_PASSWORD.encode() in dill.dumps(Leaky(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
