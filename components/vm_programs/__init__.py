"""Programs that run on the mail VM, not in the Pulumi program: the stack ships each one's text to the host.

Their contract, which every file here keeps:
- the standard library only, of the Python 3.11 that Debian 12 ships as python3 (the cloud image has it
  for cloud-init; nothing is pip-installed on the VM);
- run as root on the mail VM, by the stage that installs them or by what that stage sets up (a systemd
  timer, `mailctl` over SSH);
- configured by the JSON their stage renders: `backup_tool.py` reads the config.json the backup stage
  writes, `mailcow_api.py` the desired state the configure stage passes it; secrets come from root-only
  files or the environment, never a command line.

A stage carries a program's text on its standard input and its sha256 in the script's header
(components/builders/shell_script.py), so a changed program re-runs the stage. The Pulumi program never
imports them; the tests do, and run them against fakes.
"""

from __future__ import annotations

from importlib import resources


def program_text(name: str) -> str:
    """The text of the program `name` (a file of this package) as the VM writes it back: ending in one newline.

    (The reader on the VM drops trailing newlines, as any `$(...)` does; the stage writes the text with
    one.) Its sha256 is then the file's own, as `sha256sum` on the VM shows it.
    """
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8").rstrip("\n") + "\n"
