"""nginx.conf rendering: TLS policy, body limits, auth on /v2/ with failed logins rate-limited,
health without auth, the registry on its socket with the stand-by as backup, headers, logs.
(tests/integration/test_security_requests.py runs this config against hostile requests.)"""

from __future__ import annotations

import re

import pytest

from components.render.nginx import (
    CERT_PATH,
    CONTAINER_HTTPS_PORT,
    HEALTH_PORT,
    HTPASSWD_PATH,
    KEY_PATH,
    MAX_NAME_LENGTH,
    NginxOptions,
    render_nginx_conf,
)
from components.render.registry_config import REGISTRY_SOCKET, STANDBY_SOCKET

CONF = render_nginx_conf(
    NginxOptions(server_names=("registry.example.com", "localhost", "127.0.0.1"), public_port=5443)
)


def block(text: str, header: str) -> str:
    """The body of the first ``header { ... }`` block (braces matched, nested blocks included)."""
    start = text.index(header + " {")
    depth, i = 0, start + len(header) + 1
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


def servers(text: str) -> list[str]:
    """The bodies of every ``server { ... }`` block, in order."""
    found, rest = [], text
    while "server {" in rest:
        body = block(rest, "server")
        found.append(body)
        rest = rest[rest.index(body) + len(body):]
    return found


DEFAULT_SERVER, TLS_SERVER, HEALTH_SERVER = servers(CONF)
V2 = block(TLS_SERVER, "location /v2/")
UPLOADS = block(TLS_SERVER, 'location ~ "^/v2/.+/blobs/uploads/"')
LONG_NAME_PATTERN = (
    "^/v2/(?:(?:(?!/(?:manifests|blobs|tags)/).){256,}|[^/]{238,}"
    "|(?=[^/.:]+/)(?!localhost/)(?:(?!/(?:manifests|blobs|tags)/).){246,})/(?:manifests|blobs|tags)/"
)
LONG_NAME = block(TLS_SERVER, f'location ~ "{LONG_NAME_PATTERN}"')
FAILED_AUTH = block(TLS_SERVER, "location @failed_auth")
HEALTH = block(TLS_SERVER, "location = /healthz")
ROOT = block(TLS_SERVER, "location /")
PROXIED = (V2, UPLOADS)


