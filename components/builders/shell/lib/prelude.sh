# shellcheck shell=bash
# lib/prelude.sh: after lib/strict.sh in the stages that write files. Defines put_file (writes a file only
# when its content or mode differs) and the pending marker that makes a stage interrupted between writing
# and applying apply its changes on the next run. Sets for the stage: STATE_DIR, PENDING, changed.
# From the header: STAGE.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# `cmd | put_file …` must run put_file in this shell, or what it sets (changed=1) would be lost
shopt -s lastpipe

# put_file PATH MODE OWNER:GROUP < content: write only when it differs, so a re-run restarts nothing.
# A written file is applied (reload/restart) at the end of the stage; until then a marker records that
# it is pending, so a run interrupted in between still applies it the next time.
# (CERES_MAIL_STATE moves the marker for the tests; sudo's env_reset keeps it out of a real run)
STATE_DIR=${CERES_MAIL_STATE:-/var/lib/ceres-mail}
PENDING=$STATE_DIR/$STAGE.pending
install -d -m 0755 "$STATE_DIR"
# shellcheck disable=SC2034  # `changed` is read by the stages that restart services
changed=0
if [ -e "$PENDING" ]; then changed=1; fi
# shellcheck disable=SC2034  # (its `changed=1` likewise)
put_file() {
  local path=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path" && [ "$(stat -c '%a %U:%G' "$path")" = "${mode#0} $owner" ]; then
    rm -f "$tmp"
    return 0
  fi
  touch "$PENDING"
  install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$path"
  rm -f "$tmp"
  changed=1
  echo "updated $path"
}
