// Packaging test: what `npm install twinloop` gives a user who has no compiler.
//
//   node scripts/test-package.mjs [--keep DIR] [--platforms linux-x64,linux-arm64,...] [--skip-source-build]
//   (npm run test:package; make the prebuilds first: npm run build:prebuilds)
//
// npm pack → check the tarball's contents → install it into a fresh project with a PATH that
// holds only node, npm and sh (no g++, cc, make, python3) → `import` and `require` both load it,
// the loaded binary is the prebuild, a one-second echo runs, and TypeScript (module node16)
// resolves the types of both the ESM and the CJS entry. Then, unless --skip-source-build (and not
// on Windows), the same tarball without its prebuilds, installed where a compiler is: `install`
// builds the addon from source, without bench/, which the tarball does not have.
//
// --keep leaves the installed project in DIR for test-node-versions.sh; --platforms names the
// prebuilds the tarball must carry (the release job checks that every platform's made it in).
// On Windows, where node-gyp finds Visual Studio without PATH, "nothing compiled" is proven by
// the binary loaded and the absence of build/ alone. Closes with `N passed, N failed`.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opts } = parseArgs({
  options: { keep: { type: 'string' }, platforms: { type: 'string' }, 'skip-source-build': { type: 'boolean' } },
});
const platformDir = `${process.platform}-${process.arch}`;
const windows = process.platform === 'win32';
/** npm is npm.cmd on Windows, which Node only spawns through a shell. */
const npm = (args, options) => spawnSync('npm', args, { shell: windows, encoding: 'utf8', ...options });

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${detail}` : ''}`);
  return ok;
}
function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
/** Child output, indented so that its own summary line is not taken for ours. */
function show(text) {
  for (const line of text.trimEnd().split('\n')) if (line) console.log(`    | ${line}`);
}

const prebuilds = path.join(root, 'prebuilds', platformDir);
if (!fs.existsSync(prebuilds) || !fs.readdirSync(prebuilds).some((f) => f.endsWith('.node'))) {
  check(`prebuilds/${platformDir} exists (npm run build:prebuilds)`, false);
  finish();
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'twinloop-package-'));
const project = opts.keep ? path.resolve(opts.keep) : path.join(work, 'project');

