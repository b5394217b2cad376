"""registry_api without a registry: requests answered by a scripted transport adapter.

The adapter sits where urllib3 would, so everything above it (session, auth, headers,
error mapping, pagination, the thread pool) is the real code.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import datetime, timezone

import pytest
import requests
from requests.adapters import BaseAdapter

from components import registry_api
from components.registry_api import (
    MANIFEST_ACCEPT,
    RegistryAuthError,
    RegistryClient,
    RegistryDeletionDisabledError,
    RegistryError,
    RegistryInputError,
    RegistryNotFoundError,
    RegistryTLSError,
    RegistryUnreachableError,
    parse_created,
)

URL = "https://registry.test:5443"
PASSWORD = "s3cr3t@:pass"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class Scripted(BaseAdapter):
    """Answers (method, path-with-query) from a table; records every request."""

    def __init__(self, routes):
        super().__init__()
        self.routes = routes
        self.seen: list[requests.PreparedRequest] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def send(self, request, **kwargs):
        with self._lock:
            self.seen.append(request)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            path = request.path_url
            answer = self.routes.get((request.method, path))
            if answer is None:
                answer = self.routes.get((request.method, "*"))
            if isinstance(answer, Exception):
                raise answer
            if callable(answer):
                answer = answer(request)
            status, headers, body = answer if answer else (404, {}, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            time.sleep(0.01)
            response = requests.Response()
            response.status_code = status
            response.headers.update(headers)
            response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response.url = request.url
            response.request = request
            return response
        finally:
            with self._lock:
                self.active -= 1

    def close(self):
        pass


def client_with(routes, **kwargs) -> tuple[RegistryClient, Scripted]:
    client = RegistryClient(URL, username="maint", password=PASSWORD, ca_pem=None, **kwargs)
    adapter = Scripted(routes)
    client.session.mount("https://", adapter)
    return client, adapter


def test_every_manifest_request_sends_the_full_accept_list_and_basic_auth():
    """HEAD by tag carries all four manifest media types (else 2.8 answers schema1 or 404) and
    the credentials as basic auth; the digest comes from Docker-Content-Digest."""
    client, adapter = client_with({("HEAD", "/v2/app/manifests/v1"): (200, {"Docker-Content-Digest": DIGEST_A,
                                                                            "Content-Type": registry_api.OCI_INDEX}, b"")})
    with client:
        found = client.describe("app", "v1")
    assert (found.digest, found.is_index) == (DIGEST_A, True)
    sent = adapter.seen[0]
    accepted = [part.strip() for part in sent.headers["Accept"].split(",")]
    assert accepted == [registry_api.OCI_INDEX, registry_api.OCI_MANIFEST, registry_api.DOCKER_MANIFEST_LIST,
                        registry_api.DOCKER_MANIFEST]
    assert sent.headers["Accept"] == MANIFEST_ACCEPT
    assert sent.headers["Authorization"].startswith("Basic ")


def test_tags_follow_link_pagination():
    """Tag lists follow the Link header until there is no next page."""
    client, adapter = client_with({
        ("GET", "/v2/app/tags/list?n=100"): (200, {"Link": '</v2/app/tags/list?last=b&n=100>; rel="next"'},
                                             {"name": "app", "tags": ["b", "a"]}),
        ("GET", "/v2/app/tags/list?last=b&n=100"): (200, {}, {"name": "app", "tags": ["c"]}),
    })
    with client:
        assert client.tags("app") == ["a", "b", "c"]
    assert len(adapter.seen) == 2


def test_pagination_never_leaves_the_registry():
    """A Link to another host is refused: the session would send the credentials there."""
    client, _ = client_with({
        ("GET", "/v2/_catalog?n=100"): (200, {"Link": '<https://evil.test/v2/_catalog?last=x>; rel="next"'},
                                        {"repositories": ["x"]}),
    })
    with client, pytest.raises(RegistryError, match="leaves the registry"):
        client.catalog()


@pytest.mark.parametrize("status, body, error, words", [
    (401, {"errors": [{"code": "UNAUTHORIZED"}]}, RegistryAuthError, "authentication failed"),
    (403, {}, RegistryAuthError, "denied"),
    (404, {"errors": [{"code": "NAME_UNKNOWN"}]}, RegistryNotFoundError, "repository not found"),
    (500, {"errors": [{"code": "UNKNOWN"}]}, RegistryError, "HTTP 500"),
])
def test_status_codes_become_typed_errors_naming_registry_and_repository(status, body, error, words):
    """Each failure class has its exception; the message names registry, repository and reason."""
    client, _ = client_with({("GET", "/v2/team/app/tags/list?n=100"): (status, {}, body)})
    with client, pytest.raises(error) as caught:
        client.tags("team/app")
    message = str(caught.value)
    assert URL in message and "'team/app'" in message and words in message
    assert PASSWORD not in message


def test_delete_disabled_is_its_own_error_with_the_fix():
    """405 UNSUPPORTED on DELETE says deletion is disabled and how to enable it."""
    client, _ = client_with({("DELETE", f"/v2/app/manifests/{DIGEST_A}"): (
        405, {}, {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported."}]})})
    with client, pytest.raises(RegistryDeletionDisabledError) as caught:
        client.delete("app", DIGEST_A)
    assert "storage.delete.enabled" in str(caught.value) and f"digest '{DIGEST_A}'" in str(caught.value)


def test_delete_of_a_missing_manifest_counts_as_done():
    """404 MANIFEST_UNKNOWN on DELETE: already gone, reported as False, not an error."""
    client, _ = client_with({
        ("DELETE", f"/v2/app/manifests/{DIGEST_A}"): (404, {}, {"errors": [{"code": "MANIFEST_UNKNOWN"}]}),
        ("DELETE", f"/v2/app/manifests/{DIGEST_B}"): (202, {}, b""),
    })
    with client:
        assert client.delete("app", DIGEST_A) is False
        assert client.delete("app", DIGEST_B) is True


def test_transport_failures_are_tls_or_unreachable_errors_raised_from_the_cause():
    """An SSL error is a TLS error, a refused connection an unreachable one; both chain the cause."""
    ssl_failure = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                               "self-signed certificate (_ssl.c:1006)")
    client, _ = client_with({("GET", "/v2/"): ssl_failure})
    with client, pytest.raises(RegistryTLSError) as caught:
        client.ping()
    assert "certificate verify failed: self-signed certificate" in str(caught.value)
    assert caught.value.__cause__ is ssl_failure
    refused = requests.exceptions.ConnectionError("refused")
    client, _ = client_with({("GET", "/v2/"): refused})
    with client, pytest.raises(RegistryUnreachableError) as caught:
        client.ping()
    assert caught.value.__cause__ is refused


@pytest.mark.parametrize("call, words", [
    (lambda c: c.tags("Team/App"), "not a valid repository name"),
    (lambda c: c.resolve("app", "-v1"), "not a valid tag"),
    (lambda c: c.resolve("app", "v" * 129), "not a valid tag"),
    (lambda c: c.delete("app", "sha256:xyz"), "not a digest"),
    (lambda c: c.delete("app", "v1"), "not a digest"),
])
def test_malformed_input_is_refused_before_any_request(call, words):
    """Bad names, tags and digests raise RegistryInputError and send nothing."""
    client, adapter = client_with({})
    with client, pytest.raises(RegistryInputError, match=words):
        call(client)
    assert adapter.seen == []


def test_credentials_in_the_url_are_refused_without_echoing_them():
    """A URL with user:password@ is refused, and the message does not repeat the password."""
    with pytest.raises(RegistryInputError) as caught:
        RegistryClient(f"https://maint:{PASSWORD}@registry.test", username="maint", password=PASSWORD, ca_pem=None)
    assert PASSWORD not in str(caught.value) and "must not carry credentials" in str(caught.value)


def test_a_password_with_a_newline_is_refused_without_echoing_it():
    """Control characters would make requests raise with the encoded header in its message."""
    with pytest.raises(RegistryInputError) as caught:
        RegistryClient(URL, username="maint", password="abc\ndef", ca_pem=None)
    assert "abc" not in str(caught.value)


def test_ca_pem_goes_to_a_private_temp_file_removed_on_close():
    """The CA text is written to a 0600 temp file passed as verify=, and deleted by close()."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    client = RegistryClient(URL, username="maint", password=PASSWORD, ca_pem=pem)
    path = client._ca_file
    assert path and open(path).read() == pem and (os.stat(path).st_mode & 0o777) == 0o600
    adapter = Scripted({("GET", "/v2/"): (200, {}, {})})
    client.session.mount("https://", adapter)
    seen_verify = []
    original = adapter.send
    adapter.send = lambda request, **kw: (seen_verify.append(kw.get("verify")), original(request, **kw))[1]
    client.ping()
    client.close()
    assert seen_verify == [path]
    assert not os.path.exists(path)


