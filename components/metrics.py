"""Metrics: what a team asks first after "does it work": is it healthy, and what does it serve.

With ``metrics.enabled`` the stack's nginx serves Prometheus endpoints on a port of their own
(``metrics.port``, published apart from the registry's), over TLS with the stack's certificate,
behind a credential of their own (``metrics.username`` and a generated password, exported as the
secret ``metricsPassword``): the registry's own metrics, its storage health, the served
certificate's expiry and, in token mode, the token service's counters. See
components/render/nginx.py (``_metrics_server``) for the endpoints and monitoring/ for the alert
rules that read them. The registry's debug listener, which serves its metrics and health, then
listens on the stack's private network (only the stack's own containers join it), not only on
the container's loopback.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Optional

import pulumi
from pydantic import Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic.dataclasses import dataclass as settings_dataclass

from components import grammar
from components.render.nginx import MetricsRoutes, render_certificate_metrics
from components.render.registry_config import DEBUG_PORT, registry_name
from components.render.token_service import TOKEN_ALIAS, TOKEN_PORT
from components.settings_scale import _CONFIG
from components.users import Htpasswd, HtpasswdArgs

METRICS_PATHS = ("/metrics/registry", "/metrics/storage", "/metrics/certificate")
TOKEN_METRICS_PATH = "/metrics/token"


@settings_dataclass(config=_CONFIG)
class MetricsSettings:
    """Prometheus endpoints on their own port behind their own credential (config: metrics)."""

    enabled: StrictBool = False
    # The Docker host's port for the metrics listener (on the stack's bindAddress).
    port: StrictInt = Field(default=9443, ge=1, le=65535)
    username: StrictStr = "metrics"

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not grammar.is_user_name(value) or value.startswith("@"):
            raise ValueError(
                "must be a user name: ASCII letters, digits, '_', '.', '+', '-' (and '@' after the first "
                "character), 1 to 64 characters"
            )
        return value


def metrics_paths(token_mode: bool) -> tuple[str, ...]:
    """Every endpoint the metrics listener serves for a stack in this auth mode."""
    return METRICS_PATHS + ((TOKEN_METRICS_PATH,) if token_mode else ())


def routes(prefix: str, token_mode: bool) -> MetricsRoutes:
    """Where nginx finds the registry's debug listener and the token service on the network."""
    return MetricsRoutes(registry_debug=f"{registry_name(prefix)}:{DEBUG_PORT}",
                         token=f"{TOKEN_ALIAS}:{TOKEN_PORT}" if token_mode else None)


def certificate_gauges(expiry: str, renew_before_hours: int) -> str:
    """The served certificate's gauges from its RFC 3339 end of validity (see
    :func:`components.render.nginx.render_certificate_metrics`)."""
    end = datetime.datetime.fromisoformat(expiry.replace("Z", "+00:00"))
    return render_certificate_metrics(int(end.timestamp()), renew_before_hours * 3600)


@dataclass
class MetricsArgs:
    settings: MetricsSettings
    # The served certificate's end of validity (ServerCertificate.expiry) and renewal window.
    certificate_expiry: pulumi.Input[str]
    renew_before_hours: int
    bcrypt_rounds: int = 5


class Metrics(pulumi.ComponentResource):
    """The metrics user (generated password, its own htpasswd) and the certificate gauges."""

    username: pulumi.Output[str]
    password: pulumi.Output[str]
    htpasswd: pulumi.Output[str]
    certificate_gauges: pulumi.Output[str]

    def __init__(self, name: str, args: MetricsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:metrics:Metrics", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        user = args.settings.username
        users = Htpasswd(f"{name}-users", HtpasswdArgs(default_user=user, bcrypt_rounds=args.bcrypt_rounds),
                         opts=child)
        self.username = pulumi.Output.from_input(user)
        self.password = pulumi.Output.secret(users.passwords.apply(lambda passwords: passwords[user]))
        self.htpasswd = users.content
        self.certificate_gauges = pulumi.Output.from_input(args.certificate_expiry).apply(
            lambda expiry: certificate_gauges(expiry, args.renew_before_hours))
        self.register_outputs({"username": self.username, "password": self.password, "htpasswd": self.htpasswd,
                               "certificate_gauges": self.certificate_gauges})
