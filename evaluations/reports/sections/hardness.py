"""The JSMA hardness section (Papernot et al. §5.5–5.7): the ``hardness`` estimates next to the paper's §5.6
numbers, with their heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.analysis.hardness import HardnessResult, plot_hardness
from advbridge.evaluations.core.formatting import embed, fmt, safe
from advbridge.evaluations.papers.papernot import PAPER as JSMA_PAPER
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport


def _matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def hardness_plots(estimates: list[dict[str, Any]], folder: Path) -> list[str]:
    """The heatmaps of every ``hardness`` estimate; paths relative to the report."""
    written = []
    for c in estimates:
        r = c["record"]
        if r["estimator"] != "hardness":
            continue
        res = r["result"]
        view = HardnessResult(res["levels"], np.array([]), np.array([]), _matrix(res["hardness"]),
                              _matrix(res["adversarial_distance"]), res["robustness"], res["success_rate"],
                              res["mean_distortion_all"], res["mean_distortion_successful"], res["n_samples"],
                              res["time_s"], res["vjp_calls"], res["vjp_calls_separate_runs"],
                              saliency_on=res["saliency_on"])
        stem = f"{r['estimator']}_{safe(r['suite'])}_{safe(r['model'])}"
        written += [f"plots/{p.name}" for p in plot_hardness(view, folder, stem)]
    return written


def hardness_markdown(estimates: list[dict[str, Any]], plots: list[str]) -> list[str]:
    """One row per ``hardness`` estimate and the paper's row, then the heatmaps."""
    hardness = [c for c in estimates if c["record"]["estimator"] == "hardness"]
    if not hardness:
        return []
    lines = ["## JSMA hardness (Papernot et al. §5.5–5.7)", "",
             "One JSMA pass (pair saliency, θ = +1) per model toward every other class at the largest Υ; every "
             "smaller Υ is a prefix of it (greedy, deterministic), so the 9 levels of §5.7 and the headline "
             "Υ = 14.5% come from the same pass. Distortion: fraction of the 784 features changed.", "",
             "| model | sources × targets | saliency | success | distortion (all) | distortion (successful) | "
             "robustness R(F) | time (s) | VJPs: one pass / one run per level |", "|---|---|---|---|---|---|---|---|---|"]
    for c in hardness:
        r, res = c["record"], c["record"]["result"]
        lines.append(f"| {r['model']} | {res['n_samples']} × 9 | {res['saliency_on']} | "
                     f"{fmt(res['success_rate'], True)} | {fmt(res['mean_distortion_all'], True)} | "
                     f"{fmt(res['mean_distortion_successful'], True)} | {res['robustness']:.3f} | "
                     f"{res['time_s']:.1f} | {res['vjp_calls']} / {res['vjp_calls_separate_runs']} |")
    lines.append(f"| paper (§5.6, MNIST test set, LeNet) | 10,000 × 9 | probabilities | "
                 f"{fmt(JSMA_PAPER['success_rate'], True)} | {fmt(JSMA_PAPER['mean_distortion_all'], True)} | "
                 f"{fmt(JSMA_PAPER['mean_distortion_successful'], True)} | – | – | – |")
    lines.append("")
    own = [p for p in plots if Path(p).name.startswith("hardness_")]
    return lines + embed(own) + [""]


def _markdown(report: SuiteReport) -> list[str]:
    return hardness_markdown(report.estimates, report.plots)


def _plots(data: ReportData, folder: Path) -> list[str]:
    return hardness_plots(data.estimates, folder)


HARDNESS = SECTIONS.add(Section("hardness", markdown=_markdown, plots=_plots), rank=50)
