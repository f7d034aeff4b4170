import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['lib/index.ts'],
  format: ['esm', 'cjs'],
  // Members marked @internal (the loop core, native handles, the stream's hooks) stay out of the
  // published types: they are not API, whatever JavaScript can reach.
  dts: { compilerOptions: { stripInternal: true } },
  clean: true,
  target: 'node18',
  // lib/binding.ts finds the package root from import.meta.url; the shim makes that work in CJS.
  shims: true,
  sourcemap: true,
});
