"""mtlsc benchmarks: `python -m benchmarks [--quick]` writes docs/performance.md.

Timed assertions live here, never in the unit tests: the benchmark is the gate.
"""
