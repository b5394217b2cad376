"""A small client for the Docker Registry HTTP API v2, as the maintenance providers need it.

One :class:`RegistryClient` holds one ``requests.Session``: connections are kept alive and
reused, and work that fans out (resolving or deleting many tags) runs on a thread pool whose
size matches the connection pool, so the registry never sees more than ``max_workers``
requests from us at once.

Every failure is a :class:`RegistryError` subclass whose message names the registry, the
repository, the tag or digest, and the reason; it is raised ``from`` the underlying error.
The password is never part of a message: it is only ever handed to ``requests`` as basic
auth, and any server text quoted in a message is scrubbed of it first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from components.grammar import is_digest, is_repository, is_tag
from components.registry_auth import RegistryAuth

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# Registry 2.8 answers a HEAD without all four with a schema1 digest (Docker images) or a 404
# (OCI images), so every manifest request sends the whole list.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})


# At most this many requests at once: deleting 200 tags was 1.05-1.70x faster with 16 than
# with 4 in each of three rounds (bench/deletion/README.md).
DEFAULT_MAX_WORKERS = 16
PAGE_SIZE = 100

T = TypeVar("T")
R = TypeVar("R")


class RegistryError(Exception):
    """A registry operation failed; the message says where and why."""

    def __init__(
        self,
        registry: str,
        reason: str,
        *,
        repository: str | None = None,
        reference: str | None = None,
        status: int | None = None,
    ):
        self.registry = registry
        self.status = status
        self.repository = repository
        self.reference = reference
        self.reason = reason
        where = [f"registry {registry}"]
        if repository is not None:
            where.append(f"repository '{repository}'")
        if reference is not None:
            kind = "digest" if reference.startswith("sha256:") else "tag"
            where.append(f"{kind} '{reference}'")
        super().__init__(f"{', '.join(where)}: {reason}")


class RegistryTLSError(RegistryError):
    """The registry's certificate did not verify against the given CA."""


class RegistryAuthError(RegistryError):
    """The credentials were refused (401) or lack permission (403)."""


class RegistryNotFoundError(RegistryError):
    """The repository, manifest or blob does not exist; ``code`` is the registry's error code."""

    def __init__(self, *args: Any, code: str = "", **kwargs: Any):
        self.code = code
        super().__init__(*args, **kwargs)


class RegistryDeletionDisabledError(RegistryError):
    """The registry refuses deletes (405 UNSUPPORTED): ``storage.delete`` off, or read-only mode."""


class RegistryUnreachableError(RegistryError):
    """No HTTP answer: connection refused, DNS failure, timeout."""


class RegistryInputError(RegistryError):
    """A name, tag, digest, URL or credential is malformed; nothing was sent."""


class SharedDigestError(RegistryError):
    """Deleting this digest would take other tags (or an index that needs it) with it."""


@dataclass(frozen=True)
class Descriptor:
    """What a tag points to, as a ``HEAD`` reports it."""

    digest: str
    media_type: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


@dataclass(frozen=True)
class Manifest:
    """A manifest as stored: its digest, media type and parsed JSON document."""

    digest: str
    media_type: str
    document: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def children(self) -> tuple[str, ...]:
        """Digests of the platform manifests an index lists (empty for an image manifest)."""
        if not self.is_index:
            return ()
        return tuple(entry["digest"] for entry in self.document.get("manifests", ()))


def validate_repository(registry: str, repository: str) -> None:
    if not is_repository(repository):
        raise RegistryInputError(
            registry, "not a valid repository name (lowercase components separated by '/', e.g. 'team/app')",
            repository=str(repository),
        )


def validate_tag(registry: str, repository: str, tag: str) -> None:
    if not is_tag(tag):
        raise RegistryInputError(
            registry, "not a valid tag (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')",
            repository=repository, reference=str(tag),
        )


def validate_digest(registry: str, repository: str, digest: str) -> None:
    if not is_digest(digest):
        # Label it a digest whatever it looks like: it was given as one.
        raise RegistryInputError(
            registry, f"'{digest}' is not a digest of the form sha256:<64 lowercase hex>", repository=repository,
        )


