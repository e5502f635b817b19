"""Stands in for pulumi-command: remote.Command.

It checks the connection the real provider would dial (host, user, deploy key, pinned host key) and
records each run of the command in the world: each run appends the command's URN to the world's
`runs.log`, so a test sees that a changed script re-ran its stage and that an unchanged one did not.

In the engine layer it does not dial: that layer proves what the engine does with the commands (order,
re-runs, replacements, secrets). With a test internet behind it (cloud.py) the command really runs over
SSH with the declared connection (deploy key, only the pinned host key trusted, the dial retries) and
its standard input, and a command that exits non-zero fails the resource as the real provider does.
"""

from __future__ import annotations

from tests.engine.standins import cloud
from tests.engine.standins.model import Context, Kind, StandIn, StandInError

REQUIRED_CONNECTION = ("host", "user", "privateKey", "hostKey")
RUN_LOG = "runs.log"


def _run(inputs: dict, context: Context) -> dict:
    connection = inputs.get("connection") or {}
    missing = [name for name in REQUIRED_CONNECTION if not connection.get(name)]
    if missing:
        raise StandInError(f"{context.urn}: the connection has no {', '.join(missing)}")
    context.world.root.mkdir(parents=True, exist_ok=True)
    with (context.world.root / RUN_LOG).open("a") as log:
        log.write(context.urn + "\n")
    if not cloud.backed():
        return {"stdout": "", "stderr": ""}
    ran = cloud.call("ssh.run", connection=connection, command=inputs["create"], stdin=inputs.get("stdin"),
                     name=context.urn.rsplit("::", 1)[-1])
    if ran["exit"] != 0:
        # as pulumi-command reports a failed command: its exit status, then what it printed on both streams
        printed = "\n".join(part for part in (ran["stdout"][-2000:], ran["stderr"][-2000:]) if part.strip())
        raise StandInError(f"Process exited with status {ran['exit']}: {printed}")
    return {"stdout": ran["stdout"], "stderr": ran["stderr"]}


STANDIN = StandIn(
    name="command",
    kinds={
        "command:remote:Command": Kind(
            token="command:remote:Command",
            # a changed trigger replaces the command (and so runs it again); any other change updates it,
            # which runs `create` again when there is no `update` command
            replace_on=("triggers",),
            compute=_run,
            recompute=_run,
            computed=("stdout", "stderr"),
            recomputed=("stdout", "stderr"),
        ),
    },
)
