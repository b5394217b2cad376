"""notifications[]: the settings (validated at preview, header values secret) and the
``notifications`` section the real program renders into the registry's config.yml, on one host
and in Swarm mode, for distribution 3 and 2.8."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from components import grammar
from components.render.notifications import ACTIONS, EVENTS_MEDIA_TYPES, notifications_section
from components.render.registry_config import CONFIG_PATH, render_registry_config
from components.settings import REGISTRY2_IMAGE, SettingsError, parse_settings
from components.settings_notify import NotificationEndpoint
from tests.support.deploy import upload_content
from tests.support.engine import redact
from tests.support.program import run_program

TOKEN = "Bearer hook-token-7f3a9c1e5b"
OTHER = "key-9d2e4b6a8c0f"
ENDPOINT = {"name": "audit", "url": "http://hooks.internal:8080/registry-events", "headers": {"Authorization": TOKEN}}
SECRET_KEYS = {"notifications"}


def parse(endpoints, secret_keys=SECRET_KEYS):
    return parse_settings({"notifications": endpoints}, stack="dev", secret_keys=set(secret_keys), now=0)


def refused(endpoints, secret_keys=SECRET_KEYS) -> str:
    with pytest.raises(SettingsError) as caught:
        parse(endpoints, secret_keys)
    message = str(caught.value)
    assert TOKEN not in message and OTHER not in message and "SecretStr" not in message, message
    return message


def registry_config(run, name="registry-registry-container") -> dict:
    container = next(c for c in run.monitor.by_type("docker:index/container:Container") if c.name == name)
    return yaml.safe_load(upload_content(container, CONFIG_PATH))


# (endpoints, the setting path named, words of the fix)
INVALID = {
    "ftp URL": ([{**ENDPOINT, "url": "ftp://hooks.internal/x"}], "notifications[0].url", "http(s)://HOST"),
    "credentials in the URL": ([{**ENDPOINT, "url": "http://u:p@hooks.internal/x"}], "notifications[0].url",
                               "put credentials in headers"),
    "URL without host": ([{**ENDPOINT, "url": "http:///events"}], "notifications[0].url", "http(s)://HOST"),
    "URL with a fragment": ([{**ENDPOINT, "url": "http://hooks.internal/x#y"}], "notifications[0].url", "http(s)://HOST"),
    "URL with '..'": ([{**ENDPOINT, "url": "http://hooks.internal/a/../b"}], "notifications[0].url", "http(s)://HOST"),
    "URL with a quote": ([{**ENDPOINT, "url": "http://hooks.internal/'x"}], "notifications[0].url", "http(s)://HOST"),
    "URL with a line break": ([{**ENDPOINT, "url": "http://hooks.internal/x\nfoo"}], "notifications[0].url",
                              "http(s)://HOST"),
    "port out of range": ([{**ENDPOINT, "url": "http://hooks.internal:70000/"}], "notifications[0].url", "http(s)://HOST"),
    "no URL": ([{"name": "audit"}], "notifications[0].url", "is required"),
    "no name": ([{"url": ENDPOINT["url"]}], "notifications[0].name", "is required"),
    "name with a space": ([{**ENDPOINT, "name": "my hook"}], "notifications[0].name", "letters, digits"),
    "header name with a space": ([{**ENDPOINT, "headers": {"X Token": OTHER}}], "notifications[0].headers.X Token",
                                 "letters, digits and '-'"),
    "header name with ':'": ([{**ENDPOINT, "headers": {"X-Token:": OTHER}}], "notifications[0].headers.X-Token:",
                             "letters, digits and '-'"),
    "header the registry sets": ([{**ENDPOINT, "headers": {"Content-Type": OTHER}}], "notifications[0].headers.Content-Type",
                                 "remove it"),
    "header twice in other case": ([{**ENDPOINT, "headers": {"X-Key": OTHER, "x-key": OTHER}}],
                                   "notifications[0].headers", "list it once"),
    "header value with a line break": ([{**ENDPOINT, "headers": {"X-Key": OTHER + "\r\nX-Evil: 1"}}],
                                       "notifications[0].headers.X-Key", "without line breaks"),
    "empty header value": ([{**ENDPOINT, "headers": {"X-Key": ""}}], "notifications[0].headers.X-Key", "1 to 4096"),
    "header value not text": ([{**ENDPOINT, "headers": {"X-Key": 5}}], "notifications[0].headers.X-Key", "must be text"),
    "timeout 0": ([{**ENDPOINT, "timeoutSeconds": 0}], "notifications[0].timeoutSeconds", "between 1 and 60"),
    "timeout as text": ([{**ENDPOINT, "timeoutSeconds": "5s"}], "notifications[0].timeoutSeconds", "between 1 and 60"),
    "threshold 0": ([{**ENDPOINT, "threshold": 0}], "notifications[0].threshold", "between 1 and 100"),
    "threshold true": ([{**ENDPOINT, "threshold": True}], "notifications[0].threshold", "between 1 and 100"),
    "backoff over an hour": ([{**ENDPOINT, "backoffSeconds": 3601}], "notifications[0].backoffSeconds",
                             "between 1 and 3600"),
    "unknown action": ([{**ENDPOINT, "ignore": {"actions": ["pul"]}}], "notifications[0].ignore.actions[0]",
                       "push, pull, delete or mount"),
    "action twice": ([{**ENDPOINT, "ignore": {"actions": ["pull", "pull"]}}], "notifications[0].ignore.actions",
                     "list each once"),
    "every action ignored": ([{**ENDPOINT, "ignore": {"actions": list(ACTIONS)}}], "notifications[0].ignore.actions",
                             "remove the endpoint"),
    "bad media type": ([{**ENDPOINT, "ignore": {"mediaTypes": ["application json"]}}],
                       "notifications[0].ignore.mediaTypes[0]", "media type like"),
    "unknown key": ([{**ENDPOINT, "timeout": "5s"}], "notifications[0].timeout", "not a known setting"),
    "names not unique": ([ENDPOINT, {**ENDPOINT, "url": "https://other.example.com/"}], "notifications[1].name",
                         "rename one"),
    "not a list": ({"name": "audit"}, "notifications", "must be a list"),
}


@pytest.mark.parametrize("endpoints, path, fix", INVALID.values(), ids=INVALID.keys())
def test_bad_endpoint_refused_with_the_setting_path_and_the_fix(endpoints, path, fix):
    """Each bad value is refused at preview with private-registry:<path> and the fix; no header
    value (a secret) is in the message."""
    message = refused(endpoints)
    assert f"private-registry:{path}:" in message and fix in message, message


def test_headers_in_plain_text_are_refused():
    """Header values are secrets: a notifications setting with headers that is not stored as a
    secret is refused, naming the entry and the `--secret` fix, without the value."""
    message = refused([ENDPOINT], secret_keys=())
    assert "private-registry:notifications[0].headers: holds header values" in message
    assert "--secret --path 'notifications[0].headers." in message
    # Without headers nothing in the entry is secret: plain text is fine.
    assert parse([{"name": "audit", "url": ENDPOINT["url"]}], secret_keys=()).notifications[0].name == "audit"


VALID = {
    "https with port, path and query": "https://hooks.example.com:8443/v1/registry?source=prod&kind=events",
    "bare host": "http://receiver",
    "IPv4": "http://10.0.0.7:9000/events",
    "IPv6": "http://[fd00::7]:9000/events",
    "trailing slash": "http://hooks.internal/",
}


@pytest.mark.parametrize("url", VALID.values(), ids=VALID.keys())
def test_valid_urls_are_accepted_as_given(url):
    """http(s) URLs with a DNS name or IP address, port, path and query are accepted unchanged."""
    assert parse([{**ENDPOINT, "url": url}]).notifications[0].url == url


def test_defaults_and_header_values_held_as_secrets():
    """Unset: 5 s timeout, 10 failures before backing off, 1 s backoff, nothing ignored; header
    values are SecretStr (their repr shows no value)."""
    (endpoint,) = parse([ENDPOINT]).notifications
    assert (endpoint.timeout_seconds, endpoint.threshold, endpoint.backoff_seconds) == (5, 10, 1)
    assert endpoint.ignore.actions == () and endpoint.ignore.media_types == ()
    assert TOKEN not in repr(endpoint) and endpoint.headers["Authorization"].get_secret_value() == TOKEN


def test_grammar_parses_urls_in_full():
    """parse_http_url matches the whole text: a valid URL followed by anything else is refused."""
    assert grammar.parse_http_url("http://h:1/a?b=c") == grammar.HttpUrl("http", "h", 1, "/a", "b=c")
    for bad in ("http://h/a ", " http://h/a", "http://h/a\n", "http://h/a?", "http://h/a?b=c#", "http://h/%2e%2e/",
                "http://h/$(id)", "http://h/a;b", "HTTP://h/"):
        assert grammar.parse_http_url(bad) is None, bad
    assert grammar.is_header_name("X-Registry-Token") and not grammar.is_header_name("-X")
    assert grammar.is_media_type("application/vnd.oci.image.manifest.v1+json")
    assert not grammar.is_media_type("application/") and not grammar.is_media_type("a/b/c")


FULL = {
    **ENDPOINT, "headers": {"Authorization": TOKEN, "X-Source": OTHER}, "timeoutSeconds": 3, "threshold": 4,
    "backoffSeconds": 30, "ignore": {"actions": ["pull"], "mediaTypes": ["application/octet-stream"]},
}
RENDERED = {
    "name": "audit", "disabled": False, "url": ENDPOINT["url"], "timeout": "3s", "threshold": 4, "backoff": "30s",
    "headers": {"Authorization": [TOKEN], "X-Source": [OTHER]},
    "ignore": {"mediatypes": ["application/octet-stream"], "actions": ["pull"]},
}


@pytest.mark.parametrize("image", [None, REGISTRY2_IMAGE], ids=["distribution 3", "distribution 2.8"])
def test_program_renders_the_endpoints_into_config_yml(image):
    """The real program puts each endpoint into config.yml's notifications.endpoints, in order:
    url, headers as lists (distribution's http.Header), Go durations, threshold, ignore; the same
    for 2.8 and 3, which read the same fields. The rest of the config is as without it."""
    images = {"images": {"registry": image}} if image else {}
    second = {"name": "siem", "url": "https://siem.example.com/in"}
    run = run_program({"notifications": [FULL, second], **images}, secret_keys=["notifications"])
    config = registry_config(run)
    assert config["notifications"] == {"endpoints": [RENDERED, {
        "name": "siem", "disabled": False, "url": "https://siem.example.com/in", "timeout": "5s", "threshold": 10,
        "backoff": "1s"}]}
    without = registry_config(run_program(images))
    assert "notifications" not in without
    del config["notifications"]
    assert config["storage"] == without["storage"] and config.get("auth") == without.get("auth")


def test_no_notifications_render_nothing():
    """Without endpoints the section is absent, so existing stacks' config (and container) do not change."""
    assert notifications_section(()) is None
    text = render_registry_config(http_secret="s", notifications=None)
    assert "notifications" not in yaml.safe_load(text)


def test_header_values_stay_secret_in_the_state():
    """The registry container's config upload is secret; no header value appears in plain text
    in any resource's inputs or outputs as the engine stores them, nor in the exports."""
    run = run_program({"notifications": [FULL]}, secret_keys=["notifications"])
    assert TOKEN in upload_content(
        next(c for c in run.monitor.by_type("docker:index/container:Container") if c.name == "registry-registry-container"),
        CONFIG_PATH)  # control: the search finds it where it is legitimately held
    state = json.dumps([[redact(r.inputs), redact(r.outputs)] for r in run.monitor.registered])
    assert TOKEN not in state and OTHER not in state
    assert TOKEN not in json.dumps(run.exports, default=str)


S3 = {"driver": "s3", "s3": {"bucket": "images", "endpoint": "http://s3:8333", "pathStyle": True,
                             "accessKey": "AKID0123", "secretKey": "Secret0123"}}


def test_swarm_replicas_and_their_readonly_twin_get_the_same_endpoints():
    """In Swarm mode the registry config every replica mounts (a Swarm secret) and its read-only
    twin used during garbage collection carry the same notifications section."""
    run = run_program({"swarm": {"enabled": True, "replicas": 3}, "storage": S3, "notifications": [FULL]},
                      secret_keys=["storage", "notifications"])
    secrets = {x.name.rsplit("swarm-", 1)[1]: x.plain_inputs for x in run.monitor.by_type("docker:index/secret:Secret")}
    for role in ("registry-config", "registry-config-readonly"):
        config = yaml.safe_load(base64.b64decode(secrets[role]["data"]))
        assert config["notifications"] == {"endpoints": [RENDERED]}, role
    state = json.dumps([[redact(r.inputs), redact(r.outputs)] for r in run.monitor.registered])
    assert TOKEN not in state


def test_envelope_media_types_by_version():
    """What a receiver gets announced differs by version (distribution's EventsMediaType):
    2.8 posts v1 envelopes, 3 v2 (a target is an OCI descriptor)."""
    assert EVENTS_MEDIA_TYPES == {2: "application/vnd.docker.distribution.events.v1+json",
                                  3: "application/vnd.docker.distribution.events.v2+json"}


def test_endpoint_model_by_field_name():
    """Python code may build an endpoint by field name, as components do with other settings."""
    endpoint = NotificationEndpoint(name="a", url="http://h/", timeout_seconds=2)
    assert notifications_section([endpoint])["endpoints"][0]["timeout"] == "2s"


HOSTILE_TARGETS = {
    "url": (lambda v: [{**ENDPOINT, "url": v}], ENDPOINT["url"],
            lambda s, v: grammar.parse_http_url(s.notifications[0].url) is not None),
    "name": (lambda v: [{**ENDPOINT, "name": v}], "audit", lambda s, v: grammar.is_docker_name(s.notifications[0].name)),
    "header name": (lambda v: [{**ENDPOINT, "headers": {v: OTHER}}], "X-Key",
                    lambda s, v: all(grammar.is_header_name(n) for n in s.notifications[0].headers)),
    "header value": (lambda v: [{**ENDPOINT, "headers": {"X-Key": v}}], OTHER,
                     lambda s, v: s.notifications[0].headers["X-Key"].get_secret_value() == v and v.isprintable()
                     and v.isascii() and v == v.strip()),
    "ignored media type": (lambda v: [{**ENDPOINT, "ignore": {"mediaTypes": [v]}}], "application/octet-stream",
                           lambda s, v: grammar.is_media_type(s.notifications[0].ignore.media_types[0])),
}


@pytest.mark.parametrize("target", HOSTILE_TARGETS, ids=HOSTILE_TARGETS)
def test_hostile_fragments_are_refused_or_read_as_their_kind(target):
    """Each of tests/support/hostile.py's FRAGMENTS alone, before and after a valid value, in
    each notification string setting: refused naming notifications[0] (a header value never
    echoed), or accepted as a value of its grammar; an accepted header value reaches config.yml
    byte for byte (YAML written by the library). Only header values, free text, take any."""
    from tests.support.hostile import FRAGMENTS

    build, valid, kind = HOSTILE_TARGETS[target]
    accepted = 0
    for fragment in FRAGMENTS.values():
        for value in (fragment, fragment + valid, valid + fragment):
            try:
                settings = parse(build(value))
            except SettingsError as exc:
                message = str(exc)
                assert "private-registry:notifications[0]" in message, message
                assert all(line.isprintable() for line in message.split("\n")), repr(message)
                if target == "header value":  # (a lone character like '\n' is in any message)
                    assert OTHER not in message and (len(value) < 4 or value not in message), message
                continue
            assert kind(settings, value), (target, value)
            accepted += 1
            if target == "header value":
                text = render_registry_config(http_secret="s", notifications=notifications_section(settings.notifications))
                assert yaml.safe_load(text)["notifications"]["endpoints"][0]["headers"]["X-Key"] == [value]
    if target in ("name", "header name", "ignored media type"):
        assert accepted == 0
    print(f"{target}: {accepted} of {3 * len(FRAGMENTS)} hostile values accepted")
