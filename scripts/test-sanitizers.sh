#!/usr/bin/env bash
# Builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy of the
# native sources and runs the whole test suite against it. Any report fails the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cp -r "$root/package.json" "$root/binding.gyp" "$root/native" "$work/"
ln -s "$root/node_modules" "$work/node_modules"

sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# Without bench/ in the copy, binding.gyp builds the addon alone.
(cd "$work" && CXXFLAGS="$sanitize" LDFLAGS="$sanitize" npm run build:native >"$work/build.log" 2>&1) || {
  cat "$work/build.log"
  exit 1
}

# Node itself is not instrumented, so the ASan runtime is preloaded; V8's own allocations at exit
# are not ours to judge, hence no leak check (the fd-count tests cover descriptor leaks).
export LD_PRELOAD="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TWINLOOP_BINARY="$work/build/Release/twinloop.node"
cd "$root"
npx vitest run
