#!/usr/bin/env bash
# `make engine`: the Pulumi CLI, the real kubernetes provider and k3s, each built once per machine and kept
# outside the clone (see common.sh). The three start side by side, so their module downloads overlap, but
# the provider and k3s compile only once the CLI is built: Go's build cache then hands them the packages
# they have in common with it (the standard library above all) instead of three builds compiling them at
# once, and the CLI, which most engine tests need alone, is ready first. A line every minute says which
# builds are still going, since a cold build is silent for many minutes.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
command -v go >/dev/null || { say "Go is needed to build the test engine (Go 1.24 or newer on PATH)"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
start=$(date +%s)
declare -A pids
# The CLI's build holds this lock (fd 8, inherited) for as long as it runs; the others wait on it before
# compiling (wait_for_turn in common.sh).
export ENGINE_BUILDS_FIRST="$logs/first.lock"
exec 8>"$ENGINE_BUILDS_FIRST"
flock 8
bash "$here/pulumi-cli.sh" >"$logs/pulumi-cli.out" 2>"$logs/pulumi-cli.log" &
pids[pulumi-cli]=$!
exec 8>&-
for script in kubernetes-provider k3s; do
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
