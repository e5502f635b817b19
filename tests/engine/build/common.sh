# Shared by the engine build scripts: where built tools are kept, and how one is built at most once.
# Built binaries live outside the clone, keyed by name and version, because CI starts from a fresh clone
# but keeps this machine's caches (Go's module and build caches included).
# shellcheck shell=bash
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
# Flags every engine build shares. The binaries are stripped at link (-s -w), so the compiler is told not to
# write the debug info the linker would throw away: a tenth less CPU on a cold build (measured on 1365 of
# k3s's packages: 393 CPU-s with it, 356 without). -trimpath keeps the machine's paths out of the binaries.
# shellcheck disable=SC2034  # used by the scripts that source this file
GO_BUILD_FLAGS=(-trimpath -gcflags=all=-dwarf=false)
# The machine cache's root as tests/machine_cache.py resolves it; CERES_MAIL_ENGINE_CACHE moves the engine alone.
ENGINE_CACHE="${CERES_MAIL_ENGINE_CACHE:-${CERES_MAIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ceres-mail}/engine}"

# lock_build DIR: holds an exclusive lock on DIR.lock for the rest of the calling script (fd 9), so two runs
# on one machine (a background `make engine` and a test asking for the same tool) build it once: the second
# waits, then finds it built.
lock_build() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1.lock"
  if ! flock -n 9; then
    say "waiting for another build of $(basename "$1")"
    flock 9
  fi
}

# have_built DIR FILE: true when DIR/FILE exists from a finished build (the .complete marker is written
# last, so an interrupted build is redone rather than trusted).
have_built() {
  [ -f "$1/.complete" ] && [ -x "$1/$2" ]
}

# build_into DIR: prints a fresh scratch folder beside DIR for a build that is moved into place at the end.
build_into() {
  mkdir -p "$(dirname "$1")"
  local scratch="$1.partial"
  rm -rf "$scratch"
  mkdir -p "$scratch"
  printf '%s\n' "$scratch"
}

# finish_build SCRATCH DIR: marks the build complete and moves it into place in one rename.
finish_build() {
  touch "$1/.complete"
  rm -rf "$2"
  mv "$1" "$2"
}

# go_fetch ARGS...: `go ARGS`, a step that downloads modules, tried up to 4 times. On a cold build the module
# proxy may drop one of hundreds of connections; what was fetched stays in Go's module cache, so a retry
# resumes. Its standard output is passed on once it succeeded (a failed try's half answer never is).
go_fetch() {
  local try out
  out=$(mktemp)
  for try in 1 2 3 4; do
    if go "$@" >"$out"; then
      cat "$out"
      rm -f "$out"
      return 0
    fi
    [ "$try" = 4 ] && break
    say "go $*: a download failed (try $try of 4); trying again in $((try * 15)) s"
    sleep $((try * 15))
  done
  rm -f "$out"
  return 1
}

# wait_for_turn: before a build's compile step, waits until the builds `make engine` starts first are done
# (all.sh), so that what they compiled is in Go's build cache for this one. Without all.sh it returns at once.
wait_for_turn() {
  if [ -n "${ENGINE_BUILDS_FIRST:-}" ] && ! flock -s -n "$ENGINE_BUILDS_FIRST" true; then
    say "$(basename "$0" .sh): downloaded; compiling once the Pulumi CLI is built"
    flock -s "$ENGINE_BUILDS_FIRST" true
  fi
}

# say MESSAGE: progress on stderr, prefixed so an operator knows which build speaks.
say() {
  printf 'engine: %s\n' "$*" >&2
}

# elapsed_since START: seconds since START (from `date +%s`).
elapsed_since() {
  echo $(( $(date +%s) - $1 ))
}
