// Where the benchmark finds what `npm run build:native` builds.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const loadgenPath = path.join(root, 'build', 'Release', 'loadgen');
export const nativeEchoPath = path.join(root, 'build', 'Release', 'native_echo.so');
export const standaloneEchoPath = path.join(root, 'build', 'Release', 'standalone_echo');
export const resultsDir = path.join(root, 'bench', 'results');
/** The servers as bench/tsup.config.ts compiles them. */
export const serversDir = path.join(root, 'bench', '.servers');
