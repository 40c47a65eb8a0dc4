"""The study's benchmarks, run as modules from the repository root (results: ``benchmarks/BENCHMARKS.md``):
``benchmarks.benchmark`` (the study's stages, explainer efficiency, the published way, seeds, scale),
``benchmarks.versus``, ``benchmarks.sweep`` and the micro-benchmarks in ``benchmarks.micro``.
"""
