"""nginx configuration for the TLS and basic-auth proxy in front of the registry, as text.

The same text runs in the official ``nginx`` image and in the Debian-built stand-in the tests
use: it includes no other file, keeps its pid and temporary files under ``/tmp`` and has no
``user`` directive (workers run as the image's default unprivileged user).
"""

from __future__ import annotations

from dataclasses import dataclass

CONTAINER_HTTPS_PORT = 443
# Plain-HTTP listener bound to the container's loopback, only for the container healthcheck:
# the image's wget may not speak TLS, and this keeps the check independent of certificates.
HEALTH_PORT = 8080
CERT_PATH = "/etc/nginx/tls/server.crt"
KEY_PATH = "/etc/nginx/tls/server.key"
HTPASSWD_PATH = "/etc/nginx/htpasswd"
CONF_PATH = "/etc/nginx/nginx.conf"

# Mozilla "intermediate" policy: TLS 1.2 with forward-secret AEAD suites only; TLS 1.3 suites
# are fixed by OpenSSL and all strong.
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
TLS_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
HSTS = "max-age=63072000"


@dataclass(frozen=True)
class NginxOptions:
    """What varies between deployments (and between benchmark variants)."""

    upstream: str = "registry:5000"
    # Docker's embedded DNS. The registry's address is looked up per request (through a
    # variable), so a replaced or restarted registry container with a new IP is found again.
    # While garbage collection hands reads to a stand-by registry under the same network alias,
    # the name resolves to both; nginx then retries an idempotent request that fails to
    # connect on the other address, so pulls do not fail (see components/docker_exec.py).
    resolver: str = "127.0.0.11"
    resolver_valid_seconds: int = 1
    # The registry is on the same host: a connect that takes longer means it is gone.
    connect_timeout_seconds: int = 1
    server_names: tuple[str, ...] = ("localhost",)
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
    # TCP keepalive on connections to the registry (SO_KEEPALIVE; timing from the kernel's
    # net.ipv4.tcp_keepalive_* in nginx's network namespace): a registry that vanished without
    # closing its connections (a task killed on another node) is noticed instead of waited for.
    upstream_keepalive: bool = False


def render_nginx_conf(options: NginxOptions = NginxOptions()) -> str:
    """The whole ``nginx.conf``."""
    o = options
    auth = (
        f'auth_basic "Registry realm";\n            auth_basic_user_file {HTPASSWD_PATH};'
        if o.auth
        else "auth_basic off;"
    )
    return f"""# Rendered by the private-registry Pulumi program; edits are overwritten.
worker_processes {o.worker_processes};
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log /dev/stdout;
    server_tokens off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;

    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;

    resolver {o.resolver} valid={o.resolver_valid_seconds}s ipv6=off;

    # Send Docker-Distribution-Api-Version exactly once: the registry's own header on proxied
    # responses, ours on responses nginx makes itself (401). 'add_header ... always' alone
    # would duplicate it on proxied responses.
    map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
        '' 'registry/2.0';
    }}

    server {{
        listen {CONTAINER_HTTPS_PORT} ssl default_server;
        server_name {" ".join(o.server_names)};

        ssl_certificate {CERT_PATH};
        ssl_certificate_key {KEY_PATH};
        ssl_protocols {TLS_PROTOCOLS};
        ssl_ciphers {TLS_CIPHERS};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:TLS:10m;
        ssl_session_timeout 1d;
        ssl_session_tickets off;

        # Layers can be gigabytes (no 413) and Docker sends chunked bodies (no 411).
        client_max_body_size 0;
        chunked_transfer_encoding on;

        # Unauthenticated health for load balancers: proxies the registry's root, so it is
        # healthy only when both nginx and the registry are.
        location = /healthz {{
            access_log off;
            auth_basic off;
            add_header Strict-Transport-Security "{HSTS}" always;
            set $registry {o.upstream};
            proxy_pass http://$registry/;
        }}

        location /v2/ {{
            # Docker before 1.6 speaks a protocol this registry does not.
            if ($http_user_agent ~ "^(docker\\/1\\.(3|4|5(?!\\.[0-9]-dev))|Go ).*$") {{
                return 404;
            }}
            {auth}

            add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
            add_header Strict-Transport-Security "{HSTS}" always;

            set $registry {o.upstream};
            proxy_pass http://$registry;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # The registry does no auth of its own; the credentials stop here.
            proxy_set_header Authorization "";

            proxy_request_buffering {"on" if o.request_buffering else "off"};
            client_body_buffer_size {o.client_body_buffer_size};
            proxy_buffering {"on" if o.proxy_buffering else "off"};
            proxy_buffers {o.proxy_buffers};
            proxy_buffer_size {o.proxy_buffer_size};
            proxy_max_temp_file_size 0;
            proxy_connect_timeout {o.connect_timeout_seconds}s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_read_timeout {o.read_timeout_seconds};
            proxy_send_timeout {o.read_timeout_seconds};{chr(10) + "            proxy_socket_keepalive on;" if o.upstream_keepalive else ""}
        }}

        location / {{
            add_header Strict-Transport-Security "{HSTS}" always;
            return 404;
        }}
    }}

    # Container healthcheck only: bound to the container's loopback, never published.
    server {{
        listen 127.0.0.1:{HEALTH_PORT};
        location = /healthz {{
            access_log off;
            set $registry {o.upstream};
            proxy_pass http://$registry/;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""
