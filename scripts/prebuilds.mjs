// The prebuilds a tarball must carry, and whether they were built from the sources it carries.
//
//   node scripts/prebuilds.mjs stamp DIR [--root R]   writes DIR/sources.sha256: the hash of R's
//                                                    native/ and binding.gyp (scripts/prebuild.sh)
//   node scripts/prebuilds.mjs check                  package.json's `prepack`: fails unless
//                                                    prebuilds/linux-x64 and linux-arm64 each hold
//                                                    a .node stamped with the current sources' hash
//
// Without them `npm pack` / `npm publish` would make a tarball that compiles the addon at install,
// on exactly the machines the README promises need no compiler. A prebuild without a stamp (the
// macOS and Windows ones, made by prebuildify in the release workflow) is taken as it is. When npm
// packs a git dependency (npm_command is then `install`), it is a source install by request: the
// check only notes what is missing.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** What `npm install twinloop` must find prebuilt (README: linux-x64 and linux-arm64, glibc). */
const required = ['linux-x64', 'linux-arm64'];
const stampName = 'sources.sha256';

/** SHA-256 over every file of native/ and binding.gyp, by path, in a fixed order. */
function sourcesHash(base) {
  const files = ['binding.gyp'];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(base, dir), { withFileTypes: true })) {
      const relative = `${dir}/${entry.name}`;
      if (entry.isDirectory()) walk(relative);
      else if (entry.isFile()) files.push(relative);
    }
  };
  walk('native');
  const hash = createHash('sha256');
  for (const file of files.sort()) {
    const content = fs.readFileSync(path.join(base, file));
    hash.update(`${file}\0${content.length}\0`).update(content);
  }
  return hash.digest('hex');
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'stamp') {
  const dir = rest[0];
  const rootIndex = rest.indexOf('--root');
  const base = rootIndex === -1 ? root : path.resolve(rest[rootIndex + 1]);
  if (!dir || !fs.existsSync(dir)) {
    console.error(`prebuilds.mjs stamp: no directory '${dir ?? ''}'`);
    process.exit(2);
  }
  fs.writeFileSync(path.join(dir, stampName), `${sourcesHash(base)}\n`);
} else if (command === 'check') {
  const current = sourcesHash(root);
  const problems = [];
  for (const platform of required) {
    const dir = path.join(root, 'prebuilds', platform);
    const binaries = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
    if (binaries.length === 0) {
      problems.push(`prebuilds/${platform} has no .node`);
      continue;
    }
    const stamp = path.join(dir, stampName);
    const built = fs.existsSync(stamp) ? fs.readFileSync(stamp, 'utf8').trim() : null;
    if (built === null) problems.push(`prebuilds/${platform} has no ${stampName} (not made by scripts/prebuild.sh)`);
    else if (built !== current) problems.push(`prebuilds/${platform} was built from other sources than native/ and binding.gyp hold now`);
  }
  const npmCommand = process.env.npm_command;
  if (problems.length > 0 && npmCommand !== undefined && npmCommand !== 'pack' && npmCommand !== 'publish') {
    console.error(`note: packed by 'npm ${npmCommand}' (a git dependency): the addon will be compiled at install (${problems.join('; ')})`);
  } else if (problems.length > 0) {
    console.error([
      'twinloop: refusing to pack a tarball that would need a compiler where the README promises none:',
      ...problems.map((problem) => `  - ${problem}`),
      'Build them first: npm run build:prebuilds -- x64 arm64   (scripts/prebuild.sh; arm64 needs g++-aarch64-linux-gnu)',
    ].join('\n'));
    process.exit(1);
  }
} else {
  console.error('usage: node scripts/prebuilds.mjs stamp DIR [--root R] | check');
  process.exit(2);
}
