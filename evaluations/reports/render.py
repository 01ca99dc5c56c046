"""The report renderer: results.json/.csv, report.md, crossval JSON per group and the PNG plots, from the store alone.

``report.md`` is one part per suite, each the concatenation of every registered report section
(`advbridge.evaluations.reports.section.SECTIONS`, in rank order); the plots are every section's, drawn once for the
whole store. The renderer never imports a section module.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.bridge import AttackSpec
from advbridge.bridge.crossval import CrossvalReport, agreement_rate, compare
from advbridge.bridge.io import atomic_write_text
from advbridge.bridge.result import AttackResult

from advbridge.evaluations.core.formatting import setting_key
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.reports.cells import stored_misclassified
from advbridge.evaluations.reports.section import SECTIONS, ReportData, SuiteReport
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.suite import Suite

logger = logging.getLogger(__name__)

RECORD_KEYS = ("suite", "cell", "model", "attack", "norm", "backend", "label", "setting", "params", "targeted", "n",
               "threat", "metrics", "flags", "time_s")


def write_reports(out: str | Path, suite_name: str | None = None) -> dict[str, Any]:
    """Render every report file of ``out`` from ``out/results.db``; returns what was written."""
    out = Path(out)
    db = out / "results.db"
    if not db.exists():
        raise FileNotFoundError(f"no results store at {db}; run `advbridge run SUITE --out {out}` first")
    with ResultStore(db) as store:
        cells = store.cells(suite=suite_name)
        suites = {s["name"]: s for s in store.suites()}
    done = [c for c in cells if c["status"] == "done"]
    estimates = [c for c in done if c["record"].get("kind") == "estimator"]
    done = [c for c in done if c["record"].get("kind") != "estimator"]
    failed = [c for c in cells if c["status"] == "failed"]
    for c in cells:  # records written before defenses existed have no threat
        if c.get("record"):
            c["record"].setdefault("threat", "none")
    records = [{k: c["record"].get(k) for k in RECORD_KEYS} for c in done]
    atomic_write_text(out / "results.json", json.dumps(records, indent=2))
    atomic_write_text(out / "results.csv", _csv(records))
    groups = backend_comparisons(done)
    for g in groups:
        g["report"].save(out / "crossval" / g["slug"])
    names = [suite_name] if suite_name else sorted({c["suite"] for c in cells})
    loaded: dict[str, Suite | None] = {}
    for name in names:
        stored = suites.get(name)
        loaded[name] = load_suite(name, text=stored["text"], quick=stored["quick"]) if stored else None
    plots, listed = _plots(ReportData(done, estimates, loaded), out / "plots")
    if estimates:
        atomic_write_text(out / "estimators.json", json.dumps([c["record"] for c in estimates], indent=2))
    parts = []
    for name in names:
        parts.append(_markdown(SuiteReport(
            name, loaded[name], [c for c in done if c["suite"] == name], [c for c in failed if c["suite"] == name],
            [c for c in estimates if c["suite"] == name], [g for g in groups if g["suite"] == name], plots, listed)))
    atomic_write_text(out / "report.md", "\n\n".join(parts) + "\n")
    return {"records": len(records), "failed": len(failed), "plots": plots, "comparisons": len(groups)}


def _plots(data: ReportData, folder: Path) -> tuple[list[str], list[str]]:
    """Every section's plots, in rank order, and those of the sections that leave them to the closing list."""
    folder.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    listed: list[str] = []
    for section in SECTIONS.values():
        if section.plots is None:
            continue
        made = section.plots(data, folder)
        plots += made
        if not section.embeds_plots:
            listed += made
    return plots, listed


def _markdown(report: SuiteReport) -> str:
    """One suite's part of ``report.md``: every section's lines, in rank order."""
    return "\n".join(line for section in SECTIONS.values() for line in section.markdown(report))


# --------------------------------------------------------------------------- cross-backend comparisons
def _group_key(c: dict[str, Any]) -> tuple:
    r = c["record"]
    return (r["suite"], r["model"], r["label"], r["attack"], r["norm"], json.dumps(r["setting"], sort_keys=True),
            json.dumps(r["targeted"]), r["threat"])


def backend_comparisons(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-run crossval's comparison on stored per-sample results of cells that differ only in backend."""
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in sorted(done, key=lambda c: (c["record"]["model"], c["record"]["label"],
                                         setting_key(c["record"]["setting"]))):
        by_group[_group_key(c)].append(c)
    out = []
    for members in by_group.values():
        members = sorted(members, key=lambda m: m["record"]["backend"])
        if len(members) < 2 or len({m["record"]["n"] for m in members}) != 1:
            continue
        results = {}
        for m in members:
            r, s = m["record"], m["samples"]
            spec = AttackSpec(r["attack"], r["norm"], _target(r["targeted"]), r["params"])
            wrong = stored_misclassified(r, s)
            results[r["backend"]] = AttackResult(  # a stored cell keeps no adversarial inputs nor predictions
                spec=spec, backend=r["backend"], params=r["params"], x_adv=None,  # type: ignore[arg-type]
                labels=np.asarray(s.get("label", np.zeros(r["n"], int))), targets=None, pred_clean=None,
                pred_adv=None, success=np.asarray(s["success"], bool) & ~wrong,  # type: ignore[arg-type]
                nonfinite=np.asarray(s["nonfinite"], bool),
                norms={k: np.asarray(s[k], float) for k in ("l0", "l1", "l2", "linf")}, time_s=r["time_s"],
                seed=0, versions={}, already_misclassified=wrong)
        first = members[0]["record"]
        shared = {k: v for k, v in first["params"].items()
                  if all(m["record"]["params"].get(k) == v for m in members)}
        report = CrossvalReport(spec=results[first["backend"]].spec, params=shared, results=results,
                                agreement=agreement_rate(results))
        compare(report)
        slug = "-".join([first["model"].replace(":", "_").replace(".", "_"), first["label"].replace(" ", "_")
                         .replace("(", "").replace(")", ""), first["norm"]] +
                        [f"{k}{v}" for k, v in sorted(first["setting"].items())])
        threat = "" if first["threat"] == "none" else f", {first['threat']}"
        if threat:
            slug += f"-{first['threat'].replace(':', '_')}"
        out.append({"suite": first["suite"], "model": first["model"],
                    "label": f"{first['label']} ({first['norm']}{threat})",
                    "setting": first["setting"], "report": report, "slug": slug})
    return out


def _target(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- tables
def _csv(records: list[dict[str, Any]]) -> str:
    metric_names = sorted({k for r in records for k in r["metrics"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["suite", "cell", "model", "attack", "norm", "backend", "label", "setting", "params", *metric_names,
                     "time_s", "flags"])
    for r in records:
        writer.writerow([r["suite"], r["cell"], r["model"], r["attack"], r["norm"], r["backend"], r["label"],
                         json.dumps(r["setting"], sort_keys=True), json.dumps(r["params"], sort_keys=True),
                         *[r["metrics"].get(m) for m in metric_names], f"{r['time_s']:.3f}", " | ".join(r["flags"])])
    return buf.getvalue()
