"""The report: figures, tables and prose from the saved results, rendered as Markdown and HTML.

- :mod:`~common.report.plots`: each figure drawn with matplotlib (and shap's image plot);
- :mod:`~common.report.figures`: which figures a study's report holds, drawn from its results;
- :mod:`~common.report.findings`: the plain sentences a report states, generated from the numbers;
- :mod:`~common.report.context` and :mod:`~common.report.seeds`: what the templates show;
- :mod:`~common.report.render`: the Jinja2 environments (escaping, number formats) and
  :func:`~common.report.render.write_reports`;
- :mod:`~common.report.names`: every arm, method and map as the report names it;
- ``templates/``: ``report.md.j2``, ``report.html.j2`` and the seed-sweep section they include.

Reports hold no date and no absolute output path: the same inputs give the same report, apart
from the measured timings.
"""
