"""Metrics without Docker: the settings, the nginx metrics server as rendered, the certificate
gauges, the token service's counters, and the program's resources and exports with metrics on."""

from __future__ import annotations

import json
import re

import pytest
import requests
import yaml

from components.metrics import MetricsSettings, certificate_gauges, metrics_paths, routes
from components.render.nginx import (
    CERTIFICATE_METRICS_PATH,
    CONTAINER_METRICS_PORT,
    METRICS_HTPASSWD_PATH,
    MetricsRoutes,
    NginxOptions,
    render_certificate_metrics,
    render_nginx_conf,
)
from components.settings import SettingsError, parse_settings
from tests.support.engine import is_secret
from tests.support.token import SERVICE, get_token, serve, token_files
from token_service.access import open_policy

ON = {"metrics": {"enabled": True, "port": 9443}}


def metrics_server(conf: str) -> str:
    start = conf.index(f"listen {CONTAINER_METRICS_PORT} ssl;")
    return conf[start:conf.index("\n    }\n", start)]


def test_settings_default_off_and_refuse_what_cannot_work():
    """Off by default; on, refused in Swarm mode, on the registry's own port, and with a user
    name outside the grammar (a leading '@', a ':'), each naming the setting."""
    assert parse_settings({}, stack="dev").metrics == MetricsSettings()
    assert parse_settings(ON, stack="dev").metrics.enabled is True
    for config, words in [
        ({**ON, "swarm": {"enabled": True}}, "metrics.enabled: not supported in Swarm mode"),
        ({"metrics": {"enabled": True, "port": 5443}, "httpsPort": 5443}, "metrics.port: 5443 is the registry's"),
        ({"metrics": {"enabled": True, "username": "@ops"}}, "username"),
        ({"metrics": {"enabled": True, "username": "a:b"}}, "username"),
        ({"metrics": {"enabled": True, "port": 0}}, "port"),
    ]:
        with pytest.raises(SettingsError, match=re.escape(words) if ":" in words else words):
            parse_settings(config, stack="dev")


def test_the_metrics_server_checks_its_credential_before_answering_anything():
    """Its own port and htpasswd; each endpoint answers in the content phase (proxy_pass, alias),
    so the credential is checked first: no `return` outside the named location an upstream
    failure leads to; unknown paths 404; nothing of it without metrics."""
    conf = render_nginx_conf(NginxOptions(auth=False, token_upstream="token:5001",
                                          metrics=routes("registry-dev", token_mode=True)))
    server = metrics_server(conf)
    assert f'auth_basic_user_file {METRICS_HTPASSWD_PATH};' in server
    for path in metrics_paths(token_mode=True):
        block = server[server.index(f"location = {path} {{"):]
        block = block[:block.index("}")]
        assert "return" not in block and ("proxy_pass" in block or "alias" in block), path
    assert server.count("return 200") == 1 and "location @storage_unhealthy" in server
    assert "set $metrics_registry registry-dev-registry:5001;" in server and "alias " + CERTIFICATE_METRICS_PATH in server
    assert f"listen {CONTAINER_METRICS_PORT}" not in render_nginx_conf(NginxOptions())
    basic = metrics_server(render_nginx_conf(NginxOptions(metrics=routes("registry-dev", token_mode=False))))
    assert "/metrics/token" not in basic


@pytest.mark.parametrize("bad", ["registry:5001;", "Registry:5001", "registry", "a b:1", "registry:5001\nx"])
def test_metrics_upstreams_must_be_name_and_port(bad):
    """Only validated name:port tokens reach nginx's directives."""
    with pytest.raises(ValueError, match="not name:port"):
        render_nginx_conf(NginxOptions(metrics=MetricsRoutes(registry_debug=bad)))


def test_certificate_gauges_are_whole_seconds_in_the_text_format():
    """The served certificate's expiry (from its RFC 3339 time) and renewal window (hours), as
    two gauges; anything but whole non-negative seconds is refused."""
    text = certificate_gauges("2027-03-08T02:31:00Z", 720)
    assert "private_registry_certificate_expiry_timestamp_seconds 1804473060\n" in text
    assert "private_registry_certificate_renew_before_seconds 2592000\n" in text
    assert text.count("# TYPE") == 2
    for expiry, window in [(1.5, 0), (-1, 0), (0, -1), ("1", 0), (True, 0)]:
        with pytest.raises(ValueError):
            render_certificate_metrics(expiry, window)


def test_token_service_counts_issued_refused_and_throttled_without_names(tmp_path):
    """/metrics: a token issued, a wrong password refused, and (budget spent) a 429 each count
    once under their route; no user name or address appears in the text."""
    users = {"alice": "alice-password-0123456789"}
    files = token_files(tmp_path, users, open_policy())
    running = serve(files, failure_burst=1)
    try:
        assert get_token(running.url, ["repository:a/b:pull"], auth=("alice", users["alice"])).status_code == 200
        assert get_token(running.url, ["repository:a/b:pull"], auth=("alice", "wrong-password")).status_code == 401
        assert get_token(running.url, ["repository:a/b:pull"], auth=("alice", "wrong-again")).status_code == 429
        reply = requests.get(running.url.replace("/token", "/metrics"), timeout=10)
    finally:
        running.stop()
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain")
    text = reply.text
    for line in ('token_service_tokens_issued_total{route="GET"} 1.0', 'token_service_logins_refused_total{route="GET"} 1.0',
                 'token_service_throttled_total{route="GET"} 1.0', 'token_service_tokens_issued_total{route="POST"} 0.0'):
        assert line in text, line
    assert "alice" not in text and "127.0.0.1" not in text and SERVICE not in text


def test_program_with_metrics_publishes_the_port_uploads_its_files_and_exports_a_secret(program):
    """The proxy publishes the metrics port beside the registry's, holds the metrics htpasswd and
    certificate gauges; the registry's debug listener serves Prometheus on the network; exports:
    the endpoint URLs and user name, and the generated password as a secret (never in state)."""
    run = program({**ON, "httpsPort": 5443})
    proxy = next(r for r in run.monitor.registered if r.name == "registry-proxy-container")
    assert {p["internal"]: p["external"] for p in proxy.plain_inputs["ports"]} == {443: 5443, CONTAINER_METRICS_PORT: 9443}
    uploads = {u["file"]: u["content"] for u in proxy.plain_inputs["uploads"]}
    assert uploads[METRICS_HTPASSWD_PATH].startswith("metrics:$2")
    assert "private_registry_certificate_expiry_timestamp_seconds" in uploads[CERTIFICATE_METRICS_PATH]
    registry = next(r for r in run.monitor.registered if r.name == "registry-registry-container")
    config = next(u["content"] for u in registry.plain_inputs["uploads"] if u["file"].endswith("config.yml"))
    assert yaml.safe_load(config)["http"]["debug"] == {"addr": "0.0.0.0:5001",
                                                       "prometheus": {"enabled": True, "path": "/metrics"}}
    assert run.exports["metrics"] == {"username": "metrics", "urls": [
        f"https://localhost:9443{path}" for path in metrics_paths(token_mode=True)]}
    password = run.exports["metricsPassword"]
    assert "metricsPassword" in run.secret_exports and len(password) == 32
    assert json.dumps(password)[1:-1] not in run.monitor.state_text()
    off = program({})
    assert off.exports["metrics"] is None and off.exports["metricsPassword"] is None
