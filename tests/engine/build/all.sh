#!/usr/bin/env bash
# `make engine`: the Pulumi CLI, the real kubernetes provider and k3s, each built once per machine and kept
# outside the clone (see common.sh). The three builds run side by side; a line every minute says which are
# still going, since a cold build is silent for many minutes.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
command -v go >/dev/null || { say "Go is needed to build the test engine (Go 1.24 or newer on PATH)"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)
declare -A pids
for script in pulumi-cli kubernetes-provider k3s; do
  bash "$here/$script.sh" >"$logs/$script.out" 2>"$logs/$script.log" &
  pids[$script]=$!
done
failed=()
while [ ${#pids[@]} -gt 0 ]; do
  for script in "${!pids[@]}"; do
    if ! kill -0 "${pids[$script]}" 2>/dev/null; then
      if wait "${pids[$script]}"; then
        say "ready: $(cat "$logs/$script.out")"
      else
        failed+=("$script")
        say "$script failed; its last lines:"
        tail -n 20 "$logs/$script.log" >&2
      fi
      unset "pids[$script]"
    fi
  done
  if [ ${#pids[@]} -gt 0 ]; then
    waited=0
    while [ $waited -lt 60 ]; do
      sleep 1
      waited=$((waited + 1))
      for script in "${!pids[@]}"; do kill -0 "${pids[$script]}" 2>/dev/null || break 2; done
    done
    [ $waited -ge 60 ] && say "still building after $(elapsed_since "$start") s: ${!pids[*]}"
  fi
done
[ ${#failed[@]} -eq 0 ] || { say "failed: ${failed[*]}"; exit 1; }
say "engine ready in $(elapsed_since "$start") s"
