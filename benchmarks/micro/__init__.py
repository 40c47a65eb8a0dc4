"""Micro-benchmarks behind the levers tried, one a module: ``python -m benchmarks.micro.<name>``
(results in ``benchmarks/BENCHMARKS.md``; benchmarks, not tests)."""
