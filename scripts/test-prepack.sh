#!/usr/bin/env bash
# `npm pack` never makes a tarball that needs a compiler where the README promises none
# (package.json's prepack: scripts/prebuilds.mjs check):
#   - here, with the prebuilds scripts/prebuild.sh x64 arm64 made, it packs both;
#   - in a copy of the tree without prebuilds/, or whose native sources changed since they were
#     built, it fails and says to run npm run build:prebuilds;
#   - packed as a git dependency (npm_command=install), it lets the source install go ahead.
# Closes with `N passed, N failed`.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
passed=0 failed=0
check() {   # check NAME CONDITION-STATUS [DETAIL]
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); echo "ok   $1"
  else failed=$((failed + 1)); echo "FAIL $1${3:+ — $3}"; fi
}

# Its file list goes to npm's notices (--json would mix with the output of `prepare`).
out=$(npm pack --dry-run 2>&1)
status=$?
[[ $status -eq 0 && "$out" == *prebuilds/linux-x64/*.node* && "$out" == *prebuilds/linux-arm64/*.node* ]]
check "npm pack packs the linux-x64 and linux-arm64 prebuilds" $? "exit $status"

stage=$(mktemp -d /tmp/twinloop-prepack.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp package.json binding.gyp "$stage/"
cp -r native "$stage/"
mkdir "$stage/scripts" && cp scripts/prebuilds.mjs "$stage/scripts/"

out=$(cd "$stage" && npm pack --dry-run 2>&1)
status=$?
[[ $status -ne 0 && "$out" == *"npm run build:prebuilds"* ]]
check "without prebuilds/, npm pack fails and says how to build them" $? "exit $status"

out=$(cd "$stage" && npm_command=install node scripts/prebuilds.mjs check 2>&1)
check "packed as a git dependency, the check lets the source install go ahead" $? "$out"

cp -r prebuilds "$stage/"
out=$(cd "$stage" && npm_command=pack node scripts/prebuilds.mjs check 2>&1)
check "the prebuilds pass the check while the sources are those they were built from" $? "$out"

echo "// changed after the prebuilds were made" >>"$stage/native/core/backend.h"
out=$(cd "$stage" && npm pack --dry-run 2>&1)
status=$?
[[ $status -ne 0 && "$out" == *"built from other sources"* && "$out" == *"npm run build:prebuilds"* ]]
check "once a native source changes, npm pack fails until the prebuilds are rebuilt" $? "exit $status"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