def test_the_environment_is_read_once_with_the_meaning_requests_gives_it(monkeypatch):
    """Proxy variables (with NO_PROXY) and, without a CA, REQUESTS_CA_BUNDLE apply to the
    registry as requests would apply them, read when the client is made: every request carries
    those, and a later change of the environment is not looked up per request."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
                 "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/bundle.pem")
    client, adapter = client_with({("GET", "/v2/"): (200, {}, {})})
    seen = []
    original = adapter.send
    adapter.send = lambda request, **kw: (seen.append((kw.get("proxies"), kw.get("verify"))), original(request, **kw))[1]
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere.test:1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/other.pem")
    with client:
        client.ping()
        client.ping()
    assert [(p.get("https"), v) for p, v in seen] == [("http://proxy.test:3128", "/etc/bundle.pem")] * 2
    assert client.session.trust_env is False

    monkeypatch.setenv("NO_PROXY", "registry.test")
    bypassed, adapter = client_with({("GET", "/v2/"): (200, {}, {})})
    seen.clear()
    original = adapter.send
    adapter.send = lambda request, **kw: (seen.append(kw.get("proxies")), original(request, **kw))[1]
    with bypassed:
        bypassed.ping()
    assert not (seen[0] or {}).get("https")


def test_a_ca_that_is_not_pem_is_refused():
    """A CA given as something other than PEM text is an input error."""
    with pytest.raises(RegistryInputError, match="not PEM"):
        RegistryClient(URL, username="maint", password=PASSWORD, ca_pem="not a certificate")


def test_concurrency_is_bounded_by_max_workers():
    """Resolving many tags fans out, but never more than max_workers requests at once."""
    routes = {("HEAD", "*"): lambda r: (200, {"Docker-Content-Digest": DIGEST_A}, b"")}
    client, adapter = client_with(routes, max_workers=3)
    with client:
        found = client.digests("app", [f"t{i}" for i in range(30)])
    assert len(found) == 30 and 1 < adapter.peak <= 3


def test_digests_resolve_every_tag_and_leave_out_tags_gone_meanwhile():
    """Tags resolve to their digests (shared ones included); a tag that vanished is left out."""
    client, _ = client_with({
        ("GET", "/v2/app/tags/list?n=100"): (200, {}, {"tags": ["v1", "latest", "v2", "gone"]}),
        ("HEAD", "/v2/app/manifests/v1"): (200, {"Docker-Content-Digest": DIGEST_A}, b""),
        ("HEAD", "/v2/app/manifests/latest"): (200, {"Docker-Content-Digest": DIGEST_A}, b""),
        ("HEAD", "/v2/app/manifests/v2"): (200, {"Docker-Content-Digest": DIGEST_B}, b""),
    })
    with client:
        assert client.digests("app", client.tags("app")) == {"latest": DIGEST_A, "v1": DIGEST_A, "v2": DIGEST_B}


def _blob(document: dict) -> tuple[bytes, str]:
    data = json.dumps(document).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def test_created_of_an_index_is_its_newest_childs_build_time():
    """An image's time is its config's `created`; an index's is the newest of its children's."""
    routes = {}
    children = []
    for arch, created in [("amd64", "2024-01-01T00:00:00.123456789Z"), ("arm64", "2024-03-01T10:00:00Z")]:
        config, config_digest = _blob({"created": created, "architecture": arch})
        manifest, manifest_digest = _blob({"schemaVersion": 2, "mediaType": registry_api.OCI_MANIFEST,
                                           "config": {"digest": config_digest}})
        routes[("GET", f"/v2/app/blobs/{config_digest}")] = (200, {}, config)
        routes[("GET", f"/v2/app/manifests/{manifest_digest}")] = (200, {}, manifest)
        children.append({"digest": manifest_digest, "mediaType": registry_api.OCI_MANIFEST})
    index, index_digest = _blob({"schemaVersion": 2, "mediaType": registry_api.OCI_INDEX, "manifests": children})
    routes[("GET", "/v2/app/manifests/multi")] = (200, {"Docker-Content-Digest": index_digest}, index)
    client, _ = client_with(routes)
    with client:
        assert client.created("app", "multi") == datetime(2024, 3, 1, 10, tzinfo=timezone.utc)


def test_a_manifest_whose_bytes_do_not_match_its_digest_is_an_error():
    """Digests are verified: content that hashes differently is refused."""
    body, _ = _blob({"schemaVersion": 2})
    client, _ = client_with({("GET", f"/v2/app/manifests/{DIGEST_A}"): (200, {}, body)})
    with client, pytest.raises(RegistryError, match="hashes to"):
        client.manifest("app", DIGEST_A)


def test_writes_refused_reads_405_as_read_only_and_cancels_an_accepted_upload():
    """405 on starting an upload means read-only; a 202 is cancelled again and reported as writable."""
    client, adapter = client_with({("POST", "/v2/probe/blobs/uploads/"): (405, {}, {"errors": [{"code": "UNSUPPORTED"}]})})
    with client:
        assert client.writes_refused("probe") is True
    client, adapter = client_with({
        ("POST", "/v2/probe/blobs/uploads/"): (202, {"Location": "/v2/probe/blobs/uploads/u1?_state=x"}, b""),
        ("DELETE", "/v2/probe/blobs/uploads/u1?_state=x"): (204, {}, b""),
    })
    with client:
        assert client.writes_refused("probe") is False
    assert [r.method for r in adapter.seen] == ["POST", "DELETE"]


@pytest.mark.parametrize("text, expected", [
    ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("2024-01-02T03:04:05.123456789Z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)),
    ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    ("", None),
    (None, None),
    ("yesterday", None),
])
def test_parse_created_reads_rfc3339_with_nanoseconds(text, expected):
    """Build times parse to aware UTC datetimes; missing or garbled ones are None (oldest)."""
    assert parse_created(text) == expected
