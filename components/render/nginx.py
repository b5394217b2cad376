"""nginx configuration for the TLS and basic-auth proxy in front of the registry, as text.

The same text runs in the official ``nginx`` image and in the Debian-built stand-in the tests
use: it includes no other file and keeps its pid and temporary files under ``/tmp``. Workers
run as ``nobody`` in group ``root``: the group that may connect to the registry's Unix socket
and read the htpasswd file (mode 0640), neither of which any other user can.

Hostile requests are refused by nginx before anything reaches the registry: request bodies are
capped everywhere but on blob uploads (manifests: 4 MiB, as distribution 3's own limit), the
health endpoint takes GET/HEAD without a body, names longer than distribution's 255-character
limit get 400, unknown ``Host`` names 421, failed logins are slowed per client address, client ``Forwarded``/``X-Forwarded-*`` headers are replaced, and the logs
escape whatever a client sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from components.grammar import is_dns_name, parse_host_port, parse_ip, url_host
from components.render.registry_config import REGISTRY_SOCKET, STANDBY_SOCKET

CONTAINER_HTTPS_PORT = 443
# Plain-HTTP listener bound to the container's loopback, only for the container healthcheck:
# the image's wget may not speak TLS, and this keeps the check independent of certificates.
HEALTH_PORT = 8080
CERT_PATH = "/etc/nginx/tls/server.crt"
KEY_PATH = "/etc/nginx/tls/server.key"
HTPASSWD_PATH = "/etc/nginx/htpasswd"
CONF_PATH = "/etc/nginx/nginx.conf"
# Metrics (components/metrics.py): their own TLS listener and their own credential.
CONTAINER_METRICS_PORT = 9443
METRICS_HTPASSWD_PATH = "/etc/nginx/metrics-htpasswd"
METRICS_REALM = "Registry metrics"
METRICS_PREFIX = "private_registry"
CERTIFICATE_METRICS_PATH = "/etc/nginx/metrics/certificate.prom"
WORKER_USER = "nobody"
WORKER_GROUP = "root"
REALM = "Registry realm"
# Distribution's limit on a repository name's length. Registry 2.8 with the inmemory descriptor
# cache applies it to the name as Docker normalises it ("docker.io/library/" before a name of
# one component, "docker.io/" before one whose first component is not a host name) and
# answers 500 past it; nginx answers 400 instead, at exactly those lengths.
MAX_NAME_LENGTH = 255
_SINGLE_PREFIX = len("docker.io/library/")
_DOMAIN_PREFIX = len("docker.io/")

# Mozilla "intermediate" policy: TLS 1.2 with forward-secret AEAD suites only; TLS 1.3 suites
# are fixed by OpenSSL and all strong.
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
TLS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
HSTS = "max-age=63072000"
_API_PATH_KIND = "(?:manifests|blobs|tags)"


@dataclass(frozen=True)
class MetricsRoutes:
    """Where the metrics server (``CONTAINER_METRICS_PORT``) gets what it serves."""

    # The registry's debug listener (host:port on the Docker network): /metrics and /debug/health.
    registry_debug: str
    # Token mode: the token service (host:port) whose /metrics it serves; None in basic mode.
    token: Optional[str] = None


@dataclass(frozen=True)
class NginxOptions:
    """What varies between deployments (and between benchmark variants)."""

    # The registry: a Unix socket in the volume shared with the registry container (or, for a
    # benchmark, host:port). Every request goes to the first that accepts a connection.
    upstreams: tuple[str, ...] = (f"unix:{REGISTRY_SOCKET}",)
    # Tried only when no upstream accepts: the read-only stand-by during garbage collection.
    backup_upstreams: tuple[str, ...] = (f"unix:{STANDBY_SOCKET}",)
    # The registry is on the same host: a connect that takes longer means it is gone.
    connect_timeout_seconds: int = 1
    # The names clients use; any other Host gets 421. The first is the stack's own address.
    # DNS names and canonical IP addresses (grammar.parse_ip), IPv6 without brackets: nginx
    # compares $host, which keeps the brackets, so the renderer writes them ([::1]).
    server_names: tuple[str, ...] = ("localhost",)
    # The port clients connect to (the published port): in the Host the registry sees, so its
    # upload Locations point back at this proxy, and in redirects.
    public_port: int = 443
    auth: bool = True
    worker_processes: str = "auto"
    # Stream request bodies (layer pushes) to the registry instead of spooling them to disk first.
    request_buffering: bool = False
    # The buffer a streamed body passes through: nginx reads from TLS and writes to the registry
    # this much at a time. The 16k default nearly doubles nginx's CPU per pushed byte (bench/).
    client_body_buffer_size: str = "1m"
    # Response buffering on: nginx reads the registry's response into memory buffers while the
    # client drains it, so a pull is not throttled to the registry's write pace (see bench/).
    proxy_buffering: bool = True
    proxy_buffers: str = "64 64k"
    proxy_buffer_size: str = "64k"
    read_timeout_seconds: int = 900
    # Largest body of any request but a blob upload (manifest PUTs are the big ones).
    max_body_size: str = "4m"
    # Failed logins (requests that carried credentials and got 401) per client address: the
    # answers come at most this many per second, each one delayed until its turn. Never
    # refused early: a fast refusal would tell a guesser "wrong" as quickly as a 401 would.
    failed_auth_rate_per_second: int = 5
    # Requests one client address may have in progress at once (a layer transfer is one; Docker
    # moves a few at a time); over it, 429. It also bounds the failed logins waiting their turn.
    max_connections_per_address: int = 256
    # Idle limits between two reads or writes (not whole transfers): a stalled client goes.
    client_header_timeout_seconds: int = 10
    client_body_timeout_seconds: int = 60
    send_timeout_seconds: int = 60
    # Swarm mode: the registry's replicas come and go with new addresses, so the upstream
    # (host:port, the first of ``upstreams``) is looked up through this DNS server per request
    # (every address of the name, tried in turn) instead of once at start; no backup then.
    resolver: Optional[str] = None
    # TCP keepalive on connections to the registry (SO_KEEPALIVE; timing from the kernel's
    # net.ipv4.tcp_keepalive_* in nginx's network namespace): a registry that vanished without
    # closing its connections (a task killed on another node) is noticed instead of waited for.
    upstream_keepalive: bool = False
    # Token mode: the token service (host:port on the Docker network, looked up through Docker's
    # DNS per request) behind ``location = /token``; the registry checks tokens itself, so /v2/
    # passes Authorization through (set auth=False with it). Per client address, requests that
    # may carry a password (GET with Basic credentials, any POST) are limited to
    # ``token_rate_per_second`` (burst ``token_burst``); every /token request to
    # ``token_any_rate_per_second`` (burst ``token_any_burst``). Over a limit: 429 at once.
    token_upstream: Optional[str] = None
    token_rate_per_second: int = 5
    token_burst: int = 20
    token_any_rate_per_second: int = 50
    token_any_burst: int = 100
    # Metrics on their own port behind their own credential (see _metrics_server); None: off.
    metrics: Optional[MetricsRoutes] = None


def _host_suffix(port: int) -> str:
    return "" if port == CONTAINER_HTTPS_PORT else f":{port}"


def _proxied(o: NginxOptions, auth: str, max_body: str) -> str:
    """The directives of a location that hands authenticated API requests to the registry."""
    host = f"$host{_host_suffix(o.public_port)}"
    return f"""# Docker before 1.6 speaks a protocol this registry does not.
            if ($http_user_agent ~ "^(docker\\/1\\.(3|4|5(?!\\.[0-9]-dev))|Go ).*$") {{
                return 404;
            }}
            {auth}
            client_max_body_size {max_body};

            add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
            add_header Strict-Transport-Security "{HSTS}" always;

            {_pass(o)}
            proxy_http_version 1.1;
            # The registry builds upload Locations from these: only what nginx knows is sent
            # ($host is one of server_name here; any other name went to the default server).
            proxy_set_header Host "{host}";
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Forwarded "";
            proxy_set_header X-Forwarded-Host "";
            proxy_set_header X-Forwarded-Port "";
            {_authorization(o)}

            proxy_request_buffering {"on" if o.request_buffering else "off"};
            client_body_buffer_size {o.client_body_buffer_size};
            proxy_buffering {"on" if o.proxy_buffering else "off"};
            proxy_buffers {o.proxy_buffers};
            proxy_buffer_size {o.proxy_buffer_size};
            proxy_max_temp_file_size 0;
            proxy_connect_timeout {o.connect_timeout_seconds}s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_read_timeout {o.read_timeout_seconds};
            proxy_send_timeout {o.read_timeout_seconds};{_keepalive(o)}"""


def _pass(o: NginxOptions, path: str = "") -> str:
    """proxy_pass to the upstream group, or (with a resolver) to the name looked up per request."""
    if o.resolver is None:
        return f"proxy_pass http://registry{path};"
    return f"set $registry_upstream {o.upstreams[0]};\n            proxy_pass http://$registry_upstream{path};"


def _keepalive(o: NginxOptions) -> str:
    return "\n            proxy_socket_keepalive on;" if o.upstream_keepalive else ""


def _authorization(o: NginxOptions) -> str:
    if o.token_upstream:
        return "# Token mode: the registry checks the bearer token itself."
    return """# The registry does no auth of its own; the credentials stop here.
            proxy_set_header Authorization "";"""


def _token_location(o: NginxOptions) -> str:
    """Token mode: the realm, rate-limited per client address so password guessing is slow and
    cannot starve other users: requests that may carry a password spend the ``token`` zone,
    every request the looser ``token_any`` zone; over either, nginx answers 429 at once
    (``nodelay``, no queue a flood could fill), before the token service sees the request.
    Anonymous GETs and other clients' requests are not spent by a password flood. The client
    address reaches the token service (which also throttles failed password checks per address)
    only as nginx's ``$remote_addr``: the forwarding headers are overwritten, never passed on
    from the client."""
    if not o.token_upstream:
        return ""
    return f"""        location = /token {{
            limit_req zone=token burst={o.token_burst} nodelay;
            limit_req zone=token_any burst={o.token_any_burst} nodelay;
            add_header Strict-Transport-Security "{HSTS}" always;
            client_max_body_size 16k;
            resolver 127.0.0.11 valid=1s ipv6=off;
            set $token_service {o.token_upstream};
            proxy_pass http://$token_service;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Forwarded "";
            proxy_connect_timeout {o.connect_timeout_seconds}s;
            proxy_read_timeout 30s;
        }}

