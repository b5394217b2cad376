"""No way in without the password: raw requests against the deployed proxy reach nothing.

One stack is deployed for the module (the program's own containers on the real engine), an
image is pushed with the right password, and then well over a thousand requests without it
(the fixed list of tricks in tests/support/requests_fuzz.py plus seeded random ones) are sent
byte for byte over TLS, spread over eight client addresses (tests/support/client_netns.py:
failed logins are rate-limited per address, which one address would feel as a flood). Each must be refused (401, or 400/404/405/414/505 where nginx does not
route it to the API) and none may carry a manifest, blob, tag list, catalog or upload session.
A control test shows the same detector does see all of those when the password is right.
"""

from __future__ import annotations

import collections
import json
import os
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import oci
from tests.support import requests_fuzz as fuzz
from tests.support.client_netns import ClientAddresses, container_address, pool_initializer
from tests.support.deploy import live_stack

USER = "alice"
PASSWORD = "Auth-t3st:pass@word-0f9c2d7e"
REPOSITORY = "secret/app"
TAG = "t-7d41c9"
CANARY = b"CANARY-layer-content-5b1e0c3a-never-without-a-password"
SEED = int(os.environ.get("FUZZ_SEED", "20261127"))
RANDOM_PROBES = 400
CLIENT_ADDRESSES = 8



@dataclass
class Stack:
    address: str  # host:port
    port: int
    ca_file: Path
    target: fuzz.Target
    proxy_address: str  # the proxy container's, on the stack's network
    clients: ClientAddresses


