# shellcheck shell=bash
# lib/secrets.sh: reads the stage's standard input, one `NAME=base64` line per value as
# shell_script.render_secrets_stdin writes it, into the variables the header's SECRETS array names; a name
# not expected, or one missing, stops the stage. Never echoes a value.
# From the header: SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
# Secrets: NAME=base64 lines on stdin, decoded into variables, never echoed.
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%%=*}
  case " ${SECRETS[*]} " in
    *" $name "*) printf -v "$name" '%s' "$(printf '%s' "${line#*=}" | base64 -d)" ;;
    *) echo "unknown secret on stdin: $name" >&2; exit 2 ;;
  esac
done
for name in "${SECRETS[@]}"; do
  [ -n "${!name:-}" ] || { echo "missing on stdin: $name" >&2; exit 2; }
done