def test_tls_1_2_and_1_3_only_with_forward_secret_aead_ciphers():
    """No SSLv3/TLS 1.0/1.1 anywhere; TLS 1.2 suites are ECDHE with GCM or ChaCha20 only, in
    the stack's server and in the default server that refuses unknown names."""
    assert set(re.findall(r"TLSv1(?:\.\d)?", CONF)) == {"TLSv1.2", "TLSv1.3"}
    assert "SSLv" not in CONF
    for server in (DEFAULT_SERVER, TLS_SERVER):
        assert directives(server, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
        (ciphers,) = directives(server, "ssl_ciphers")
        suites = ciphers.split(":")
        assert suites and all(s.startswith("ECDHE-") and ("GCM" in s or "CHACHA20" in s) for s in suites), suites
        assert directives(server, "ssl_certificate") == [CERT_PATH]
        assert directives(server, "ssl_certificate_key") == [KEY_PATH]
    assert directives(DEFAULT_SERVER, "listen") == [f"{CONTAINER_HTTPS_PORT} ssl default_server"]
    assert directives(TLS_SERVER, "listen") == [f"{CONTAINER_HTTPS_PORT} ssl"]


def test_unknown_host_names_get_421_from_the_default_server():
    """Only the configured names reach the registry: any other Host (or none) is the default
    server's, which answers 421 to everything."""
    assert directives(TLS_SERVER, "server_name") == ["registry.example.com localhost 127.0.0.1"]
    assert directives(DEFAULT_SERVER, "server_name") == ['""']
    assert directives(DEFAULT_SERVER, "return") == ["421"]
    assert "proxy_pass" not in DEFAULT_SERVER


def test_hsts_on_every_tls_location_including_errors():
    """Strict-Transport-Security (at least a year) is added with 'always', so 401s and 404s carry it."""
    for location in (V2, UPLOADS, LONG_NAME, FAILED_AUTH, ROOT, HEALTH, block(TLS_SERVER, "location = /v2")):
        (hsts,) = [d for d in directives(location, "add_header") if d.startswith("Strict-Transport-Security")]
        assert hsts.endswith(" always")
        assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 31536000


def test_bodies_are_capped_everywhere_but_blob_uploads_which_are_streamed():
    """Blob uploads: no size limit, streamed not spooled, chunked accepted. Every other API
    request: at most 4 MiB (a manifest); anything else nginx serves: 1 KiB."""
    assert directives(UPLOADS, "client_max_body_size") == ["0"]
    assert directives(V2, "client_max_body_size") == ["4m"]
    assert directives(block(CONF, "http"), "client_max_body_size")[0] == "1k"
    assert directives(TLS_SERVER, "chunked_transfer_encoding") == ["on"]
    for location in PROXIED:
        assert directives(location, "proxy_request_buffering") == ["off"]
        assert directives(location, "proxy_max_temp_file_size") == ["0"]


def test_request_buffering_option_switches_the_directive():
    """The benchmark variant with spooling on renders 'on' (so the default 'off' is not a constant)."""
    conf = render_nginx_conf(NginxOptions(request_buffering=True))
    assert directives(block(conf, "location /v2/"), "proxy_request_buffering") == ["on"]


def test_every_v2_path_needs_basic_auth_against_the_htpasswd_file():
    """Both API locations check the htpasswd file; credentials are not forwarded to the registry."""
    for location in PROXIED:
        assert len(directives(location, "auth_basic")) == 1 and directives(location, "auth_basic")[0] != "off"
        assert directives(location, "auth_basic_user_file") == [HTPASSWD_PATH]
        assert 'Authorization ""' in directives(location, "proxy_set_header")
    # Nothing at server level turns auth off for /v2/.
    assert "auth_basic off" not in TLS_SERVER.replace(HEALTH, "")


def test_failed_logins_are_rate_limited_per_client_address_after_the_check():
    """Every 401 goes to @failed_auth, limited per client address (requests without credentials,
    the challenge every client starts with, have an empty key and are not counted): each answer
    delayed to the rate, the queue as deep as the requests an address may have in progress (so
    no early 429 tells a guesser "wrong" faster), then nginx's own 401 (try_files runs after
    limit_req; 'return' would run before it)."""
    http = block(CONF, "http")
    assert directives(TLS_SERVER, "error_page") == ["401 @failed_auth"]
    mapping = block(http, "map $http_authorization $failed_auth_key")
    assert directives(mapping, "''") == ["''"] and directives(mapping, "default") == ["$binary_remote_addr"]
    assert directives(http, "limit_req_zone") == ["$failed_auth_key zone=failed_auth:10m rate=5r/s"]
    assert directives(http, "limit_req_status") == ["429"]
    assert directives(FAILED_AUTH, "limit_req") == ["zone=failed_auth burst=256"]
    assert directives(FAILED_AUTH, "try_files") == ["/nonexistent =401"]
    assert "return" not in FAILED_AUTH


def test_connections_per_address_and_idle_timeouts_are_bounded():
    """One client address holds at most 256 connections; stalled headers, bodies and reads end."""
    http = block(CONF, "http")
    assert directives(http, "limit_conn_zone") == ["$binary_remote_addr zone=per_address:10m"]
    for server in (DEFAULT_SERVER, TLS_SERVER):
        assert directives(server, "limit_conn") == ["per_address 256"]
    assert directives(http, "client_header_timeout") == ["10s"]
    assert directives(http, "client_body_timeout") == ["60s"]
    assert directives(http, "send_timeout") == ["60s"]


def test_health_endpoint_is_unauthenticated_exact_and_takes_no_body():
    """/healthz (exact match only): auth off, GET/HEAD only (405), no body (400/413), the body
    never passed on; it proxies the registry's root through the same upstream."""
    assert directives(HEALTH, "auth_basic") == ["off"]
    assert directives(HEALTH, "proxy_pass") == ["http://registry/"]
    assert directives(HEALTH, "proxy_pass_request_body") == ["off"]
    assert directives(HEALTH, "client_max_body_size") == ["1k"]
    assert "return 405" in HEALTH and "$http_transfer_encoding" in HEALTH and "$http_content_length" in HEALTH
    assert block(HEALTH_SERVER, "location = /healthz") == HEALTH


def test_the_registry_socket_first_and_the_stand_by_socket_as_backup():
    """nginx tries the registry's socket on every request (max_fails=0: never marked down) and
    the read-only stand-by's only when that refuses; an idempotent request that fails to
    connect is retried there."""
    upstream = block(block(CONF, "http"), "upstream registry")
    assert directives(upstream, "server") == [f"unix:{REGISTRY_SOCKET} max_fails=0",
                                              f"unix:{STANDBY_SOCKET} max_fails=0 backup"]
    for location in PROXIED:
        assert directives(location, "proxy_pass") == ["http://registry"]
        assert directives(location, "proxy_next_upstream") == ["error timeout http_502 http_503"]
    tcp = render_nginx_conf(NginxOptions(upstreams=("registry-tcp:5000",), backup_upstreams=()))
    assert directives(block(tcp, "upstream registry"), "server") == ["registry-tcp:5000 max_fails=0"]


def test_api_version_header_comes_once_from_a_map_not_a_fixed_add_header():
    """The header is the registry's own on proxied responses and ours only when nginx answers
    itself (401): a fixed 'add_header ... registry/2.0 always' would send it twice."""
    http = block(CONF, "http")
    mapping = block(http, "map $upstream_http_docker_distribution_api_version $docker_distribution_api_version")
    assert directives(mapping, "''") == ["'registry/2.0'"]
    for location in (*PROXIED, FAILED_AUTH, LONG_NAME):
        assert "Docker-Distribution-Api-Version $docker_distribution_api_version always" in directives(location, "add_header")
    assert not re.search(r"add_header\s+Docker-Distribution-Api-Version\s+['\"]?registry/2\.0", CONF)


def test_the_registry_sees_only_headers_nginx_sets():
    """Host is the stack's own name and published port; client Forwarded, X-Forwarded-Host and
    -Port are dropped, X-Forwarded-For is the client's address only; slow pushes are not cut."""
    for location in PROXIED:
        headers = directives(location, "proxy_set_header")
        for expected in ('Host "$host:5443"', "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr",
                         "X-Forwarded-Proto https", 'Forwarded ""', 'X-Forwarded-Host ""', 'X-Forwarded-Port ""'):
            assert expected in headers
        assert int(directives(location, "proxy_read_timeout")[0]) >= 900
        assert int(directives(location, "proxy_send_timeout")[0]) >= 900
    on_443 = render_nginx_conf(NginxOptions(public_port=443))
    assert 'Host "$host"' in directives(block(on_443, "location /v2/"), "proxy_set_header")


def test_v2_redirects_keep_the_published_port():
    """/v2 answers 301 to /v2/ on the published port (nginx's own redirect would drop it)."""
    assert directives(block(TLS_SERVER, "location = /v2"), "return") == ["301 https://$host:5443/v2/"]


def test_names_longer_than_the_registry_can_serve_are_refused_with_400():
    """Registry 2.8 (inmemory cache) checks the 255-character limit on the normalised name and
    answers 500 past it: nginx answers NAME_INVALID (400) before auth at exactly those lengths
    (measured against docker-registry 2.8.2: 237/238 for one component, 245/246 for a
    non-host first component, 255/256 after a host name)."""
    assert MAX_NAME_LENGTH == 255
    (answer,) = directives(LONG_NAME, "return")
    assert answer.startswith("400 ") and "NAME_INVALID" in answer
    pattern = re.compile(LONG_NAME_PATTERN)

    def refused(name: str, rest: str = "/tags/list") -> bool:
        return bool(pattern.match(f"/v2/{name}{rest}"))

    assert refused("a" * 238) and not refused("a" * 237)
    assert refused("ab/" + "a" * 243) and not refused("ab/" + "a" * 242)
    assert refused("a.b/" + "a" * 252) and not refused("a.b/" + "a" * 251)
    assert refused("localhost/" + "a" * 246) and not refused("localhost/" + "a" * 245)
    assert refused("a" * 7700, "/manifests/latest") and refused("a" * 300, "/blobs/sha256:00")
    assert not refused("app", "/blobs/uploads/" + "u" * 300 + "/manifests/x")


def test_logs_escape_client_input_and_errors_log_nothing_a_client_wrote():
    """The access log is JSON-escaped (a newline in a user name stays one line); the error log
    is at 'crit', below which nginx writes failed user names raw."""
    http = block(CONF, "http")
    (fmt,) = [d for d in directives(http, "log_format")]
    assert fmt.startswith("registry escape=json ") and "$remote_user" in fmt
    assert directives(http, "access_log")[0] == "/dev/stdout registry"
    assert directives(CONF, "error_log") == ["/dev/stderr crit"]


def test_auth_can_be_switched_off_only_explicitly():
    """auth=False (benchmark baseline) renders 'auth_basic off' and no user file."""
    v2 = block(render_nginx_conf(NginxOptions(auth=False)), "location /v2/")
    assert directives(v2, "auth_basic") == ["off"]
    assert directives(v2, "auth_basic_user_file") == []


def test_self_contained_with_unprivileged_workers():
    """No include; workers run as nobody in group root (the socket's and htpasswd's group);
    pid and temp files under /tmp: runs in any nginx image."""
    assert directives(CONF, "include") == []
    assert directives(CONF, "user") == ["nobody root"]
    assert directives(CONF, "pid") == ["/tmp/nginx.pid"]
    for name in ("client_body_temp_path", "proxy_temp_path"):
        assert directives(CONF, name)[0].startswith("/tmp/")


def test_container_health_listener_is_loopback_only():
    """The plain-HTTP health listener binds 127.0.0.1 inside the container, never all interfaces."""
    listens = re.findall(r"(?m)^\s*listen\s+([^;]*);", CONF)
    assert listens == [f"{CONTAINER_HTTPS_PORT} ssl default_server", f"{CONTAINER_HTTPS_PORT} ssl",
                       f"127.0.0.1:{HEALTH_PORT}"]


@pytest.mark.parametrize("options", [NginxOptions(), NginxOptions(server_names=("a.example",), public_port=1)])
def test_rendering_is_deterministic(options):
    """Same options, same text: the proxy container is not replaced on an unchanged stack."""
    assert render_nginx_conf(options) == render_nginx_conf(options)


@pytest.mark.parametrize("name", ["a;location / { return 200; }", "fe80::1%eth0", "host\n", "x y", "", "ex$ample.com"])
def test_server_names_outside_the_grammar_are_refused_by_the_renderer(name):
    """The renderer itself refuses a server name that is not a DNS name or an IP, so no hostile token reaches nginx."""
    with pytest.raises(ValueError, match="server name"):
        render_nginx_conf(NginxOptions(server_names=("localhost", name)))


def test_token_endpoint_refuses_password_floods_at_once_per_client_address():
    """Token mode: /token requests that may carry a password (GET with Basic credentials, any
    POST) spend a per-address zone at the configured rate; every /token request spends a looser
    per-address zone; over either, 429 at once (nodelay: no queue a flood can fill). Anonymous
    GETs and bearer-less requests without credentials have an empty key in the password zone."""
    conf = render_nginx_conf(NginxOptions(auth=False, token_upstream="token:5001", token_rate_per_second=3,
                                          token_burst=7, token_any_rate_per_second=40, token_any_burst=90))
    http = block(conf, "http")
    mapping = block(http, 'map "$request_method:$http_authorization" $token_password_key')
    assert directives(mapping, '"~^POST:"') == ["$binary_remote_addr"]
    assert directives(mapping, '"~*^[A-Z]+:basic "') == ["$binary_remote_addr"]
    assert directives(mapping, "default") == ["''"]
    assert directives(http, "limit_req_zone")[-2:] == ["$token_password_key zone=token:10m rate=3r/s",
                                                       "$binary_remote_addr zone=token_any:10m rate=40r/s"]
    assert directives(http, "limit_req_status") == ["429"]
    token = block(conf, "location = /token")
    assert directives(token, "limit_req") == ["zone=token burst=7 nodelay", "zone=token_any burst=90 nodelay"]
    # The map's patterns, as nginx applies them (PCRE; ~* case-insensitive), on the keys it builds.
    post, basic = re.compile(r"^POST:"), re.compile(r"^[A-Z]+:basic ", re.IGNORECASE)
    counted = lambda key: bool(post.search(key) or basic.search(key))  # noqa: E731
    assert counted("GET:Basic Ym9iOnB3") and counted("GET:basic Ym9iOnB3") and counted("POST:")
    assert not counted("GET:") and not counted("GET:Bearer eyJ") and not counted("HEAD:")
    assert "zone=token" not in CONF and "location = /token" not in CONF  # basic mode: no /token
