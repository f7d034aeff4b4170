// The benchmark's servers, compiled as users compile theirs. tsx, which runs the rest of bench/,
// keeps function names by wrapping every function expression in a defineProperty call
// (`__name(fn, "fn")`), which gives each closure a property of its own: ~100 bytes a callback
// made per connection that no user's build pays, and the idle figures would count it.
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['bench/servers/twinloop-server.ts', 'bench/servers/net-server.ts', 'bench/servers/http-server.ts'],
  format: ['esm'],
  outDir: 'bench/.servers',
  // The built package, by its name, as users import it (resolved through package.json's exports).
  external: ['twinloop'],
  target: 'node18',
  clean: true,
});
