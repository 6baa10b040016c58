"""What tests and benchmarks share: processes, ports, HTTP, load, faults and test doubles.

Imported in one direction only: tests and scripts/bench import the harness; the harness
imports the standard library, third-party packages, `predictions` and leaf scripts such
as scripts.embedded_redis, never a test module, a conftest or a benchmark
(import-linter holds it to that: `[tool.importlinter]` in pyproject.toml).
"""
