"""The study's benchmarks: stage times, explainer efficiency, the published way, accuracy over seeds, and
the micro-benchmarks behind the levers tried (results in ``benchmarks/BENCHMARKS.md``).

Run as modules from the repository root, e.g. ``python -m benchmarks.benchmark``.
"""
