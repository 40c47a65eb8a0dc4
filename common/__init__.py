"""Shared, framework-free parts of the study: data, config, interface, evaluation, reports.

Nothing in ``common`` imports torch or tensorflow, so the runner and the report can
run without either framework, and each arm can run in a process of its own.
"""
