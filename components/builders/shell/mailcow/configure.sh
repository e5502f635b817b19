# shellcheck shell=bash
# mailcow/configure.sh: the mailcow stack's `configure` stage: domains, the no-reply mailbox, aliases, the
# stack's DKIM key and MTA-STS, through mailcow's API, by mailcow_api.py. Rendered after the header,
# lib/strict.sh and lib/secrets.sh, which reads API_KEY, DKIM_PRIVATE_KEY, MAILBOX_PASSWORD and the text of
# mailcow_api.py (API_PROGRAM: not a secret, it travels on stdin with them as a file rather than as an
# argument); the header carries that text's sha256, so a changed program changes this script and re-runs it.
# From the header: STAGE, DESIRED, API_PROGRAM_SHA256, SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: mailcow's API"
# run mailcow_api.py from a file, and only the text this script was rendered with
program=$(mktemp --suffix=.py)
trap 'rm -f "$program"' EXIT
printf '%s\n' "$API_PROGRAM" >"$program"
if [ "$(sha256sum <"$program" | cut -d' ' -f1)" != "$API_PROGRAM_SHA256" ]; then
  echo "mailcow_api.py on stdin is not the one this stage was rendered with (sha256 $API_PROGRAM_SHA256)" >&2
  exit 2
fi
# shellcheck disable=SC2154  # set by the secrets reader
dkim_public=$(printf '%s\n' "$DKIM_PRIVATE_KEY" | openssl pkey -pubout | sed '1d;$d' | tr -d '\n')
# the secrets reach the program in its environment, not its command line
MAILCOW_API_KEY=$API_KEY MAILBOX_PASSWORD=$MAILBOX_PASSWORD DKIM_PRIVATE_KEY=$DKIM_PRIVATE_KEY \
  DKIM_PUBLIC_KEY=$dkim_public python3 "$program" "$DESIRED"
