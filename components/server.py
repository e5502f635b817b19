"""MailServer: the mail stack installed on the VM over SSH (pulumi-command), native or mailcow.

Remote commands on one pinned connection, in order: wait for cloud-init, the `access` stage (the admin's
SSH keys as declared, so a rotated adminSshKeys reaches a running VM), then the install stages of the
mail stack chosen (components/builders/mail_stacks.py: native or mailcow). Each stage is
its own command, so a change to one stage's script re-runs that stage only (a command re-runs when its
`create` text changes, and the text is the rendered script). The connection trusts only the host key the
stack generated and planted through cloud-init. Secrets reach the VM on a stage's standard input, never
in a command line; the scripts never print them, so the commands' output may be logged.

Both stacks give the same outputs (the mailbox password, once the mailbox exists), so DNS, CERES,
Keycloak, the policies and `mailctl verify` do not know which one runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_command as command
import pulumi_random as random

from components.builders.cloud_init import render_wait_for_cloud_init
from components.builders.mail_stacks import ServerInputs
from components.builders.shell_script import Stage, render_install_command, render_secrets_stdin


@dataclass(frozen=True)
class MailServerArgs:
    """What the install step needs."""

    server: ServerInputs  #: the mail stack and the features' stages, the SSH user, protection
    vm: pulumi.Resource  #: the VM itself: a replaced VM is a new, empty host, so every command is replaced with it
    #: host name -> the DNS records that make it resolve: a stage that asks for a certificate waits for them
    address_records: Mapping[str, Sequence[pulumi.Resource]]
    ssh_host: pulumi.Input[str]  #: the VM's address, an Output of the VM (data edge)
    ssh_private_key: pulumi.Input[str]  #: secret: the stack's deploy key
    host_public_key: pulumi.Input[str]  #: the pinned host key, OpenSSH format
    mailbox_password: pulumi.Input[str]  #: secret: the no-reply mailbox password (also among `secrets`)
    #: what the stages read on stdin, by name: the platform's (the deploy key, the mailbox password, the DKIM
    #: key) and every feature's (components/features); the mail stack's own are generated here
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    #: resources outside the server a stage may wait for, by name (Stage.after), e.g. the gateway's VPS
    waits_on: Mapping[str, pulumi.Resource] = field(default_factory=dict)


class MailServer(pulumi.ComponentResource):
    """The mail stack on the VM, and the mailbox CERES and Keycloak send as."""

    smtp_password: pulumi.Output[str]

    def __init__(self, name: str, args: MailServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("ceres-mail:mail:Server", name, None, opts)
        mail_stack = args.server.mail_stack
        connection = command.remote.ConnectionArgs(
            host=args.ssh_host,
            user=args.server.ssh_user,
            private_key=args.ssh_private_key,
            host_key=args.host_public_key,
            # first boot installs packages before sshd has our key: retry for ~10 minutes
            dial_error_limit=40,
            per_dial_timeout=15,
        )

        # First boot must be over (users, keys, packages) before anything is installed
        previous = command.remote.Command(
            f"{name}-wait-cloud-init",
            connection=connection,
            create=render_wait_for_cloud_init(),
            opts=pulumi.ResourceOptions(parent=self, replace_with=[args.vm]),
        )

        # The secrets stages may read: the platform's and its features', and those the stack generates for
        # itself (mailcow's, Roundcube's)
        available = dict(args.secrets)
        for key, secret in mail_stack.generated_secrets.items():
            available[key] = random.RandomPassword(
                f"{name}-{mail_stack.name}-{secret.label}",
                length=secret.length,
                special=False,
                opts=pulumi.ResourceOptions(parent=self, protect=args.server.protect),
            ).result

        # The install stages, one after the other; the secrets a stage needs go to its stdin only, and so do
        # the files it needs on the host (its script carries their sha256, so a changed file re-runs it)
        for stage in args.server.stages():
            previous = self._stage_command(name, stage, connection, available, previous, args)
        self.install = previous
        # then what nothing waits for (the backups): after the install, off the path to CERES and Keycloak
        for stage in args.server.after_install():
            previous = self._stage_command(name, stage, connection, available, previous, args)

        # The mailbox exists once the mail stage ran: this Output carries that edge to CERES and Keycloak.
        self.smtp_password = pulumi.Output.secret(
            pulumi.Output.all(self.install.stdout, args.mailbox_password).apply(lambda values: values[1])
        )
        self.register_outputs({"smtp_password": self.smtp_password})

    def _stage_command(self, name: str, stage: Stage, connection: command.remote.ConnectionArgs,
                       available: Mapping[str, pulumi.Input[str]], previous: pulumi.Resource,
                       args: MailServerArgs) -> command.remote.Command:
        """The remote command `<name>-install-<stage>`, after `previous`, its secrets and files on stdin."""
        stdin = (
            pulumi.Output.secret(
                pulumi.Output.all(*(_read(available, stage, n) for n in stage.secrets)).apply(
                    lambda values, names=stage.secrets, files=stage.files: render_secrets_stdin(
                        {**dict(zip(names, values)), **dict(files)}
                    )
                )
            )
            if stage.secrets or stage.files
            else None
        )
        return command.remote.Command(
            f"{name}-install-{stage.name}",
            connection=connection,
            create=render_install_command(stage.script, stage.name),
            stdin=stdin,
            logging=command.remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                # the ACME server looks up every name it certifies: those records first (DNS never waits for the VM);
                # the VM's end of the gateway dials the VPS's, which must be installed first
                depends_on=[previous, *(r for host in stage.certifies for r in args.address_records.get(host, ())),
                            *(_waited_on(args, stage, name) for name in stage.after)],
                replace_with=[args.vm],
            ),
        )


def _read(available: Mapping[str, pulumi.Input[str]], stage: Stage, name: str) -> pulumi.Input[str]:
    """The secret `stage` reads as `name`: one that no feature brings is a program error, said here rather
    than as an empty line on the stage's stdin."""
    if name not in available:
        raise RuntimeError(f"stage {stage.name} reads the secret {name}, which nothing declares "
                           f"(declared: {', '.join(sorted(available))})")
    return available[name]


def _waited_on(args: MailServerArgs, stage: Stage, name: str) -> pulumi.Resource:
    """What `stage` names in its `after`: a stage that waits for something the platform did not make is a
    program error, said here rather than as an edge silently missing."""
    if name not in args.waits_on:
        raise RuntimeError(f"stage {stage.name} waits for {name!r}, which the platform does not declare "
                           f"(it declares: {', '.join(sorted(args.waits_on)) or 'nothing'})")
    return args.waits_on[name]
