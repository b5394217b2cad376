"""registry_api against a real registry: the program's registry (distribution 2.8.2 stand-in
image) behind its nginx TLS + bcrypt basic-auth proxy, deployed by tests/support/deploy.py,
images pushed with skopeo.

Fixtures ``registry_stack`` and ``shared_stack``: tests/integration/conftest.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
from pathlib import Path

import pytest

from components import registry_api
from components.registry_api import (
    RegistryAuthError,
    RegistryClient,
    RegistryDeletionDisabledError,
    RegistryInputError,
    RegistryNotFoundError,
    RegistryTLSError,
    RegistryUnreachableError,
)
from tests.support import deploy, oci
from tests.support.certs import server_pki
from tests.support.ports import free_port


@pytest.fixture
def images(tmp_path):
    """An OCI layout with images to push: single-platform ones sharing a base layer, and an index."""
    layout = tmp_path / "layout"
    base = oci.random_bytes(64 * 1024, seed="base")
    digests = {
        "one": oci.write_image(layout, "one", [base, oci.random_bytes(32 * 1024, seed="one")], seed="one"),
        "two": oci.write_image(layout, "two", [base, oci.random_bytes(32 * 1024, seed="two")], seed="two"),
        "three": oci.write_image(layout, "three", [base, oci.random_bytes(32 * 1024, seed="three")], seed="three"),
        "multi": oci.write_index(
            layout, "multi", [("amd64", [base, 16 * 1024]), ("arm64", [base, 16 * 1024])], seed="multi"
        ),
    }
    return layout, digests


# --- tests ------------------------------------------------------------------------------------


def test_tags_digests_and_index_contents_match_what_was_pushed(registry_stack, images):
    """Through the proxy: tags listed, digests resolved with the full Accept list equal the
    layout's own, and an OCI index is recognised with its platform manifests."""
    layout, digests = images
    registry_stack.push(layout, "one", "team/app")
    registry_stack.push(layout, "one", "team/app", "latest")
    registry_stack.push(layout, "multi", "team/app", multi=True)
    with registry_stack.client() as client:
        assert client.catalog() == ["team/app"]
        assert client.tags("team/app") == ["latest", "multi", "one"]
        assert client.digests("team/app", ["one", "latest", "multi"]) == {
            "one": digests["one"], "latest": digests["one"], "multi": digests["multi"]}
        assert client.describe("team/app", "multi").is_index
        manifest = client.manifest("team/app", "multi")
        assert sorted(manifest.children) == sorted(oci.index_children(layout, digests["multi"]).values())


def test_created_is_the_config_build_time_and_an_index_takes_its_newest_child(registry_stack, images):
    """Build time is read from the image config through the API; an index's is its newest platform image's."""
    layout, _ = images
    oci.set_created(layout, "one", "2024-05-01T12:00:00.5Z")
    oci.set_created(layout, "multi", {"amd64": "2024-01-01T00:00:00Z", "arm64": "2024-02-03T04:05:06Z"})
    registry_stack.push(layout, "one", "app")
    registry_stack.push(layout, "multi", "app", multi=True)
    with registry_stack.client() as client:
        assert client.created("app", "one") == datetime.datetime(2024, 5, 1, 12, 0, 0, 500000, datetime.timezone.utc)
        assert client.created("app", "multi") == datetime.datetime(2024, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc)


def test_delete_by_digest_removes_every_tag_on_it_and_twice_is_already_gone(registry_stack, images):
    """Registry 2.8 semantics the providers rely on: DELETE by digest drops all its tags; a
    second DELETE is 404, reported as already gone; other tags are untouched."""
    layout, digests = images
    for tag in ("one", "two"):
        registry_stack.push(layout, tag, "app")
    registry_stack.push(layout, "one", "app", "latest")
    with registry_stack.client() as client:
        assert client.delete("app", digests["one"]) is True
        assert client.delete("app", digests["one"]) is False
        assert client.tags("app") == ["two"]
        with pytest.raises(RegistryNotFoundError):
            client.resolve("app", "latest")
    assert registry_stack.pull("app", "two").returncode == 0


def test_wrong_password_is_an_auth_error_that_does_not_contain_it(shared_stack):
    """Wrong credentials: an auth error naming registry and status, containing neither password."""
    wrong = "Wr0ng@:" + secrets.token_hex(4)
    with shared_stack.client(password=wrong) as client, pytest.raises(RegistryAuthError) as caught:
        client.tags("app")
    assert wrong not in str(caught.value) and shared_stack.password not in str(caught.value)
    assert "401" in str(caught.value) and shared_stack.url in str(caught.value)


def test_another_ca_is_a_tls_error(shared_stack):
    """A CA that did not sign the proxy's certificate gives a TLS error with OpenSSL's reason."""
    other_ca = server_pki().ca_pem
    with shared_stack.client(ca_pem=other_ca) as client, pytest.raises(RegistryTLSError) as caught:
        client.ping()
    assert "certificate verify failed" in str(caught.value)


def test_a_closed_port_is_unreachable():
    """Nothing listening: an unreachable error, not a hang or a generic failure."""
    with RegistryClient(f"https://localhost:{free_port()}", username="u", password="p", ca_pem=None) as client:
        with pytest.raises(RegistryUnreachableError, match="unreachable"):
            client.tags("app")


def test_unknown_repository_and_malformed_tag(shared_stack):
    """An unknown repository is NAME_UNKNOWN from the registry; a malformed tag is refused locally."""
    with shared_stack.client() as client:
        with pytest.raises(RegistryNotFoundError, match="NAME_UNKNOWN") as caught:
            client.tags("no/such-repo")
        assert caught.value.code == "NAME_UNKNOWN"
        with pytest.raises(RegistryInputError, match="not a valid tag"):
            client.resolve("app", "bad tag")


def test_deletion_disabled_is_reported_as_such(tmp_path, images):
    """A registry with storage.delete.enabled: false answers 405; the error says how to fix it."""
    with deploy.registry_stack(tmp_path, delete_enabled=False) as stack:
        layout, digests = images
        stack.push(layout, "one", "app")
        with stack.client() as client, pytest.raises(RegistryDeletionDisabledError, match="storage.delete.enabled"):
            client.delete("app", digests["one"])


def test_writes_refused_is_false_on_a_writable_registry(shared_stack):
    """The read-only probe reports a normal registry as writable (and cancels its upload)."""
    with shared_stack.client() as client:
        assert client.writes_refused("probe/repo") is False
