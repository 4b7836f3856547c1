/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    // tsconfig's isolatedModules: ts-jest only transpiles; type checking is `npm run tsc`'s job.
    '^.+\\.ts$': 'ts-jest',
  },
  testTimeout: 120000,
  // Each file starts its own simulator and serve: two at a time on a two-core runner.
  maxWorkers: 2,
};