// 1. The tarball, as `npm publish` would make it: `prepare` builds dist/ (run on its own here, as
// its output would otherwise mix into pack's JSON).
const prepare = npm(['run', '--silent', 'prepare'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
const pack = npm(['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
if (!check('npm pack makes the tarball', prepare.status === 0 && pack.status === 0)) finish();
const packed = JSON.parse(pack.stdout)[0];
const tarball = path.join(work, packed.filename);
const files = packed.files.map((f) => f.path);
console.log(`     ${packed.filename}: ${files.length} files, ${(packed.size / 1024).toFixed(1)} KiB packed, ` +
  `${(packed.unpackedSize / 1024).toFixed(1)} KiB unpacked`);

const required = ['package.json', 'README.md', 'LICENSE', 'binding.gyp', 'dist/index.js', 'dist/index.cjs',
  'dist/index.d.ts', 'dist/index.d.cts', 'native/binding/addon.cc', 'native/core/backend.h'];
const missing = required.filter((f) => !files.includes(f));
check('the tarball has dist/, binding.gyp, the native sources, README and LICENSE', missing.length === 0, missing.join(', '));
const binaries = files.filter((f) => f.startsWith('prebuilds/'));
for (const platform of [...new Set([platformDir, ...(opts.platforms ? opts.platforms.split(',') : [])])]) {
  check(`the tarball has the ${platform} prebuild`, binaries.some((f) => f.startsWith(`prebuilds/${platform}/`) && f.endsWith('.node')),
    binaries.join(', '));
}
const forbidden = files.filter((f) => /^(test|bench|build|examples|scripts|lib|\.ci|\.github|node_modules)\//.test(f) ||
  /\.(tgz|o|log)$/.test(f) || /(^|\/)(results|coverage)\//.test(f));
check('the tarball has no tests, benchmark, examples, scripts or build outputs', forbidden.length === 0, forbidden.join(', '));
// Every native source binding.gyp builds (native/sources.json lists them) must be in it, for a
// source build where no prebuild fits.
const lists = JSON.parse(fs.readFileSync(path.join(root, 'native/sources.json'), 'utf8'));
const sources = [...new Set([lists.core, lists.addon, Object.values(lists.watcher), Object.values(lists.backends)].flat(2))];
const absent = ['native/sources.json', ...sources].filter((s) => !files.includes(s));
check('the tarball has native/sources.json and every native source it lists', sources.length > 0 && absent.length === 0, absent.join(', '));

// 2. A fresh project and a PATH with no compiler, make or Python: only node, npm and sh. (Had
// node-gyp-build found no prebuild, `install` would have run node-gyp and failed here.)
fs.rmSync(project, { recursive: true, force: true });
fs.mkdirSync(project, { recursive: true });
fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'twinloop-package-test', private: true }, null, 2));
const env = { ...process.env };
// As a user's shell has it: none of the build settings of this repo's npm scripts.
for (const name of Object.keys(env)) {
  if (/^(CC|CXX|LINK|AR|NODE_OPTIONS|npm_lifecycle_.*|npm_package_.*|npm_config_(nodedir|build_from_source|twinloop_.*))$/i.test(name)) delete env[name];
}
if (!windows) {
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  // sh: npm runs lifecycle scripts with it (a shell is no compiler; a user without one has it too).
  for (const tool of ['node', 'npm', 'sh']) {
    const found = execFileSync('/bin/sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();
    fs.symlinkSync(fs.realpathSync(found), path.join(bin, tool));
  }
  env.PATH = bin;
  const compiler = spawnSync('/bin/sh', ['-c', 'command -v g++ || command -v c++ || command -v cc || command -v make || command -v python3'], { env, encoding: 'utf8' });
  check('no compiler, make or python3 is reachable for the install', compiler.status !== 0, compiler.stdout.trim());
}

const install = npm(['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball], { cwd: project, env });
if (!check('npm install <tarball> succeeds without a compiler', install.status === 0)) show(install.stdout + install.stderr);
const installed = path.join(project, 'node_modules', 'twinloop');
check('nothing was compiled at install (no build/ in the installed package)', fs.existsSync(installed) && !fs.existsSync(path.join(installed, 'build')));

// 3. Load it both ways, check the binary, echo for a second.
fs.copyFileSync(path.join(root, 'scripts', 'smoke.mjs'), path.join(project, 'smoke.mjs'));
for (const via of ['import', 'require']) {
  const run = spawnSync(process.execPath, ['smoke.mjs', '--via', via, '--expect-binding', `/prebuilds/${platformDir}/`], {
    cwd: project, env, encoding: 'utf8', timeout: 60_000,
  });
  show(run.stdout + run.stderr);
  check(`${via}: loads the prebuild and echoes for a second`, run.status === 0);
}

// 4. The types, as TypeScript's node16 resolution sees the exports map from ESM and from CJS.
fs.writeFileSync(path.join(project, 'esm.mts'), `import { open, bindingPath, type Loop, type LoopInfo } from 'twinloop';
const loop: Loop = open({ backend: 'auto' });
export const info: LoopInfo = loop.info;
export const where: string = bindingPath;
// @ts-expect-error a backend the types do not know
open({ backend: 'select' });
export declare const socket: import('twinloop').Socket;
// @ts-expect-error the loop core is @internal: not in the published types
socket.core;
`);
fs.writeFileSync(path.join(project, 'cjs.cts'), `import twinloop = require('twinloop');
const loop: twinloop.Loop = twinloop.open({ backend: 'epoll' });
export const info: twinloop.LoopInfo = loop.info;
export const where: string = twinloop.bindingPath;
// @ts-expect-error a backend the types do not know
twinloop.open({ backend: 'select' });
`);
fs.writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify({
  compilerOptions: {
    module: 'node16', moduleResolution: 'node16', target: 'ES2022', strict: true, noEmit: true,
    types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')],
  },
  files: ['esm.mts', 'cjs.cts'],
}, null, 2));
const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project, '--explainFiles'],
  { cwd: project, encoding: 'utf8' });
const resolvedEsm = tsc.stdout.includes('node_modules/twinloop/dist/index.d.ts');
const resolvedCjs = tsc.stdout.includes('node_modules/twinloop/dist/index.d.cts');
if (!check('TypeScript (node16) type-checks an import and a require of the package', tsc.status === 0)) {
  show(tsc.stdout.split('\n').filter((l) => /error TS/.test(l)).join('\n') || tsc.stdout + tsc.stderr);
}
check('TypeScript resolves import to dist/index.d.ts and require to dist/index.d.cts', resolvedEsm && resolvedCjs,
  `import → ${resolvedEsm ? 'index.d.ts' : '?'}, require → ${resolvedCjs ? 'index.d.cts' : '?'}`);

// 5. No prebuild for this platform: `npm install` compiles the addon (and only the addon).
if (!windows && !opts['skip-source-build']) {
  const unpacked = path.join(work, 'unpacked');
  fs.mkdirSync(unpacked);
  execFileSync('tar', ['xzf', tarball, '-C', unpacked]);
  fs.rmSync(path.join(unpacked, 'package', 'prebuilds'), { recursive: true, force: true });
  const sourceTarball = path.join(work, 'twinloop-source-only.tgz');
  execFileSync('tar', ['czf', sourceTarball, '-C', unpacked, 'package']);
  const sourceProject = path.join(work, 'source-project');
  fs.mkdirSync(sourceProject);
  fs.writeFileSync(path.join(sourceProject, 'package.json'), JSON.stringify({ name: 'twinloop-source-test', private: true }));
  const sourceEnv = { ...process.env };
  for (const name of Object.keys(sourceEnv)) if (/^(npm_lifecycle_.*|npm_package_.*|npm_config_twinloop_.*)$/i.test(name)) delete sourceEnv[name];
  const build = npm(['install', '--no-audit', '--no-fund', '--foreground-scripts', sourceTarball], { cwd: sourceProject, env: sourceEnv });
  if (!check('with no prebuild, npm install builds the addon from source', build.status === 0)) show(build.stdout + build.stderr);
  const release = path.join(sourceProject, 'node_modules', 'twinloop', 'build', 'Release');
  const products = fs.existsSync(release) ? fs.readdirSync(release).filter((f) => !f.startsWith('.') && !['obj.target', '.deps'].includes(f)) : [];
  check('the source build makes the addon alone (the benchmark is not in the tarball)',
    products.includes('twinloop.node') && !products.some((f) => /loadgen|native_echo/.test(f)), products.join(', '));
  fs.copyFileSync(path.join(root, 'scripts', 'smoke.mjs'), path.join(sourceProject, 'smoke.mjs'));
  const run = spawnSync(process.execPath, ['smoke.mjs', '--expect-binding', '/build/Release/'], {
    cwd: sourceProject, env: sourceEnv, encoding: 'utf8', timeout: 60_000,
  });
  show(run.stdout + run.stderr);
  check('the source-built addon loads and echoes for a second', run.status === 0);
}

fs.rmSync(work, { recursive: true, force: true });
if (opts.keep) console.log(`     installed project kept in ${project}`);
finish();
