#!/usr/bin/env bash
# Build the N-API prebuilds that `npm install twinloop` loads without a compiler:
#
#   scripts/prebuild.sh [x64] [arm64]      (default: this machine's arch)
#     → prebuilds/linux-x64/twinloop.glibc.node, prebuilds/linux-arm64/twinloop.glibc.node, each
#       beside sources.sha256, the hash of the sources it was built from (scripts/prebuilds.mjs:
#       `npm pack` refuses prebuilds that are missing or were built from other sources)
#
# One N-API binary per platform serves every Node.js version from 18 on (NAPI_VERSION=8 in
# binding.gyp), so each arch is built once, with prebuildify --napi --strip, tagged glibc so that
# a musl system (Alpine) does not load it and compiles from source instead.
#
# It builds in a staging copy of binding.gyp + native/, so the repo's own build/ (which the tests
# and colleagues use) is left alone, and with twinloop_bench=0 so that only the addon is built.
# No header download: node-gyp gets --nodedir pointing at the node-linux-<arch> npm package's
# include/node (scripts/node-dist.sh), or $TWINLOOP_NODEDIR when set. linux-arm64 is
# cross-compiled with Debian's g++-aarch64-linux-gnu.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ "$(uname -s)" == Linux ]] || { echo "prebuild.sh builds the Linux prebuilds; other platforms: .github/workflows" >&2; exit 2; }

archs=("$@")
[[ ${#archs[@]} -gt 0 ]] || archs=("$(node -p process.arch)")
host_arch=$(node -p process.arch)
node_major=$(node -p 'process.versions.node.split(".")[0]')

# node-gyp: the one npm puts on PATH inside npm scripts, else npm's bundled copy.
if command -v node-gyp >/dev/null; then
  node_gyp=$(command -v node-gyp)
else
  node_gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
  [[ -f "$node_gyp" ]] || { echo "prebuild.sh: node-gyp not found" >&2; exit 1; }
fi

stage=$(mktemp -d /tmp/twinloop-prebuild.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp package.json binding.gyp "$stage/"
cp -r native "$stage/"
ln -s "$root/node_modules" "$stage/node_modules"   # node-addon-api, prebuildify

for arch in "${archs[@]}"; do
  case "$arch" in x64|arm64) ;; *) echo "prebuild.sh: unsupported arch '$arch'" >&2; exit 2 ;; esac
  env=(npm_config_twinloop_bench=0)
  strip_bin=strip
  if [[ -n "${TWINLOOP_NODEDIR:-}" && "$arch" == "$host_arch" ]]; then
    nodedir=$TWINLOOP_NODEDIR
  else
    nodedir=$("$root/scripts/node-dist.sh" "$arch" "$node_major")
  fi
  if [[ "$arch" != "$host_arch" ]]; then
    [[ "$arch" == arm64 ]] || { echo "prebuild.sh: no cross toolchain for $arch" >&2; exit 2; }
    command -v aarch64-linux-gnu-g++ >/dev/null ||
      { echo "prebuild.sh: needs g++-aarch64-linux-gnu (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
    env+=(CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ AR=aarch64-linux-gnu-ar)
    strip_bin=aarch64-linux-gnu-strip
  fi
  version=$(node -p "require('$nodedir/package.json').version")
  echo "== prebuild linux-$arch (N-API, headers of Node $version from $nodedir)"
  rm -rf "prebuilds/linux-$arch"
  (cd "$stage" && rm -rf build &&
    env "${env[@]}" npm_config_nodedir="$nodedir" PREBUILD_NODE_GYP="$node_gyp" \
      node "$root/node_modules/prebuildify/bin.js" --napi --strip --strip-bin "$strip_bin" \
        --tag-libc --arch "$arch" --target "node@$version" --out "$root" >"$stage/build-$arch.log" 2>&1) ||
    { cat "$stage/build-$arch.log" >&2; echo "prebuild.sh: linux-$arch build failed" >&2; exit 1; }
  built=(prebuilds/linux-$arch/*.node)
  [[ ${#built[@]} -eq 1 && -f "${built[0]}" ]] ||
    { echo "prebuild.sh: expected one .node in prebuilds/linux-$arch, got: ${built[*]}" >&2; exit 1; }
  node "$root/scripts/prebuilds.mjs" stamp "prebuilds/linux-$arch" --root "$stage"
  file "${built[0]}" 2>/dev/null || ls -l "${built[0]}"
done
