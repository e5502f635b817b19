"""The `access` stage, the first of every mail stack: who may log in to the VM over SSH.

cloud-init plants adminSshKeys at first boot only, so a rotated key would otherwise never reach a running
VM; this stage keeps the admin user's authorized_keys as the stack declares them, plus the stack's deploy
key, which it reads from stdin (it is known only once the stack made it).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.builders.shell_script import PRELUDE, READ_SECRETS, Stage, render_script

#: What the access stage reads on its stdin: the stack's deploy key is known only once the stack made it.
ACCESS_INPUTS = ("DEPLOY_PUBLIC_KEY",)


@dataclass(frozen=True)
class AccessInputs:
    """Who may log in to the VM over SSH: the admin user and the keys the stack declares for it."""

    mail_host: str
    admin_user: str
    admin_keys: tuple[str, ...]  #: adminSshKeys; the deploy key is added on the VM from stdin


def render_access_stage(inputs: AccessInputs) -> str:
    return render_script("access", inputs.mail_host, (*PRELUDE, *READ_SECRETS, "common/access.sh"),
                         ADMIN_USER=inputs.admin_user, ADMIN_KEYS=inputs.admin_keys, SECRETS=ACCESS_INPUTS)


def access_stage(inputs: AccessInputs) -> Stage:
    """The first stage of every mail stack: the admin's authorized_keys, kept as the stack declares them
    (cloud-init plants them at first boot only, so a rotated key would otherwise never reach the VM)."""
    return Stage("access", render_access_stage(inputs), ACCESS_INPUTS)
