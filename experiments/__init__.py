"""The study's command-line entry points and benchmarks."""
