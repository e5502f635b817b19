# shellcheck shell=bash
# lib/strict.sh: first after the header in every stage. Stops the stage on any failed command, unset
# variable or failed pipe; files are created readable (umask 022); apt and dpkg never ask.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive
