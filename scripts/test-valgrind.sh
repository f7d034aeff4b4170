#!/usr/bin/env bash
# Runs a short echo on every backend (scripts/valgrind-echo.mjs) under valgrind memcheck against
# the built addon (build/Release/twinloop.node, or TWINLOOP_BINARY): invalid reads and writes,
# uses of uninitialised memory, bad frees and definite leaks fail the run.
#
# Node 20 and V8 run clean under memcheck here (valgrind 3.19), so scripts/valgrind-node.supp holds
# no suppression yet; if another Node version reports errors of its own, add the narrowest one
# there. The report lists the errors whose stack runs through twinloop.node in full and only
# counts the others, so that ours are never lost among Node's.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -f dist/index.js ] || npx tsup --silent

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
# --smc-check: V8 writes and then runs machine code on the same pages (the default, stack-only
# check is enough for Node today; all-non-file is the safe choice for a JIT).
valgrind --tool=memcheck --error-exitcode=1 --smc-check=all-non-file \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --suppressions=scripts/valgrind-node.supp --num-callers=40 \
  --xml=yes --xml-file="$work/memcheck.xml" --log-file="$work/memcheck.log" \
  node scripts/valgrind-echo.mjs "$@" || status=$?

node - "$work/memcheck.xml" <<'JS'
const xml = require('node:fs').readFileSync(process.argv[2], 'utf8');
const errors = xml.match(/<error>[\s\S]*?<\/error>/g) ?? [];
const unescape = (text) => text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
const field = (text, tag) => unescape(text.match(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`))?.[1]?.trim() ?? '');
const ours = errors.filter((error) => error.includes('twinloop.node'));
for (const error of ours) {
  console.log(`\n${field(error, 'kind')}: ${field(error, 'text') || field(error, 'what')}`);
  const frames = error.match(/<frame>[\s\S]*?<\/frame>/g) ?? [];
  const lastOurs = frames.findLastIndex((frame) => frame.includes('twinloop.node'));
  for (const frame of frames.slice(0, lastOurs + 3)) {  // our frames and the two that called in
    const where = field(frame, 'file') ? `${field(frame, 'file')}:${field(frame, 'line')}` : field(frame, 'obj');
    console.log(`   ${field(frame, 'fn') || field(frame, 'ip')}  (${where})`);
  }
}
console.log(`\nmemcheck: ${ours.length} error(s) in twinloop.node, ${errors.length - ours.length} elsewhere (Node, V8, libc)`);
JS
if [ "$status" -ne 0 ]; then
  echo "valgrind run failed (exit $status); the full log:" >&2
  cat "$work/memcheck.log" >&2
fi
exit "$status"
