"""Registry users: the htpasswd file nginx checks, with stable bcrypt salts."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
import pulumi_random as random

from components.render.htpasswd import SALT_BYTES, bcrypt_salt, render_htpasswd


def resource_slug(user: str) -> str:
    """A stable, readable resource-name part for any user name (which may hold '@', '/', ...)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", user)[:40]
    return f"{readable}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"


@dataclass
class HtpasswdArgs:
    # user -> password (secret Output). Empty: one user, default_user, with a generated password.
    passwords: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    default_user: str = "admin"
    generated_password_length: int = 32
    bcrypt_rounds: int = 5


class Htpasswd(pulumi.ComponentResource):
    """htpasswd content (secret) for the configured users, or a generated one."""

    content: pulumi.Output[str]
    user_names: pulumi.Output[list]
    passwords: pulumi.Output[dict]

    def __init__(self, name: str, args: HtpasswdArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("registry:users:Htpasswd", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        passwords: dict[str, pulumi.Output[str]] = {
            user: pulumi.Output.secret(password) for user, password in args.passwords.items()
        }
        if not passwords:
            generated = random.RandomPassword(
                f"{name}-password-{resource_slug(args.default_user)}",
                length=args.generated_password_length,
                # Letters and digits only: nothing to escape in shells, URLs or YAML.
                special=False,
                opts=child,
            )
            passwords[args.default_user] = pulumi.Output.secret(generated.result)
        # Salt bytes live in state, so an unchanged password hashes to the same line every run.
        salts = {
            user: random.RandomBytes(f"{name}-salt-{resource_slug(user)}", length=SALT_BYTES, opts=child).base64
            for user in passwords
        }
        users = sorted(passwords)
        rounds = args.bcrypt_rounds
        self.content = pulumi.Output.secret(
            pulumi.Output.all(*[passwords[u] for u in users], *[salts[u] for u in users]).apply(
                lambda values: render_htpasswd(
                    {u: (values[i], bcrypt_salt(values[len(users) + i])) for i, u in enumerate(users)}, rounds
                )
            )
        )
        self.user_names = pulumi.Output.from_input(users)
        self.passwords = pulumi.Output.secret(pulumi.Output.all(**passwords))
        self.register_outputs(
            {"content": self.content, "user_names": self.user_names, "passwords": self.passwords}
        )
