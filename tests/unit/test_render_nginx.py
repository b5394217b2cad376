"""nginx.conf rendering: TLS policy, body handling, auth on /v2/, health without auth, headers."""

from __future__ import annotations

import re

import pytest

from components.render.nginx import (
    CERT_PATH,
    CONTAINER_HTTPS_PORT,
    HEALTH_PORT,
    HTPASSWD_PATH,
    KEY_PATH,
    NginxOptions,
    render_nginx_conf,
)

CONF = render_nginx_conf(NginxOptions(upstream="registry:5000", server_names=("registry.example.com", "localhost", "127.0.0.1")))


def block(text: str, header: str) -> str:
    """The body of the first ``header { ... }`` block (braces matched, nested blocks included)."""
    start = text.index(header + " {")
    depth, i = 0, text.index("{", start)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    raise AssertionError(f"unbalanced block {header!r}")


def directives(text: str, name: str) -> list[str]:
    """Arguments of every ``name ...;`` directive in ``text``."""
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^\s*{re.escape(name)}\s+([^;]*);", text)]


TLS_SERVER = block(CONF, "server")
V2 = block(TLS_SERVER, "location /v2/")
HEALTH = block(TLS_SERVER, "location = /healthz")
ROOT = block(TLS_SERVER, "location /")


def test_tls_1_2_and_1_3_only_with_forward_secret_aead_ciphers():
    """No SSLv3/TLS 1.0/1.1 anywhere; TLS 1.2 suites are ECDHE with GCM or ChaCha20 only."""
    assert directives(TLS_SERVER, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    assert set(re.findall(r"TLSv1(?:\.\d)?", CONF)) == {"TLSv1.2", "TLSv1.3"}
    assert "SSLv" not in CONF
    (ciphers,) = directives(TLS_SERVER, "ssl_ciphers")
    suites = ciphers.split(":")
    assert suites and all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in suites), suites
    assert directives(TLS_SERVER, "ssl_certificate") == [CERT_PATH]
    assert directives(TLS_SERVER, "ssl_certificate_key") == [KEY_PATH]
    assert directives(TLS_SERVER, "listen") == [f"{CONTAINER_HTTPS_PORT} ssl default_server"]


def test_hsts_on_every_tls_location_including_errors():
    """Strict-Transport-Security (at least a year) is added with 'always', so 401s and 404s carry it."""
    for location in (V2, HEALTH, ROOT):
        (hsts,) = [d for d in directives(location, "add_header") if d.startswith("Strict-Transport-Security")]
        assert hsts.endswith(" always")
        assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000


def test_large_and_chunked_uploads_are_streamed():
    """No 413 (body size unlimited), no 411 (chunked accepted), bodies streamed not spooled."""
    assert directives(TLS_SERVER, "client_max_body_size") == ["0"]
    assert directives(TLS_SERVER, "chunked_transfer_encoding") == ["on"]
    assert directives(V2, "proxy_request_buffering") == ["off"]
    assert directives(V2, "proxy_max_temp_file_size") == ["0"]


def test_request_buffering_option_switches_the_directive():
    """The benchmark variant with spooling on renders 'on' (so the default 'off' is not a constant)."""
    conf = render_nginx_conf(NginxOptions(request_buffering=True))
    assert directives(block(conf, "location /v2/"), "proxy_request_buffering") == ["on"]


def test_every_v2_path_needs_basic_auth_against_the_htpasswd_file():
    """/v2/ (a prefix location: every API path) checks the htpasswd file; credentials are not
    forwarded to the registry."""
    assert len(directives(V2, "auth_basic")) == 1 and directives(V2, "auth_basic")[0] != "off"
    assert directives(V2, "auth_basic_user_file") == [HTPASSWD_PATH]
    assert 'Authorization ""' in directives(V2, "proxy_set_header")
    # Nothing at server level turns auth off for /v2/.
    assert "auth_basic off" not in TLS_SERVER.replace(HEALTH, "")


def test_health_endpoint_is_unauthenticated_and_exact():
    """/healthz (exact match only) has auth off and proxies the registry root."""
    assert directives(HEALTH, "auth_basic") == ["off"]
    assert directives(HEALTH, "proxy_pass") == ["http://$registry/"]
    assert directives(HEALTH, "set") == ["$registry registry:5000"]


def test_api_version_header_comes_once_from_a_map_not_a_fixed_add_header():
    """The header is the registry's own on proxied responses and ours only when nginx answers
    itself (401): a fixed 'add_header ... registry/2.0 always' would send it twice."""
    http = block(CONF, "http")
    mapping = block(http, "map $upstream_http_docker_distribution_api_version $docker_distribution_api_version")
    assert directives(mapping, "''") == ["'registry/2.0'"]
    assert "Docker-Distribution-Api-Version $docker_distribution_api_version always" in directives(V2, "add_header")
    assert not re.search(r"add_header\s+Docker-Distribution-Api-Version\s+['\"]?registry/2\.0", CONF)


def test_forwarded_headers_and_long_timeouts():
    """The registry sees the client's host, address and scheme; slow pushes are not cut at 60 s."""
    headers = directives(V2, "proxy_set_header")
    for expected in ("Host $http_host", "X-Real-IP $remote_addr",
                     "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"):
        assert expected in headers
    assert int(directives(V2, "proxy_read_timeout")[0]) >= 900
    assert int(directives(V2, "proxy_send_timeout")[0]) >= 900
    assert directives(V2, "proxy_pass") == ["http://$registry"]


def test_server_names_and_upstream_come_from_options():
    """Every configured name is a server_name; the upstream is resolved per request via a variable."""
    assert directives(TLS_SERVER, "server_name") == ["registry.example.com localhost 127.0.0.1"]
    conf = render_nginx_conf(NginxOptions(upstream="other:5001", resolver="10.0.0.2"))
    assert directives(block(conf, "location /v2/"), "set") == ["$registry other:5001"]
    assert directives(conf, "resolver") == ["10.0.0.2 valid=1s ipv6=off"]


def test_auth_can_be_switched_off_only_explicitly():
    """auth=False (benchmark baseline) renders 'auth_basic off' and no user file."""
    v2 = block(render_nginx_conf(NginxOptions(auth=False)), "location /v2/")
    assert directives(v2, "auth_basic") == ["off"]
    assert directives(v2, "auth_basic_user_file") == []


def test_self_contained_and_unprivileged_friendly():
    """No include, no user directive, pid and temp files under /tmp: runs in any nginx image."""
    assert directives(CONF, "include") == []
    assert directives(CONF, "user") == []
    assert directives(CONF, "pid") == ["/tmp/nginx.pid"]
    for name in ("client_body_temp_path", "proxy_temp_path"):
        assert directives(CONF, name)[0].startswith("/tmp/")


def test_container_health_listener_is_loopback_only():
    """The plain-HTTP health listener binds 127.0.0.1 inside the container, never all interfaces."""
    servers = re.findall(r"(?m)^\s*listen\s+([^;]*);", CONF)
    assert servers == [f"{CONTAINER_HTTPS_PORT} ssl default_server", f"127.0.0.1:{HEALTH_PORT}"]


@pytest.mark.parametrize("options", [NginxOptions(), NginxOptions(server_names=("a.example",), upstream="x:1")])
def test_rendering_is_deterministic(options):
    """Same options, same text: the proxy container is not replaced on an unchanged stack."""
    assert render_nginx_conf(options) == render_nginx_conf(options)
