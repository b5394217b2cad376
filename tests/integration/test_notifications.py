"""Notifications as the program deploys them: the registry (token mode, the default) posts its
events to a webhook receiver on the stack's private network, with a secret header.

The receiver is a container joined to ``<namePrefix>-net`` (the network the program declares
for the registry), reached by its container name through Docker's DNS: a tiny HTTP server on
the Python stand-in image that records every POST (headers and envelope) as one JSON line on
its stdout. Real pushes and pulls with skopeo and deletions through the maintenance client; each
delivers its event with the repository, tag, digest, the user and the request method. The
receiver stopped (or frozen) does not slow pushes down, and what it missed arrives when it is
back (the registry queues and retries). Runs on 3 and, in the 2.8 pass, on 2.8.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from components.registry_api import RegistryClient
from components.render.notifications import EVENTS_MEDIA_TYPES
from tests.support import oci
from tests.support.deploy import STANDIN_PYTHON, docker_cli, live_stack
from tests.support.program import REGISTRY_VERSION
from tests.support.waiting import wait_for

USER = "alice"
PASSWORD = "alice-password-0123456789"
RECEIVER_PORT = 8080
# Blob events carry the blob's media type as the registry stores it; ignoring it leaves the
# manifest events (and proves ``ignore.mediaTypes`` reaches the registry).
BLOB_MEDIA_TYPE = "application/octet-stream"
RECEIVER = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        record = {"received": time.time(), "path": self.path, "headers": dict(self.headers.items()),
                  "envelope": json.loads(body)}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Receiver).serve_forever()
"""


class Receiver:
    """The receiver container: started on the stack's network, its deliveries read from its log."""

    def __init__(self, name: str, network: str):
        self.name = name
        docker_cli("run", "-d", "--name", name, "--network", network, "--entrypoint", "python3", STANDIN_PYTHON,
                   "-u", "-c", RECEIVER, str(RECEIVER_PORT))

    def deliveries(self) -> list[dict]:
        out = docker_cli("logs", self.name).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def events(self) -> list[tuple[dict, dict]]:
        """(event, the delivery's headers) of every event received, in order."""
        return [(event, d["headers"]) for d in self.deliveries() for event in d["envelope"]["events"]]

    def remove(self) -> None:
        docker_cli("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notify")
    token = "Bearer " + secrets.token_urlsafe(24)
    receiver_name = f"notify-receiver-{secrets.token_hex(4)}"
    notifications = [{
        "name": "audit",
        "url": f"http://{receiver_name}:{RECEIVER_PORT}/registry-events",
        "headers": {"Authorization": token},
        "timeoutSeconds": 2, "threshold": 3, "backoffSeconds": 1,
        "ignore": {"mediaTypes": [BLOB_MEDIA_TYPE]},
    }]
    with live_stack(tmp, "notify", {USER: PASSWORD}, notifications=notifications,
                    secret_keys=("notifications",)) as live:
        receiver = Receiver(receiver_name, f"{live.config['namePrefix']}-net")
        try:
            layout = tmp / "layout"
            for tag in ("v1", "v2", *[f"down{i}" for i in range(3)], *[f"hung{i}" for i in range(3)]):
                oci.write_image(layout, tag, [32 * 1024, 8 * 1024], seed=f"notify-{tag}")
            yield live, receiver, token, layout
        finally:
            receiver.remove()


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=180)


def push(live, layout, tag: str, repository: str = "team/app") -> float:
    started = time.monotonic()
    done = skopeo("copy", "-q", f"--dest-cert-dir={live.cert_dir}", "--dest-creds", f"{USER}:{PASSWORD}",
                  f"oci:{layout}:{tag}", f"docker://{live.address}/{repository}:{tag}")
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


def client(live) -> RegistryClient:
    return RegistryClient(f"https://{live.address}", username=USER, password=PASSWORD, ca_pem=live.ca_file.read_text())


