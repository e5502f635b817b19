#!/usr/bin/env bash
# Builds the Pulumi CLI from its Go module at a pinned version, once per machine (see common.sh).
# Prints the path of the binary. The release archives are not reachable here; the module proxy is.
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
PULUMI_VERSION=v3.274.1
# pkg/v3 imports github.com/atotto/clipboard, whose module is not served; Pulumi's own fork is.
CLIPBOARD_FORK=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e

out="$ENGINE_CACHE/pulumi-$PULUMI_VERSION"
lock_build "$out"
if ! have_built "$out" bin/pulumi; then
  start=$(date +%s)
  say "building the Pulumi CLI $PULUMI_VERSION from Go modules (cold: about 4 min on 2 cores)"
  scratch=$(build_into "$out")
  mkdir -p "$scratch/src" "$scratch/bin"
  cd "$scratch/src"
  cat > go.mod <<MOD
module ceresmail/enginebuild/pulumi

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_VERSION
)

replace github.com/atotto/clipboard => ${CLIPBOARD_FORK/@/ }
MOD
  printf '//go:build tools\n\npackage enginebuild\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' > tools.go
  GOFLAGS=-mod=mod go_fetch mod tidy >&2
  # Without the version stamp `pulumi version` prints an empty line and plugins cannot check it.
  GOFLAGS=-mod=mod go build "${GO_BUILD_FLAGS[@]}" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
    -o "$scratch/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi >&2
  rm -rf "$scratch/src"
  finish_build "$scratch" "$out"
  say "Pulumi CLI built in $(elapsed_since "$start") s"
fi
printf '%s\n' "$out/bin/pulumi"
