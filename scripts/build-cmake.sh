#!/usr/bin/env bash
# The addon built with CMake through cmake-js (CMakeLists.txt), beside node-gyp's build/:
#
#   npm run build:cmake      → build-cmake/Release/twinloop.node, then loaded (its backends printed)
#
# Run the package on it with TWINLOOP_BINARY=$PWD/build-cmake/Release/twinloop.node (lib/binding.ts).
# First it checks that CMakeLists.txt names, for each OS, the native sources binding.gyp names: a
# file missing from one build links there all the same (an addon resolves its symbols when loaded,
# lazily) and fails only when its code is first called.
# Node's headers (uv.h among them: the addon watches its backend with libuv) are those of
# $npm_config_nodedir when set, else of the running node's own install, else of the node-linux-<arch>
# npm package (scripts/node-dist.sh): cmake-js would otherwise download them from nodejs.org.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ "$(uname -s)" == Linux ]] || { echo "build-cmake.sh: Linux only (macOS: npx cmake-js build; Windows: cmake/mingw-w64.cmake)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "build-cmake.sh: needs cmake (apt-get install cmake)" >&2; exit 1; }

python3 - <<'EOF'
import ast, re, sys
gyp = ast.literal_eval(re.sub(r'#[^\n]*', '', open('binding.gyp').read()))
target = next(t for t in gyp['targets'] if t['target_name'] == 'twinloop')
common = [s for s in target['sources'] if not s.startswith('<')]
backends = {condition: values['backend_sources'] for condition, values in gyp['variables']['conditions']}
win = next(values for condition, values in target['conditions'] if condition == "OS=='win'")
wanted = {
    'Linux': set(common + backends["OS=='linux'"]),
    'macOS, FreeBSD': set(common + backends["OS=='mac' or OS=='freebsd'"]),
    'Windows': (set(common) - set(win['sources!'])) | set(win['sources']) | set(backends["OS=='win'"]),
}
cmake = open('CMakeLists.txt').read()
shared = re.search(r'set\(sources([^)]*)\)', cmake).group(1).split()
blocks = {'Windows': r'if\(WIN32\)', 'Linux': r'elseif\(CMAKE_SYSTEM_NAME STREQUAL "Linux"\)', 'macOS, FreeBSD': r'else\(\)[^\n]*'}
failed = False
for os_name, guard in blocks.items():
    listed = re.search(guard + r'\s*list\(APPEND sources([^)]*)\)', cmake)
    have = set(shared + (listed.group(1).split() if listed else []))
    if have != wanted[os_name]:
        failed = True
        print(f'build-cmake.sh: CMakeLists.txt and binding.gyp build different sources on {os_name}: '
              f'only in binding.gyp {sorted(wanted[os_name] - have)}, only in CMakeLists.txt {sorted(have - wanted[os_name])}',
              file=sys.stderr)
sys.exit(1 if failed else 0)
EOF

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
  if (!Array.isArray(addon.backends) || addon.backends.length === 0) throw new Error("the addon lists no backends");
  console.log(`build-cmake/Release/twinloop.node loads: backends ${addon.backends.join(", ")}`);
' "$root/build-cmake/Release/twinloop.node"
