"""The failed-cell section: each failed cell's key and error (they are retried on the next run)."""

from __future__ import annotations

from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport


def failed_markdown(report: SuiteReport) -> list[str]:
    """One line per failed cell."""
    if not report.failed:
        return []
    return ["## Failed cells (retried on the next run)", ""] + [f"- `{c['key']}`: {c['error']}"
                                                                for c in report.failed] + [""]


FAILED = SECTIONS.add(Section("failed", markdown=failed_markdown), rank=95)
