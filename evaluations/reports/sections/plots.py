"""The closing plot list: the suite's plots of the sections that do not embed their own (the security-evaluation and
minimal-perturbation curves)."""

from __future__ import annotations

from advbridge.evaluations.core.formatting import embed, safe
from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport


def plot_list(report: SuiteReport) -> list[str]:
    """``## Plots`` with the suite's listed plots (their names hold ``_<suite>_``), if any."""
    own = [p for p in report.listed if f"_{safe(report.name)}_" in p]
    return ["## Plots", ""] + embed(own) + [""] if own else []


PLOTS = SECTIONS.add(Section("plots", markdown=plot_list), rank=100)