def parse_created(value: Any) -> datetime | None:
    """An image config's ``created`` (RFC 3339, up to nanoseconds) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if not match:
        return None
    stamp, fraction, zone = match.groups()
    text = stamp + (f".{fraction[:6].ljust(6, '0')}" if fraction else "") + ("+00:00" if zone == "Z" else zone)
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def _error_codes(response: requests.Response) -> list[str]:
    try:
        return [str(e.get("code", "")) for e in response.json().get("errors", [])]
    except (ValueError, AttributeError):
        return []


class RegistryClient:
    """Talks to one registry with one keep-alive session and a bounded pool of workers.

    ``ca_pem`` is the PEM text of the CA that signed the registry's certificate (written to a
    private temporary file for ``requests``' ``verify=``); ``None`` uses the system trust store.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        ca_pem: str | None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout: float = 30.0,
    ):
        self.url = self._check_url(url)
        self._password = password
        self._check_credentials(username, password)
        self.timeout = timeout
        self._ca_file: str | None = None
        self._verify: str | bool = True
        self.session = requests.Session()
        # pool_block: more threads than connections would otherwise open throwaway connections.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max_workers, pool_block=True, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Basic auth, or distribution's token flow when the registry challenges for a bearer token.
        self.session.auth = RegistryAuth(username, password, self.url, verify=lambda: self._verify, timeout=timeout)
        self.session.headers["User-Agent"] = "private-registry-maintenance/1"
        if ca_pem is not None:
            if "-----BEGIN CERTIFICATE-----" not in ca_pem:
                self.session.close()
                raise RegistryInputError(self.url, "the CA certificate is not PEM text (-----BEGIN CERTIFICATE-----)")
            fd, self._ca_file = tempfile.mkstemp(prefix="registry-ca-", suffix=".pem")
            with os.fdopen(fd, "w") as handle:
                handle.write(ca_pem)
        # Passed with every request: a session-level `verify` loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = self._ca_file or True
        # The environment (proxy variables and NO_PROXY for this URL, REQUESTS_CA_BUNDLE when
        # no CA is given) is read once here, as requests would read it for every request: every
        # request goes to this origin, and re-reading it was up to a sixth of the client's CPU
        # per request (bench/deletion/README.md).
        environment = self.session.merge_environment_settings(self.url, {}, None, self._verify, None)
        self.session.proxies = environment["proxies"]
        self._verify = environment["verify"]
        self.session.trust_env = False
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="registry-api")

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.session.close()
        if self._ca_file:
            try:
                os.unlink(self._ca_file)
            except FileNotFoundError:
                pass
            self._ca_file = None

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- input checks ------------------------------------------------------------------------

    @staticmethod
    def _check_url(url: str) -> str:
        if not isinstance(url, str):
            raise RegistryInputError("<none>", "the registry URL must be a string like https://host:port")
        parts = urlsplit(url.strip())
        if parts.username is not None or parts.password is not None:
            # Never echo the URL: the credentials are in it.
            raise RegistryInputError(
                f"{parts.scheme}://{parts.hostname}", "the registry URL must not carry credentials; pass them separately"
            )
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise RegistryInputError(url, "the registry URL must look like https://host[:port] (no path)")
        return f"{parts.scheme}://{parts.netloc}"

    def _check_credentials(self, username: str, password: str) -> None:
        if not isinstance(username, str) or not username or ":" in username or not username.isprintable():
            raise RegistryInputError(self.url, "the username must be a non-empty printable string without ':'")
        if not isinstance(password, str) or not password or not password.isprintable():
            # Printable only: a newline would make requests raise with the encoded header in the text.
            raise RegistryInputError(self.url, "the password must be a non-empty printable string")

    def _scrub(self, text: str) -> str:
        return text.replace(self._password, "***") if self._password else text

    # --- transport ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        repository: str | None = None,
        reference: str | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
    ) -> requests.Response:
        """One request; any status outside ``ok`` becomes the matching :class:`RegistryError`."""
        url = path if path.startswith(("http://", "https://")) else urljoin(self.url + "/", path.lstrip("/"))
        where = {"repository": repository, "reference": reference}
        try:
            response = self.session.request(
                method, url, headers=headers, timeout=self.timeout, stream=stream, verify=self._verify
            )
        except requests.exceptions.SSLError as exc:
            detail = re.search(r"\[SSL[^\]]*\] ([^(']+)", str(exc))
            raise RegistryTLSError(
                self.url,
                f"TLS failed ({detail.group(1).strip() if detail else type(exc).__name__}): is the CA right, and "
                "is the host name in the registry's certificate?",
                **where,
            ) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise RegistryUnreachableError(
                self.url, f"registry unreachable ({type(exc).__name__}): is it running and is the URL right?", **where
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise RegistryError(self.url, f"request failed: {self._scrub(str(exc))}", **where) from exc
        if response.status_code in ok:
            return response
        raise self._status_error(method, response, **where)

    def _status_error(self, method: str, response: requests.Response, **where: str | None) -> RegistryError:
        status = response.status_code
        codes = _error_codes(response)
        shown = ", ".join(codes) or (response.reason or "")
        exc: RegistryError
        if status == 401:
            exc = RegistryAuthError(self.url, "authentication failed (HTTP 401): check the username and password", **where)
        elif status == 403:
            exc = RegistryAuthError(self.url, "access denied (HTTP 403)", **where)
        elif status == 404:
            if "NAME_UNKNOWN" in codes:
                reason = "repository not found (NAME_UNKNOWN)"
            elif "BLOB_UNKNOWN" in codes:
                reason = "blob not found (BLOB_UNKNOWN)"
            else:
                reason = "manifest not found" + (f" ({shown})" if codes else "")
            exc = RegistryNotFoundError(self.url, reason, code=(codes[0] if codes else ""), **where)
        elif status == 405 and method == "DELETE":
            exc = RegistryDeletionDisabledError(
                self.url,
                f"the registry refuses deletion (HTTP 405 {shown}): set storage.delete.enabled: true in its "
                "config.yml, and make sure it is not in read-only maintenance mode",
                **where,
            )
        else:
            exc = RegistryError(self.url, f"unexpected HTTP {status} to {method} ({self._scrub(shown)})", **where)
        exc.status = status
        return exc

    # --- concurrency -------------------------------------------------------------------------

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``fn`` over ``items`` on the bounded pool, results in order; the first error propagates."""
        return list(self._executor.map(fn, list(items)))

    # --- API ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/``: succeeds only if the registry answers and accepts the credentials."""
        self._request("GET", "/v2/")

    def writes_refused(self, repository: str) -> bool:
        """Whether the registry refuses to start an upload (read-only mode answers 405).

        If it accepts, the upload just started is cancelled again.
        """
        validate_repository(self.url, repository)
        response = self._request("POST", f"/v2/{repository}/blobs/uploads/", repository=repository, ok=(202, 405))
        if response.status_code == 405:
            return True
        location = response.headers.get("Location")
        if location:
            try:
                self._request("DELETE", urljoin(response.url, location), repository=repository, ok=(204, 404))
            except RegistryError:
                pass  # an abandoned upload is purged by the registry's upload purging
        return False

    def _paginated(self, path: str, key: str, *, repository: str | None = None) -> list[str]:
        items: list[str] = []
        url: str | None = path
        while url:
            response = self._request("GET", url, repository=repository)
            items.extend(response.json().get(key) or [])
            nxt = response.links.get("next", {}).get("url")
            url = urljoin(response.url, nxt) if nxt else None
            if url and not url.startswith(self.url + "/"):
                # The session sends credentials wherever it is pointed; stay on this registry.
                raise RegistryError(self.url, f"pagination link leaves the registry: {url}", repository=repository)
        return items

    def catalog(self) -> list[str]:
        """Every repository name (deleted repositories stay listed in registry 2.8), sorted."""
        return sorted(set(self._paginated(f"/v2/_catalog?n={PAGE_SIZE}", "repositories")))

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted; an unknown repository raises :class:`RegistryNotFoundError`."""
        validate_repository(self.url, repository)
        return sorted(set(self._paginated(f"/v2/{repository}/tags/list?n={PAGE_SIZE}", "tags", repository=repository)))

    def resolve(self, repository: str, reference: str) -> str:
        """The digest a tag (or digest) points to, by ``HEAD`` with the full Accept list."""
        return self.describe(repository, reference).digest

    def describe(self, repository: str, reference: str) -> "Descriptor":
        """Digest and media type of what a tag (or digest) points to (one ``HEAD``)."""
        self._validate_reference(repository, reference)
        response = self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}",
            repository=repository, reference=reference, headers={"Accept": MANIFEST_ACCEPT},
        )
        digest = response.headers.get("Docker-Content-Digest", "")
        if not is_digest(digest):
            raise RegistryError(
                self.url, "the registry sent no usable Docker-Content-Digest header", repository=repository,
                reference=reference,
            )
        return Descriptor(digest=digest, media_type=response.headers.get("Content-Type", "").split(";")[0].strip())

    def manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest, its digest verified against the bytes received."""
        self._validate_reference(repository, reference)
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}",
            repository=repository, reference=reference, headers={"Accept": MANIFEST_ACCEPT},
        )
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        expected = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest", digest)
        if digest != expected:
            raise RegistryError(
                self.url, f"manifest content hashes to {digest}, not {expected}", repository=repository,
                reference=reference,
            )
        try:
            document = json.loads(response.content)
        except ValueError as exc:
            raise RegistryError(self.url, "manifest is not JSON", repository=repository, reference=reference) from exc
        media_type = document.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
        return Manifest(digest=digest, media_type=media_type, document=document)

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        """A small JSON blob (an image config), its digest verified."""
        validate_digest(self.url, repository, digest)
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", repository=repository, reference=digest)
        if "sha256:" + hashlib.sha256(response.content).hexdigest() != digest:
            raise RegistryError(self.url, "blob content does not match its digest", repository=repository, reference=digest)
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise RegistryError(self.url, "blob is not JSON", repository=repository, reference=digest) from exc

    def descriptors(self, repository: str, tags: Iterable[str]) -> dict[str, "Descriptor"]:
        """``{tag: Descriptor}`` for the given tags, resolved concurrently; tags gone meanwhile are left out."""

        def one(tag: str) -> tuple[str, Descriptor | None]:
            try:
                return tag, self.describe(repository, tag)
            except RegistryNotFoundError:
                return tag, None

        return {tag: found for tag, found in self.map(one, tags) if found is not None}

    def digests(self, repository: str, tags: Iterable[str]) -> dict[str, str]:
        """``{tag: digest}`` for the given tags, resolved concurrently; tags gone meanwhile are left out."""
        return {tag: found.digest for tag, found in self.descriptors(repository, tags).items()}

    def delete(self, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (removing every tag on it); ``False`` if it was already gone."""
        validate_repository(self.url, repository)
        validate_digest(self.url, repository, digest)
        try:
            self._request(
                "DELETE", f"/v2/{repository}/manifests/{digest}", repository=repository, reference=digest, ok=(200, 202),
            )
        except RegistryNotFoundError:
            return False
        return True

    def untag(self, repository: str, tag: str) -> bool:
        """Remove one tag (``DELETE`` by tag, which distribution 3 serves): the manifest stays, with
        any other tags on it, until garbage collection removes it untagged; ``False`` if the tag
        was already gone."""
        validate_repository(self.url, repository)
        validate_tag(self.url, repository, tag)
        try:
            self._request("DELETE", f"/v2/{repository}/manifests/{tag}", repository=repository, reference=tag, ok=(202,))
        except RegistryNotFoundError:
            return False
        return True

    def created(self, repository: str, reference: str) -> datetime | None:
        """When the image was built, for retention's "newest" and "younger than".

        The clock is the image config's ``created`` field: the build machine's clock when the
        image was built. The registry API has no push or upload time (only its storage backend
        knows file times, and those change when data is copied or restored), while ``created``
        is content-addressed: every client sees the same value, and re-pushing or mirroring an
        image does not make it "new". Its limits: build machines' clock skew, and reproducible
        builds that pin it (often to 1970) or leave it out; an image without a readable
        ``created`` returns ``None`` and callers treat it as the oldest.

        For an index (multi-architecture image) it is the newest child's ``created``: the index
        is as new as the most recently built platform image it offers.
        """
        manifest = self.manifest(repository, reference)
        if manifest.is_index:
            # Sequential on purpose: callers already fan out over tags on the pool, and waiting
            # on the same pool from inside it could deadlock.
            stamps = [stamp for stamp in (self._image_created(repository, d) for d in manifest.children) if stamp]
            return max(stamps) if stamps else None
        return self._created_of(repository, manifest)

    def _image_created(self, repository: str, digest: str) -> datetime | None:
        manifest = self.manifest(repository, digest)
        return None if manifest.is_index else self._created_of(repository, manifest)

    def _created_of(self, repository: str, manifest: Manifest) -> datetime | None:
        config = manifest.document.get("config") or {}
        if not is_digest(config.get("digest")):
            return None
        try:
            return parse_created(self.blob_json(repository, config["digest"]).get("created"))
        except RegistryNotFoundError:
            return None

    def _validate_reference(self, repository: str, reference: str) -> None:
        validate_repository(self.url, repository)
        if isinstance(reference, str) and reference.startswith("sha256:"):
            validate_digest(self.url, repository, reference)
        else:
            validate_tag(self.url, repository, reference)
