"""The "Paper vs ours" section: each ``[[paper]]`` entry of the suite next to the matching cells' numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from advbridge.evaluations.core.formatting import fmt
from advbridge.evaluations.core.metrics import DEFENSE_METRICS, PCT_METRICS
from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport, data_note
from advbridge.evaluations.suites.suite import Suite


def is_pct(metric: str) -> bool:
    """Whether ``metric`` (possibly ``name[system]``) is a rate shown as a percentage."""
    return metric.split("[")[0] in PCT_METRICS | set(DEFENSE_METRICS)


def paper_table(suite: Suite, done: list[dict[str, Any]]) -> list[str]:
    """One row per paper entry: its value and ours per (model, backend) of the cells it matches."""
    lines = ["## Paper vs ours", "", f"Data difference: {data_note(suite, '')}.",
             "", "| paper model / setting | our model | attack | setting | metric | paper | ours (per backend) | source |",
             "|---|---|---|---|---|---|---|---|"]
    for p in suite.paper:
        match = [c["record"] for c in done
                 if c["record"]["attack"] == p["attack"]
                 and (p.get("model") is None or c["record"]["model"] == p["model"])
                 and (p.get("norm") is None or c["record"]["norm"] == p["norm"])
                 and (p.get("threat") is None or c["record"]["threat"] == p["threat"])
                 and (p.get("label") is None or c["record"]["label"] == p["label"])
                 and all(np.isclose(float(c["record"]["setting"].get(k, c["record"]["params"].get(k, np.nan))),
                                    float(v)) for k, v in p.get("params", {}).items())]
        ours = ", ".join(f"{r['model']}/{r['backend']} {fmt(r['metrics'].get(p['metric']), is_pct(p['metric']))}"
                         for r in sorted(match, key=lambda r: (r["model"], r["backend"]))) or "not run"
        setting = ", ".join(f"{k}={v}" for k, v in p.get("params", {}).items())
        value = fmt(float(p["value"]), is_pct(p["metric"]))
        attack = " ".join(x for x in (p.get("label") or p["attack"], p.get("norm"), p.get("threat")) if x)
        lines.append(f"| {p.get('note', '')} | {p.get('model', 'any')} | {attack} | {setting} | {p['metric']} | "
                     f"{value} | {ours} | {p['source']} |")
    return lines + [""]


def _markdown(report: SuiteReport) -> list[str]:
    suite = report.suite
    return paper_table(suite, report.done) if suite is not None and suite.paper else []


PAPER = SECTIONS.add(Section("paper", markdown=_markdown), rank=70)
