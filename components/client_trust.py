"""Client trust: install the registry's CA in a host's trust stores, locally or over SSH."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_command as command

from components.render.trust import render_install_script, render_remove_script, with_sudo
from components.settings import TrustTarget


@dataclass
class ClientTrustArgs:
    target: TrustTarget
    address: str
    ca_cert_pem: pulumi.Input[str]


class ClientTrust(pulumi.ComponentResource):
    """One target host. Re-running the install replaces the previous CA; delete removes exactly
    the files the install added (the scripts keep a manifest on the host)."""

    installed: pulumi.Output[str]

    def __init__(self, name: str, args: ClientTrustArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:client_trust:ClientTrust", name, None, opts)
        target = args.target
        install = pulumi.Output.from_input(args.ca_cert_pem).apply(
            lambda pem: with_sudo(render_install_script(args.address, pem, target.kinds), target.sudo)
        )
        remove = with_sudo(render_remove_script(args.address), target.sudo)
        child = pulumi.ResourceOptions(parent=self)
        if target.is_local:
            cmd = command.local.Command(
                f"{name}-install", create=install, update=install, delete=remove, opts=child
            )
        else:
            connection = command.remote.ConnectionArgs(
                host=target.host,
                port=target.port,
                user=target.user,
                private_key=(
                    pulumi.Output.secret(target.private_key.get_secret_value()) if target.private_key else None
                ),
                password=pulumi.Output.secret(target.password.get_secret_value()) if target.password else None,
            )
            cmd = command.remote.Command(
                f"{name}-install",
                connection=connection,
                create=install,
                update=install,
                delete=remove,
                opts=child,
            )
        self.installed = cmd.stdout
        self.register_outputs({"installed": self.installed})
