"""The registry config's ``notifications`` section: webhook endpoints, as data for the YAML writer.

Distribution 3.1.2 and 2.8.3 read the same section (``configuration.Notifications``: per
endpoint ``name``, ``disabled``, ``url``, ``headers`` as a map of lists, ``timeout``,
``threshold`` and ``backoff`` as Go durations and a count, ``ignoredmediatypes``, and
``ignore`` with ``mediatypes`` and ``actions``), so one rendering serves both versions; what differs is the envelope a receiver gets
(:data:`EVENTS_MEDIA_TYPES`). Each
endpoint is an in-memory queue in front of a retrying sink: a write never blocks a request,
a failed POST is retried (``threshold`` failures in a row, then one try per ``backoff``) until
it is delivered or the registry process ends.

Pure: settings in, a dict out. The dict holds header values (secrets): the caller wraps it in
``pulumi.Output.secret`` before it goes anywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # settings (pydantic) only for the type; the renderer needs none at run time
    from components.settings_notify import NotificationEndpoint

# The actions distribution's events carry (notifications.EventAction*): the one list settings
# validate ``ignore.actions`` against.
ACTIONS = ("push", "pull", "delete", "mount")
# The media type of the envelope the registry POSTs (notifications.EventsMediaType), by
# distribution's major version: 3 announces its envelope (target: an OCI descriptor) as v2.
EVENTS_MEDIA_TYPES = {
    2: "application/vnd.docker.distribution.events.v1+json",
    3: "application/vnd.docker.distribution.events.v2+json",
}
# Headers the registry's sink or Go's HTTP client set themselves (lowercase).
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})
HEADER_VALUE_MAX = 4096


def notification_endpoint(endpoint: NotificationEndpoint) -> dict:
    """One ``notifications.endpoints`` entry; header values revealed (the result is secret)."""
    entry: dict = {
        "name": endpoint.name,
        "disabled": False,
        "url": endpoint.url,
        "timeout": f"{endpoint.timeout_seconds}s",
        "threshold": endpoint.threshold,
        "backoff": f"{endpoint.backoff_seconds}s",
    }
    if endpoint.headers:
        entry["headers"] = {name: [value.get_secret_value()] for name, value in endpoint.headers.items()}
    ignore: dict = {}
    if endpoint.ignore.media_types:
        ignore["mediatypes"] = list(endpoint.ignore.media_types)
    if endpoint.ignore.actions:
        ignore["actions"] = list(endpoint.ignore.actions)
    if ignore:
        entry["ignore"] = ignore
    return entry


def notifications_section(endpoints: Sequence[NotificationEndpoint]) -> dict | None:
    """The top-level ``notifications`` section for ``endpoints``, or None when there are none."""
    if not endpoints:
        return None
    return {"endpoints": [notification_endpoint(endpoint) for endpoint in endpoints]}
