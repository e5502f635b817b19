#!/usr/bin/env bash
# Builds a k3s server (API server only: no agent, no containerd) from Go modules, once per machine (see
# common.sh). Prints the path of the binary; a `kubectl` link beside it runs k3s's embedded kubectl.
#
# The proxy resolves the release tag v1.31.0+k3s1 to a pseudo-version of its commit (asking for the
# pseudo-version by name is refused, so the tag is what is asked for), and the checksum database has no
# entry for it. k3s's own go.mod is reused under another module name (all its replaces
# point to published modules), except inet.af/tcpproxy, which is only served under its GitHub path.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
K3S_RELEASE=v1.31.0+k3s1
K3S_MODULE_VERSION=v1.31.1-0.20240829224721-34be6d96d17d
K3S_COMMIT=34be6d96
TCPPROXY_FORK=github.com/inetaf/tcpproxy@v0.0.0-20260515195445-c159a6051109

out="$ENGINE_CACHE/k3s-$K3S_RELEASE"
lock_build "$out"
if ! have_built "$out" k3s; then
  start=$(date +%s)
  say "building k3s $K3S_RELEASE from Go modules (cold: about 10-20 min on 2 cores)"
  export CGO_ENABLED=1 GOFLAGS=-mod=mod GONOSUMDB=github.com/k3s-io,github.com/inetaf
  module_dir=$(cd /tmp && go_fetch mod download -json "github.com/k3s-io/k3s@$K3S_RELEASE" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  scratch=$(build_into "$out")
  mkdir -p "$scratch/src"
  cd "$scratch/src"
  sed 's#^module github.com/k3s-io/k3s$#module ceresmail/enginebuild/k3s#' "$module_dir/go.mod" > go.mod
  cp "$module_dir/go.sum" go.sum
  chmod u+w go.mod go.sum
  go mod edit -require "github.com/k3s-io/k3s@$K3S_MODULE_VERSION" \
    -replace "inet.af/tcpproxy=$TCPPROXY_FORK"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/k3s-io/k3s/cmd/server"\n' > tools.go
  go_fetch mod download >&2
  # k3s refuses to start unless UpstreamGolang names the Go it was built with.
  ldflags="-s -w -X github.com/k3s-io/k3s/pkg/version.UpstreamGolang=$(go env GOVERSION)"
  ldflags+=" -X github.com/k3s-io/k3s/pkg/version.Version=$K3S_RELEASE"
  ldflags+=" -X github.com/k3s-io/k3s/pkg/version.GitCommit=$K3S_COMMIT"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$K3S_RELEASE -X $package.gitMajor=1 -X $package.gitMinor=31"
    ldflags+=" -X $package.gitTreeState=clean"
  done
  # No 'ctrd' tag: containerd is left out. 'libsqlite3' links Debian's libsqlite3 (libsqlite3-dev) for kine.
  wait_for_turn
  go build "${GO_BUILD_FLAGS[@]}" -tags "netcgo osusergo providerless urfave_cli_no_docs libsqlite3" \
    -ldflags "$ldflags" -o "$scratch/k3s" github.com/k3s-io/k3s/cmd/server >&2
  ln -s k3s "$scratch/kubectl"
  cd "$scratch"
  rm -rf "$scratch/src"
  finish_build "$scratch" "$out"
  say "k3s built in $(elapsed_since "$start") s"
fi
printf '%s\n' "$out/k3s"
