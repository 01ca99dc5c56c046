"""The sanity-flag section: every flag the cells raised (zero gradients, randomised predictions, non-finite
outputs), per model."""

from __future__ import annotations

from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport


def sanity_markdown(report: SuiteReport) -> list[str]:
    """The flags, or the line saying none was raised."""
    sanity = sorted({f"{c['record']['model']}: {flag}" for c in report.done for flag in c["record"]["flags"]})
    return ["## Sanity flags", ""] + ([f"- {s}" for s in sanity] or ["None raised (zero gradients, randomised "
                                                                    "predictions, non-finite outputs)."]) + [""]


SANITY = SECTIONS.add(Section("sanity", markdown=sanity_markdown), rank=90)
