import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['lib/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'node18',
  // lib/binding.ts finds the package root from import.meta.url; the shim makes that work in CJS.
  shims: true,
  sourcemap: true,
});
