#!/usr/bin/env bash
# The addon built with CMake through cmake-js (CMakeLists.txt), beside node-gyp's build/:
#
#   npm run build:cmake      → build-cmake/Release/twinloop.node, then loaded (its backends printed)
#
# Run the package on it with TWINLOOP_BINARY=$PWD/build-cmake/Release/twinloop.node (lib/binding.ts).
# Both builds take their sources from native/sources.json, so they cannot build different files.
# Node's headers (uv.h among them: the addon watches its backend with libuv) are those of
# $npm_config_nodedir when set, else of the running node's own install, else of the node-linux-<arch>
# npm package (scripts/node-dist.sh): cmake-js would otherwise download them from nodejs.org.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ "$(uname -s)" == Linux ]] || { echo "build-cmake.sh: Linux only (macOS: npx cmake-js build; Windows: cmake/mingw-w64.cmake)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "build-cmake.sh: needs cmake (apt-get install cmake)" >&2; exit 1; }

nodedir=${npm_config_nodedir:-}
if [[ -z "$nodedir" ]]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [[ -f "$prefix/include/node/node_api.h" && -f "$prefix/include/node/uv.h" ]]; then
    nodedir=$prefix
  else
    nodedir=$("$root/scripts/node-dist.sh" "$(node -p process.arch)" "$(node -p 'process.versions.node.split(".")[0]')")
  fi
fi
echo "== cmake-js build → build-cmake/ (Node headers from $nodedir/include/node)"
npm_config_nodedir="$nodedir" "$root/node_modules/.bin/cmake-js" build --out build-cmake --parallel "$(nproc)" --log-level warn
node -e '
  const addon = require(process.argv[1]);
  if (!Array.isArray(addon.constants?.backends) || addon.constants.backends.length === 0) throw new Error("the addon lists no backends");
  console.log(`build-cmake/Release/twinloop.node loads: backends ${addon.constants.backends.join(", ")}`);
' "$root/build-cmake/Release/twinloop.node"
