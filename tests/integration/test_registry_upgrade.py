"""Upgrading a stack from distribution 2.8 to 3, the default registry image: the same stack run
again with ``images.registry`` no longer pinned to 2.8, its registry container replaced on the
same volume. And what 3 refuses that a 2.8 stack took."""

from __future__ import annotations

import hashlib
import subprocess

from components.registry_api import RegistryClient
from components.render import token_service as ts
from components.settings import DEFAULT_REGISTRY_IMAGE, REGISTRY2_IMAGE
from tests.support import oci
from tests.support.deploy import STANDIN_REGISTRY2, STANDIN_REGISTRY3, live_stack, upload_content, wait_https
from tests.support.program import run_program

USERS = {"admin": "admin-password-0123456789"}
AUTH = {"admins": ["admin"]}


def _skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=180, check=check)


def _digest(live, reference: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--cert-dir", str(live.cert_dir),
                          "--creds", f"admin:{USERS['admin']}", f"docker://{live.address}/{reference}"],
                         capture_output=True, timeout=120, check=True).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _push(live, layout, reference: str, *extra: str) -> subprocess.CompletedProcess:
    return _skopeo("copy", "-q", *extra, "--dest-cert-dir", str(live.cert_dir), "--dest-creds",
                   f"admin:{USERS['admin']}", f"oci:{layout}:v1", f"docker://{live.address}/{reference}", check=False)


def _pull(live, reference: str, target) -> subprocess.CompletedProcess:
    """A real pull into an OCI layout: skopeo checks every blob's digest."""
    return _skopeo("copy", "-q", "--all", "--src-cert-dir", str(live.cert_dir), "--src-creds",
                   f"admin:{USERS['admin']}", f"docker://{live.address}/{reference}", f"oci:{target}:v1", check=False)


def test_a_2_8_stack_moved_to_3_keeps_every_image_and_refuses_schema1(tmp_path):
    """A token-mode stack pinned to 2.8 holds an image and a two-platform index pushed with
    skopeo. Run again with the default image, its registry is distribution 3 on the same volume
    and trusts the signer from a JWKS: both pull whole with the same digests, a new push works,
    the program's own client deletes by digest, and a schema1 push is refused by both versions
    (2.8 with 500 'manifest schema v1 unsupported', 3 with 400 MANIFEST_INVALID)."""
    image, index = tmp_path / "image", tmp_path / "index"
    oci.write_image(image, "v1", [200_000, 30_000], seed="upgrade-image")
    oci.write_index(index, "v1", [("amd64", [120_000]), ("arm64", [90_000])], seed="upgrade-index")
    with live_stack(tmp_path, "upgrade", USERS, auth=AUTH, images={"registry": REGISTRY2_IMAGE}) as live:
        registry = live.deployment.container("registry-container")
        assert live.deployment.client.containers.get(registry.plain_inputs["name"]).attrs["Config"]["Image"] \
            == STANDIN_REGISTRY2
        assert upload_content(registry, ts.REGISTRY_BUNDLE_PATH).startswith("-----BEGIN CERTIFICATE-----")
        assert _push(live, image, "team/app:v1").returncode == 0
        assert _push(live, index, "team/multi:v1", "--all").returncode == 0
        refused_by_2 = _push(live, image, "team/app:schema1", "--format", "v2s1")
        before = {ref: _digest(live, ref) for ref in ("team/app:v1", "team/multi:v1")}

        config = {**live.config, "images": {"registry": DEFAULT_REGISTRY_IMAGE}}
        upgraded = run_program(config, secret_keys=["users"])
        live.deployment.replace(upgraded)
        # Under the mocks every run issues a new CA (a real stack keeps its CA in state): trust it.
        live.ca_file.write_text(upgraded.exports["caCertificatePem"])
        wait_https(f"https://{live.address}/healthz", str(live.ca_file))

        registry = live.deployment.container("registry-container")
        assert live.deployment.client.containers.get(registry.plain_inputs["name"]).attrs["Config"]["Image"] \
            == STANDIN_REGISTRY3
        assert '"keys"' in upload_content(registry, ts.REGISTRY_JWKS_PATH)
        assert {ref: _digest(live, ref) for ref in before} == before
        for ref in before:
            pulled = _pull(live, ref, tmp_path / f"pulled-{ref.replace('/', '-').replace(':', '-')}")
            assert pulled.returncode == 0, pulled.stderr
        assert _push(live, image, "team/after:v1").returncode == 0
        refused_by_3 = _push(live, image, "team/app:schema1", "--format", "v2s1")
        client = RegistryClient(f"https://{live.address}", username="admin", password=USERS["admin"],
                                ca_pem=live.ca_file.read_text())
        try:
            assert client.delete("team/app", before["team/app:v1"]) is True
            assert client.tags("team/app") == []
            assert client.resolve("team/multi", "v1") == before["team/multi:v1"]
        finally:
            client.close()

    assert refused_by_2.returncode != 0 and "500 Internal Server Error" in refused_by_2.stderr, refused_by_2.stderr
    assert refused_by_3.returncode != 0 and "manifest invalid" in refused_by_3.stderr, refused_by_3.stderr