def _push(layout: Path, address: str, cert_dir: Path) -> None:
    result = subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-cert-dir", str(cert_dir), "--dest-creds", f"{USER}:{PASSWORD}",
         f"oci:{layout}:{TAG}", f"docker://{address}/{REPOSITORY}:{TAG}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """The deployed stack with one real image in it; everything is removed afterwards."""
    tmp = tmp_path_factory.mktemp("auth")
    # Basic mode: this suite attacks nginx's password check (token mode: tests/integration/test_token_access.py).
    with live_stack(tmp, "sec-auth", {USER: PASSWORD}, auth={"mode": "basic"}) as live:
        layout = tmp / "oci"
        digest = oci.write_image(layout, TAG, [CANARY, 4096], seed="auth", compresslevel=0)
        _push(layout, live.address, live.cert_dir)
        manifest = json.loads(oci.read_blob(layout, digest))
        blobs = (manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"]))
        target = fuzz.Target(
            host=live.address, user=USER, password=PASSWORD, repository=REPOSITORY, tag=TAG,
            manifest_digest=digest, blob_digests=blobs, canaries=(CANARY,),
        )
        network = f"{live.config['namePrefix']}-net"
        clients = ClientAddresses(live.deployment.client, network, CLIENT_ADDRESSES)
        try:
            proxy = container_address(live.deployment.client, f"{live.config['namePrefix']}-proxy", network)
            yield Stack(live.address, live.port, live.ca_file, target, proxy, clients)
        finally:
            clients.remove()


def _send_all(stack: Stack, probes: list[fuzz.Probe]) -> list[tuple[fuzz.Probe, list[fuzz.Response]]]:
    context = ssl.create_default_context(cafile=str(stack.ca_file))

    def one(probe: fuzz.Probe):
        return probe, fuzz.send(probe, (stack.proxy_address, 443), context, "localhost")

    with ThreadPoolExecutor(max_workers=CLIENT_ADDRESSES, initializer=pool_initializer(stack.clients.pids)) as pool:
        return list(pool.map(one, probes))


def test_no_request_without_the_password_reaches_anything(stack):
    """Over a thousand requests without the right password -- every HTTP method, encoded and
    doubled slashes, dot segments, case changes, paths around /v2, broken, empty, oversized and
    foreign Authorization headers, the right user with wrong passwords, user names holding ':',
    pipelining and smuggling -- are all refused, and none returns a manifest, blob, tag list,
    catalog or upload session of the image that really is there. Well-formed requests for API
    paths get exactly 401."""
    tricky = fuzz.tricky_probes(stack.target)
    random_ = fuzz.random_probes(stack.target, RANDOM_PROBES, SEED)
    results = _send_all(stack, tricky + random_)

    problems = []
    statuses: collections.Counter = collections.Counter()
    for probe, responses in results:
        statuses[responses[0].status] += 1
        for problem in fuzz.judge(probe, responses, stack.target):
            problems.append(f"{probe.family}: {probe.requests[0][0]} {probe.requests[0][1][:100]!r}: {problem}")
    must_be_401 = sum(probe.must_be_401 for probe, _ in results)
    got_401 = sum(probe.must_be_401 and responses[0].status == 401 for probe, responses in results)
    leaking = sum(any(fuzz.leaks(r, stack.target) for r in responses) for _, responses in results)
    print(
        f"\nno way in: {len(results)} requests ({len(tricky)} tricky, {len(random_)} random, seed {SEED}): "
        f"{leaking} gave something away, {len(problems)} problems in all; {got_401} of {must_be_401} "
        f"well-formed API requests got 401; first-response statuses {dict(sorted(statuses.items()))}"
    )
    assert len(results) >= 1000
    assert must_be_401 >= 500
    assert not problems, "\n".join(problems[:50])


def test_the_detector_sees_everything_the_right_password_gets(stack):
    """Control: the same raw requests *with* the right password return the catalog, the tag
    list, the manifest (by tag and digest), every blob (the layer's own bytes) and an upload
    session, and the leak detector flags each of them -- so its silence above means something."""
    target = stack.target
    right = fuzz.basic(USER, PASSWORD)
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    wanted = {
        ("GET", "/v2/_catalog"): "a catalog",
        ("GET", f"/v2/{REPOSITORY}/tags/list"): "a tag list",
        ("GET", f"/v2/{REPOSITORY}/manifests/{TAG}"): "Docker-Content-Digest",
        ("HEAD", f"/v2/{REPOSITORY}/manifests/{target.manifest_digest}"): "manifest Content-Type",
        ("POST", f"/v2/{REPOSITORY}/blobs/uploads/"): "an upload session",
    }
    wanted.update({("GET", f"/v2/{REPOSITORY}/blobs/{digest}"): "Docker-Content-Digest" for digest in target.blob_digests})
    seen_canary = False
    for (method, path), expected in wanted.items():
        headers = [("Host", target.host), ("Authorization", right),
                   ("Accept", ", ".join(fuzz.MANIFEST_MEDIA_TYPES)), ("Connection", "close")]
        body = b""
        if method == "POST":
            headers.append(("Content-Length", "0"))
        probe = fuzz.Probe("control", fuzz.request_bytes(method, path, headers, body), ((method, path),))
        responses = fuzz.send(probe, ("127.0.0.1", stack.port), context, "localhost")
        found = fuzz.leaks(responses[0], target)
        assert any(expected in item for item in found), (method, path, responses[0].status, found)
        assert fuzz.judge(probe, responses, target), (method, path)
        seen_canary = seen_canary or "pushed content in the body" in found
    assert seen_canary, "the layer's bytes were never recognised"


def test_probes_never_carry_the_right_password(stack):
    """The generator cannot hand nginx the right credentials by accident, in any spelling
    crypt() would accept (a NUL byte ends the password it checks)."""
    target = stack.target
    for value in (fuzz.basic(USER, PASSWORD), fuzz.basic(USER, PASSWORD, scheme="basic"),
                  fuzz.basic(USER, PASSWORD + "\x00tail")):
        with pytest.raises(AssertionError, match="right credentials"):
            fuzz._guard(target, [("Authorization", value)])  # noqa: SLF001 - the guard itself is under test
    decoded = [fuzz._decoded_basic(v) for _, v in fuzz.wrong_authorizations(target) if v]  # noqa: SLF001
    assert f"{USER}:{PASSWORD}".encode() not in decoded