def wait_event(receiver: Receiver, match, what: str, timeout: float = 30) -> tuple[dict, dict]:
    def found():
        return next(((e, h) for e, h in receiver.events() if match(e)), None)
    return wait_for(found, timeout, interval=0.2, what=what,
                    log=lambda: "\n".join(json.dumps(e["target"]) for e, _ in receiver.events()))


def log_line(event: dict, headers: dict, token: str) -> str:
    target, request = event["target"], event["request"]
    auth = "ok" if headers.get("Authorization") == token else "MISSING"
    return (f"{event['timestamp'][:23]} {event['action']:<6} {request['method']:<6} "
            f"{target['repository']}:{target.get('tag') or '-'} {(target.get('digest') or '-')[:19]} "
            f"actor={event['actor'].get('name') or '-'} media={target.get('mediaType') or '-'} auth={auth}")


def test_push_pull_delete_each_deliver_their_event(stack):
    """A push (manifest PUT), a pull (manifest GET) and a delete each reach the receiver on the
    private network as an event with the action, repository, tag, digest, the pushing user as
    actor and the request's method; every POST carries the secret Authorization header and the
    events media type, at the configured path. Blob events are ignored (ignore.mediaTypes), so
    only manifest events arrive. On 3 a delete by tag names the tag; a delete by digest (both
    versions) names the digest. Prints the delivery log."""
    live, receiver, token, layout = stack
    push(live, layout, "v1")
    with client(live) as registry:
        digest = registry.resolve("team/app", "v1")
    pushed, _ = wait_event(receiver, lambda e: e["action"] == "push" and e["target"].get("tag") == "v1", "push event")
    assert (pushed["target"]["repository"], pushed["target"]["digest"]) == ("team/app", digest)
    assert pushed["request"]["method"] == "PUT" and pushed["actor"]["name"] == USER

    pulled = skopeo("copy", "-q", f"--src-cert-dir={live.cert_dir}", "--src-creds", f"{USER}:{PASSWORD}",
                    f"docker://{live.address}/team/app:v1", f"oci:{live.cert_dir.parent / 'pulled'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    pull, _ = wait_event(receiver, lambda e: e["action"] == "pull" and e["request"]["method"] == "GET", "pull event")
    assert (pull["target"]["repository"], pull["target"]["tag"], pull["target"]["digest"]) == ("team/app", "v1", digest)
    assert pull["actor"]["name"] == USER

    push(live, layout, "v2")
    with client(live) as registry:
        digest2 = registry.resolve("team/app", "v2")
        if REGISTRY_VERSION >= 3:
            assert registry.untag("team/app", "v1")
        assert registry.delete("team/app", digest2)
    deleted, _ = wait_event(receiver, lambda e: e["action"] == "delete" and e["target"].get("digest") == digest2,
                            "delete-by-digest event")
    assert deleted["target"]["repository"] == "team/app" and deleted["request"]["method"] == "DELETE"
    assert deleted["actor"]["name"] == USER
    if REGISTRY_VERSION >= 3:
        untagged, _ = wait_event(receiver, lambda e: e["action"] == "delete" and e["target"].get("tag") == "v1",
                                 "delete-by-tag event")
        assert untagged["target"]["repository"] == "team/app" and untagged["actor"]["name"] == USER

    deliveries = receiver.deliveries()
    assert {d["path"] for d in deliveries} == {"/registry-events"}
    assert all(d["headers"].get("Authorization") == token for d in deliveries)
    assert {d["headers"]["Content-Type"] for d in deliveries} == {EVENTS_MEDIA_TYPES[REGISTRY_VERSION]}
    events = receiver.events()
    assert [e["target"].get("mediaType") for e, _ in events if e["target"].get("mediaType") == BLOB_MEDIA_TYPE] == []
    print(f"\nnotification delivery log (distribution {REGISTRY_VERSION}, {len(deliveries)} POSTs, "
          f"{len(events)} events; Authorization header compared, not shown):")
    for event, headers in events:
        print("  " + log_line(event, headers, token))


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_receiver_down_does_not_stop_pushes(stack, outage):
    """With the receiver stopped (its name no longer resolves) or frozen (``docker pause``: the
    kernel still accepts the connection, nothing answers until the 2 s timeout), three pushes
    succeed and take no longer than pushes with the receiver up; each event the receiver missed
    arrives once it is back (the registry queues events in memory and retries them: 3 failures,
    then one try per second), none lost."""
    live, receiver, token, layout = stack
    tags = [f"{'down' if outage == 'stopped' else 'hung'}{i}" for i in range(3)]
    repository = f"outage/{outage}"
    baseline = [push(live, layout, tag, f"{repository}-baseline") for tag in tags]
    wait_event(receiver, lambda e: e["action"] == "push" and e["target"]["repository"] == f"{repository}-baseline"
               and e["target"].get("tag") == tags[-1], "baseline pushes' events")
    docker_cli("stop" if outage == "stopped" else "pause", receiver.name)
    try:
        during = [push(live, layout, tag, repository) for tag in tags]
        down_at = time.time()
        time.sleep(3)  # several delivery attempts fail while it is down
    finally:
        docker_cli("start" if outage == "stopped" else "unpause", receiver.name)
    back_at = time.time()
    for tag in tags:
        event, headers = wait_event(
            receiver, lambda e, tag=tag: e["action"] == "push" and e["target"]["repository"] == repository
            and e["target"].get("tag") == tag, f"the missed push event of {tag}", timeout=60)
        assert headers["Authorization"] == token and event["actor"]["name"] == USER
    missed = [(d["received"], e["id"]) for d in receiver.deliveries() for e in d["envelope"]["events"]
              if e["target"]["repository"] == repository]
    arrived = [received for received, _ in missed]
    print(f"\nreceiver {outage}: pushes {', '.join(f'{s:.2f}' for s in during)} s "
          f"(receiver up: {', '.join(f'{s:.2f}' for s in baseline)} s); the {len(tags)} missed events arrived "
          f"{min(arrived) - back_at:+.1f} to {max(arrived) - back_at:+.1f} s from its return "
          f"(down {back_at - down_at + sum(during):.1f} s); {len(missed)} deliveries of "
          f"{len({event_id for _, event_id in missed})} distinct events")
    assert min(arrived) >= back_at - 0.5, "an event arrived while the receiver was down"
    assert max(during) < max(baseline) + 2.0, (during, baseline)


def test_basic_mode_events_name_no_user(tmp_path):
    """In basic mode nginx checks the password and strips it; the registry has no auth of its
    own, so a push's event carries the repository, tag and digest but an empty actor (the README
    says so)."""
    receiver_name = f"notify-basic-{secrets.token_hex(4)}"
    notifications = [{"name": "audit", "url": f"http://{receiver_name}:{RECEIVER_PORT}/",
                      "ignore": {"mediaTypes": [BLOB_MEDIA_TYPE]}}]
    with live_stack(tmp_path, "notifyb", {USER: PASSWORD}, auth={"mode": "basic"}, bcryptRounds=5,
                    notifications=notifications) as live:
        receiver = Receiver(receiver_name, f"{live.config['namePrefix']}-net")
        try:
            layout = tmp_path / "layout"
            digest = oci.write_image(layout, "b1", [16 * 1024], seed="notify-basic")
            push(live, layout, "b1", "basic/app")
            event, _ = wait_event(receiver, lambda e: e["action"] == "push" and e["target"].get("tag") == "b1",
                                  "push event in basic mode")
            assert (event["target"]["repository"], event["target"]["digest"]) == ("basic/app", digest)
            assert not event["actor"].get("name"), event["actor"]
        finally:
            receiver.remove()
