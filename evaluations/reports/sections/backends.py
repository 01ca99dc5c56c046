"""The cross-backend section: cells that differ only in backend compared sample by sample (agreement, success per
backend, the stronger one), and the flags raised with their known causes."""

from __future__ import annotations

from advbridge.evaluations.core.formatting import fmt, setting_text
from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport


def backends_markdown(report: SuiteReport) -> list[str]:
    """One row per comparison group, then the flags that need explaining."""
    groups = report.comparisons
    if not groups:
        return []
    lines = ["## Backends compared, sample by sample (ART, Foolbox, adv-lib, native)", "",
             "| model | attack | setting | agreement | success per backend | median norm per backend (successes) | "
             "time per backend (s) | time ratio | stronger | flags |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for g in groups:
        rep = g["report"]
        succ = ", ".join(f"{b} {fmt(r.success_rate, pct=True)}" for b, r in rep.results.items())
        norm_key = rep.spec.norm
        medians = ", ".join(f"{b} {fmt(r.median_norm(norm_key))}" for b, r in rep.results.items())
        times = ", ".join(f"{b} {r.time_s:.2f}" for b, r in rep.results.items())
        ratios = ", ".join(f"{k.removeprefix('time ratio ').replace('/', ' ÷ ')} {v:.2f}"
                           for k, v in rep.ratios.items() if k.startswith("time ratio ")) or "—"
        codes = ", ".join(f.code for f in rep.flags if f.code != "defaults_differ") or "none"
        stronger = (rep.stronger or "tie") if len(rep.results) <= 2 else "; ".join(
            f"{a}/{b}: {w or 'tie'}" for (a, b), w in rep.stronger_by_pair.items())
        lines.append(f"| {g['model']} | {g['label']} | {setting_text(g['setting'])} | {fmt(rep.agreement, pct=True)} | "
                     f"{succ} | {medians} | {times} | {ratios} | {stronger} | {codes} |")
    lines.append("")
    explained = [(g, f) for g in groups for f in g["report"].flags if f.code != "defaults_differ"]
    if explained:
        lines += ["Flags and their known causes:", ""]
        for g, f in explained:
            lines.append(f"- {g['label']} {g['setting'] or ''}: **{f.code}**: {f.message}"
                         + (f" — known cause: {f.cause}" if f.cause else "")
                         + (f" ({', '.join(f.upstream)})" if f.upstream else ""))
        lines.append("")
    return lines


BACKENDS = SECTIONS.add(Section("backends", markdown=backends_markdown), rank=80)
