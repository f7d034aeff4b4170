#!/usr/bin/env bash
# The CMake build path, end to end: cmake-js builds the addon from CMakeLists.txt into
# build-cmake/ (scripts/build-cmake.sh; node-gyp's build/ is left as it is), then the package runs
# on that binary (TWINLOOP_BINARY): scripts/smoke.mjs's one-second echo on every backend it opens.
# Needs cmake and a built dist/. Closes with `N passed, N failed`.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/build-cmake.sh || { echo "0 passed, 1 failed"; exit 1; }
export TWINLOOP_BINARY=$root/build-cmake/Release/twinloop.node
passed=0 failed=0
backends=$(node -p "require('./dist/index.cjs').availableBackends().join(' ')") || backends=
[[ -n "$backends" ]] || { echo "FAIL the cmake-built addon opens no backend"; failed=1; }
for backend in $backends; do
  if node scripts/smoke.mjs --backend "$backend" --expect-backend "$backend" --expect-binding /build-cmake/Release/ | sed 's/^/    | /'; [[ ${PIPESTATUS[0]} -eq 0 ]]; then
    passed=$((passed + 1)); echo "ok   the cmake-built addon echoes on $backend"
  else
    failed=$((failed + 1)); echo "FAIL the cmake-built addon on $backend"
  fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
