"""Rendering: the Jinja2 environments of the two reports, and :func:`write_reports`.

The Markdown report links the PNGs relatively (it reads well on GitHub); the HTML report is one
self-contained file with the PNGs embedded as base64 data URIs. Every string that comes from the
user (class names, paths, the data set name) is escaped: by Jinja2's autoescape in HTML, by
:func:`md_escape` in Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from common.io import write_text_atomic
from common.report.context import report_context
from common.report.names import map_pair_title
from common.report.text import Verbatim, code_span, fmt_estimate, fmt_number, fmt_p, md_escape
from common.results import StudyMetrics

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment(html: bool, templates: str | Path = TEMPLATES) -> Environment:
    common = dict(
        loader=FileSystemLoader(str(templates)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    if html:
        env = Environment(autoescape=True, **common)
    else:
        env = Environment(autoescape=False, finalize=md_escape, **common)
        env.filters["verbatim"] = Verbatim  # for macro output, whose values are escaped already
        env.filters["code"] = code_span
    env.filters["num"] = fmt_number
    env.filters["pval"] = fmt_p
    env.filters["estimate"] = fmt_estimate
    env.filters["dash"] = lambda v: "—" if v is None else v
    env.filters["pair_title"] = map_pair_title
    return env


def markdown_environment(templates: str | Path) -> Environment:
    """The report's Markdown environment for the templates in another folder (the benchmark's):
    every ``{{ value }}`` escaped for Markdown, and the filters ``num``, ``pval``, ``dash``,
    ``code`` (an inline code span) and ``verbatim`` (text already safe for Markdown)."""
    return _environment(html=False, templates=templates)


def verbatim(text: str) -> str:
    """``text`` marked as safe Markdown, so the Markdown environment prints it unescaped."""
    return Verbatim(text)


def write_reports(out_dir: str | Path, metrics: StudyMetrics, figures: Mapping[str, str]) -> tuple[Path, Path]:
    """Render ``<out_dir>/report.md`` and the self-contained ``<out_dir>/report.html``.

    Args:
        out_dir: the run's output folder (the figures' paths are relative to it).
        metrics: the run's typed results (what metrics.json holds).
        figures: ``{figure key: relative path}`` from :func:`common.report.figures.build_figures`.

    Returns:
        ``(report.md path, report.html path)``, both written atomically.
    """
    out_dir = Path(out_dir)
    md = _environment(html=False).get_template("report.md.j2")
    md = md.render(**report_context(out_dir, metrics, figures, False))
    html = _environment(html=True).get_template("report.html.j2")
    html = html.render(**report_context(out_dir, metrics, figures, True))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(md_path, md)
    write_text_atomic(html_path, html)
    return md_path, html_path
