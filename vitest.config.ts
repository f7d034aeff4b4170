import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Native addons and worker-thread pools do not mix: each test file runs in its own process.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 30_000,
  },
});