"""


def render_certificate_metrics(expiry: int, renew_before_seconds: int) -> str:
    """The served certificate's gauges in the Prometheus text format: its end of validity
    (seconds since the epoch) and how long before it the program renews it (seconds)."""
    if not (type(expiry) is int and type(renew_before_seconds) is int and expiry >= 0 and renew_before_seconds >= 0):
        raise ValueError("certificate expiry and renewal window must be whole seconds, 0 or more")
    name = f"{METRICS_PREFIX}_certificate"
    return (
        f"# HELP {name}_expiry_timestamp_seconds When the served TLS certificate expires.\n"
        f"# TYPE {name}_expiry_timestamp_seconds gauge\n"
        f"{name}_expiry_timestamp_seconds {expiry}\n"
        f"# HELP {name}_renew_before_seconds How long before its expiry the program renews it.\n"
        f"# TYPE {name}_renew_before_seconds gauge\n"
        f"{name}_renew_before_seconds {renew_before_seconds}\n"
    )


def _metrics_server(o: NginxOptions) -> str:
    """The metrics listener: TLS with the stack's certificate, basic auth against the metrics
    user's own htpasswd (no registry user's password opens it, and it opens nothing else), and
    these Prometheus endpoints only, each answered in the content phase (after the credential
    is checked; nginx's ``return`` would answer before it):

    - ``/metrics/registry``: the registry's own (``http.debug.prometheus`` on its debug listener);
    - ``/metrics/token``: the token service's counters (token mode);
    - ``/metrics/storage``: ``private_registry_storage_healthy`` 1 or 0, from the registry's
      health checks (its ``/debug/health`` answers ``{}`` while they pass, 503 once the storage
      driver check fails; unreachable counts as failing);
    - ``/metrics/certificate``: :func:`render_certificate_metrics`, a file in the container.
    """
    m = o.metrics
    if m is None:
        return ""
    for value in (m.registry_debug, *([m.token] if m.token else [])):
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,62}:[0-9]{1,5}", value):
            raise ValueError(f"metrics upstream {value!r} is not name:port")
    gauge = f"{METRICS_PREFIX}_storage_healthy"
    health = f"# HELP {gauge} 1 while the registry's storage health checks pass.\\n# TYPE {gauge} gauge\\n{gauge}"
    token = f"""
        location = /metrics/token {{
            set $metrics_token {m.token};
            proxy_pass http://$metrics_token/metrics;
        }}""" if m.token else ""
    return f"""
    # Metrics: their own port (published apart from the registry's), their own credential.
    server {{
        listen {CONTAINER_METRICS_PORT} ssl;
        server_name _;
        ssl_certificate {CERT_PATH};
        ssl_certificate_key {KEY_PATH};
        ssl_protocols {TLS_PROTOCOLS};
        ssl_ciphers {TLS_CIPHERS};
        limit_conn per_address 16;
        client_max_body_size 1k;
        auth_basic "{METRICS_REALM}";
        auth_basic_user_file {METRICS_HTPASSWD_PATH};
        resolver 127.0.0.11 valid=10s ipv6=off;
        proxy_connect_timeout 2s;
        proxy_read_timeout 10s;
        proxy_set_header Authorization "";
        proxy_set_header Accept-Encoding "";

        location = /metrics/registry {{
            set $metrics_registry {m.registry_debug};
            proxy_pass http://$metrics_registry/metrics;
        }}{token}
        location = /metrics/storage {{
            set $metrics_registry {m.registry_debug};
            proxy_pass http://$metrics_registry/debug/health;
            proxy_intercept_errors on;
            error_page 502 503 504 = @storage_unhealthy;
            proxy_hide_header Content-Type;
            add_header Content-Type "text/plain; version=0.0.4" always;
            sub_filter_types *;
            sub_filter_once on;
            sub_filter "{{}}" "{health} 1\\n";
        }}
        location @storage_unhealthy {{
            default_type "text/plain; version=0.0.4";
            return 200 "{health} 0\\n";
        }}
        location = /metrics/certificate {{
            default_type "text/plain; version=0.0.4";
            alias {CERTIFICATE_METRICS_PATH};
        }}
        location / {{
            return 404;
        }}
    }}
"""


def _health_location(o: NginxOptions) -> str:
    return f"""location = /healthz {{
            access_log off;
            auth_basic off;
            add_header Strict-Transport-Security "{HSTS}" always;
            if ($request_method !~ ^(GET|HEAD)$) {{
                return 405;
            }}
            if ($http_transfer_encoding != "") {{
                return 400;
            }}
            if ($http_content_length !~ "^0?$") {{
                return 400;
            }}
            client_max_body_size 1k;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host "localhost";
            proxy_connect_timeout 1s;
            {_pass(o, "/")}
        }}"""


def render_nginx_conf(options: NginxOptions = NginxOptions()) -> str:
    """The whole ``nginx.conf``.

    Raises ValueError for a server name that is not a DNS name or an IP address of the grammar:
    only validated tokens reach a directive, whatever the caller checked before.
    """
    o = options
    if o.token_upstream and o.auth:
        raise ValueError("token mode: the registry checks tokens; nginx basic auth must be off (auth=False)")
    if o.token_upstream and not re.fullmatch(r"[a-z0-9-]{1,63}:[0-9]{1,5}", o.token_upstream):
        raise ValueError(f"token upstream {o.token_upstream!r} is not name:port")
    token_zone = (
        "    # /token requests that may carry a password (GET with Basic credentials; any POST, as\n"
        "    # the form is not read here) count per client address; bearer-less anonymous GETs do not.\n"
        "    map \"$request_method:$http_authorization\" $token_password_key {\n"
        "        \"~^POST:\" $binary_remote_addr;\n"
        "        \"~*^[A-Z]+:basic \" $binary_remote_addr;\n"
        "        default '';\n"
        "    }\n"
        f"    limit_req_zone $token_password_key zone=token:10m rate={o.token_rate_per_second}r/s;\n"
        f"    limit_req_zone $binary_remote_addr zone=token_any:10m rate={o.token_any_rate_per_second}r/s;\n"
        if o.token_upstream else ""
    )
    for name in o.server_names:
        if not is_dns_name(name) and parse_ip(name) != name:
            raise ValueError(f"server name {name!r} is not a DNS name or an IP address")
    auth = (
        f'auth_basic "{REALM}";\n            auth_basic_user_file {HTPASSWD_PATH};'
        if o.auth
        else "auth_basic off;"
    )
    servers = "\n".join(
        [f"        server {u} max_fails=0;" for u in o.upstreams]
        + [f"        server {u} max_fails=0 backup;" for u in o.backup_upstreams]
    )
    upstream_block = f"upstream registry {{\n{servers}\n    }}"
    if o.resolver is not None:
        if parse_ip(o.resolver) != o.resolver or len(o.upstreams) != 1 or parse_host_port(o.upstreams[0]) is None:
            raise ValueError("a resolver needs an IP address and exactly one upstream HOST:PORT")
        upstream_block = f"resolver {o.resolver} valid=1s ipv6=off;"
    name_char = f"(?:(?!/{_API_PATH_KIND}/).)"
    name_too_long = (
        f"(?:{name_char}{{{MAX_NAME_LENGTH + 1},}}"
        f"|[^/]{{{MAX_NAME_LENGTH - _SINGLE_PREFIX + 1},}}"
        f"|(?=[^/.:]+/)(?!localhost/){name_char}{{{MAX_NAME_LENGTH - _DOMAIN_PREFIX + 1},}})"
    )
    return f"""# Rendered by the private-registry Pulumi program; edits are overwritten.
user {WORKER_USER} {WORKER_GROUP};
worker_processes {o.worker_processes};
pid /tmp/nginx.pid;
# 'crit': nginx writes some client input raw at 'error' (the user name of a failed login);
# requests and their outcome are in the escaped access log.
error_log /dev/stderr crit;

events {{
    worker_connections 4096;
}}

http {{
    log_format registry escape=json '{{"time":"$time_iso8601","remote_addr":"$remote_addr",'
        '"remote_user":"$remote_user","request":"$request","status":$status,'
        '"bytes_sent":$bytes_sent,"request_time":$request_time,"upstream":"$upstream_addr",'
        '"upstream_status":"$upstream_status","user_agent":"$http_user_agent"}}';
    access_log /dev/stdout registry;
    server_tokens off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_header_timeout {o.client_header_timeout_seconds}s;
    client_body_timeout {o.client_body_timeout_seconds}s;
    send_timeout {o.send_timeout_seconds}s;
    lingering_time 10s;
    client_max_body_size 1k;

    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;

    {upstream_block}

    # Failed logins count per client address; a request without credentials (the challenge
    # every client starts with) does not.
    map $http_authorization $failed_auth_key {{
        '' '';
        default $binary_remote_addr;
    }}
    limit_req_zone $failed_auth_key zone=failed_auth:10m rate={o.failed_auth_rate_per_second}r/s;
    limit_req_status 429;
    limit_conn_zone $binary_remote_addr zone=per_address:10m;
{token_zone}    limit_conn_status 429;

    # Send Docker-Distribution-Api-Version exactly once: the registry's own header on proxied
    # responses, ours on responses nginx makes itself (401). 'add_header ... always' alone
    # would duplicate it on proxied responses.
    map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
        '' 'registry/2.0';
    }}

    # Any Host that is not one of the stack's names (and HTTP/1.0 without one).
    server {{
        listen {CONTAINER_HTTPS_PORT} ssl default_server;
        server_name "";
        ssl_certificate {CERT_PATH};
        ssl_certificate_key {KEY_PATH};
        ssl_protocols {TLS_PROTOCOLS};
        ssl_ciphers {TLS_CIPHERS};
        limit_conn per_address {o.max_connections_per_address};
        location / {{
            add_header Strict-Transport-Security "{HSTS}" always;
            return 421;
        }}
    }}

    server {{
        listen {CONTAINER_HTTPS_PORT} ssl;
        server_name {" ".join(url_host(name) for name in o.server_names)};

        ssl_certificate {CERT_PATH};
        ssl_certificate_key {KEY_PATH};
        ssl_protocols {TLS_PROTOCOLS};
        ssl_ciphers {TLS_CIPHERS};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:TLS:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;

        limit_conn per_address {o.max_connections_per_address};
        # Docker sends chunked bodies (no 411).
        chunked_transfer_encoding on;
        error_page 401 @failed_auth;

        # Unauthenticated health for load balancers: proxies the registry's root, so it is
        # healthy only when both nginx and the registry are.
        {_health_location(o)}

        location = /v2 {{
            add_header Strict-Transport-Security "{HSTS}" always;
            return 301 https://$host{_host_suffix(o.public_port)}/v2/;
        }}

        # Longer than the registry can serve (see MAX_NAME_LENGTH): 400 here, not its 500.
        location ~ "^/v2/{name_too_long}/{_API_PATH_KIND}/" {{
            add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
            add_header Strict-Transport-Security "{HSTS}" always;
            default_type application/json;
            return 400 '{{"errors":[{{"code":"NAME_INVALID","message":"repository name too long"}}]}}';
        }}

        # Layers can be gigabytes: no size limit on blob uploads only.
        location ~ "^/v2/.+/blobs/uploads/" {{
            {_proxied(o, auth, "0")}
        }}

        location /v2/ {{
            {_proxied(o, auth, o.max_body_size)}
        }}

        # A failed login: answered no faster than the rate per client address (the queue is as
        # deep as the requests one address may have in progress, so none is refused early);
        # then nginx's own 401 with the challenge auth_basic set.
        location @failed_auth {{
            limit_req zone=failed_auth burst={o.max_connections_per_address};
            add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
            add_header Strict-Transport-Security "{HSTS}" always;
            try_files /nonexistent =401;
        }}

{_token_location(o)}        location / {{
            add_header Strict-Transport-Security "{HSTS}" always;
            return 404;
        }}
    }}

{_metrics_server(o)}
    # Container healthcheck only: bound to the container's loopback, never published.
    server {{
        listen 127.0.0.1:{HEALTH_PORT};
        {_health_location(o)}
        location / {{
            return 404;
        }}
    }}
}}
"""
