"""Shared, framework-free parts of the study: the arm interface, data, measures, statistics, results, reports.

``registry`` (every arm and method, defined once), ``config``, ``arm`` (the interface every arm
implements) and ``explanation`` (maps in the framework-neutral layout), ``data/`` (discovery,
decoding, the split), ``quality/`` (measures of a map), ``stats`` and ``classification``
(statistics of the figures), ``results`` (the typed metrics.json), ``report/`` (figures and
prose), and the small helpers ``io``, ``seeding``, ``machine`` and ``errors``. Nothing in
``common`` imports torch or tensorflow, so the runner and the report can run without either
framework, and each arm can run in a process of its own.
"""
