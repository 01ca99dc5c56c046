"""Report sections for Kos et al. attacks: the (source, target) attack-success matrices next to the paper's.

Rendered from the store alone: each cell's per-sample true labels, targets and reconstruction-feedback
predictions give the two 10×10 matrices (AS_ignore-target, AS_target), saved as heatmap PNGs, with the
per-source means and the overall mean next to the paper's MNIST classifier-attack numbers (§4.4). The paper's
full matrix was not recovered; its per-source means, overall mean and four example cells are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.analysis.kos import overall_mean, per_source_means, plot_matrix
from advbridge.evaluations.core.formatting import embed, fmt, safe, setting_text
from advbridge.evaluations.papers.kos import PAPER_CELLS, PAPER_MEAN, PAPER_PER_SOURCE
from advbridge.evaluations.reports.cells import cell_matrices
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport


def _kos_cells(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((c for c in done if c["record"]["attack"].startswith("kos_") and "target" in (c["samples"] or {})),
                  key=lambda c: (c["record"]["model"], c["record"]["attack"], setting_text(c["record"]["setting"])))


def _stem(cell: dict[str, Any]) -> str:
    r = cell["record"]
    return f"kos_{safe(r['suite'])}_{safe(r['model'])}_{r['attack']}_{safe(setting_text(r['setting']))}"


def kos_plots(done: list[dict[str, Any]], folder: Path) -> list[str]:
    """Heatmap PNGs of AS_ignore-target and AS_target for every Kos cell; returns paths relative to the report."""
    out = []
    for cell in _kos_cells(done):
        m = cell_matrices(cell)
        r = cell["record"]
        for key, title in (("as_ignore_target", "AS_ignore-target"), ("as_target", "AS_target")):
            path = folder / f"{_stem(cell)}_{key}.png"
            plot_matrix(m[key], path, f"{r['attack']} on {r['model']}: {title}\n(rows: source, columns: target)")
            out.append(f"plots/{path.name}")
    return out


def kos_markdown(done: list[dict[str, Any]], plots: list[str]) -> list[str]:
    """Per Kos cell: overall and per-source means next to the paper's, and the heatmaps."""
    cells = _kos_cells(done)
    if not cells:
        return []
    lines = ["## Attacks on the generative model: success matrices (Kos et al. §4.3)", "",
             "ŷ is the reconstruction-feedback prediction f_class(μ(f_dec(μ(x*)))). AS_ignore-target: ŷ differs from "
             "the source class; AS_target: ŷ is the target. Targets are drawn at random per input, so each of the 90 "
             "(source, target) pairs holds about n/90 inputs. The paper's column is its MNIST *classifier* attack "
             "(the only matrix it reports); its full matrix was not recovered, only the means and four cells. "
             "An input whose clean reconstruction-feedback prediction is wrong is already misclassified: it is left "
             "out of the rates (never a success) and counted in the *already misclassified* column.", ""]
    for cell in cells:
        r = cell["record"]
        m = cell_matrices(cell)
        ignore, target = per_source_means(m["as_ignore_target"]), per_source_means(m["as_target"])
        setting = setting_text(r["setting"])
        lines += [f"### {r['attack']} on `{r['model']}` ({setting}, n = {r['n']})", "",
                  f"Mean over the pairs: AS_ignore-target **{100 * overall_mean(m['as_ignore_target']):.1f}%**, "
                  f"AS_target **{100 * overall_mean(m['as_target']):.1f}%** (paper, classifier attack: "
                  f"{PAPER_MEAN[0]:.1f}% and {PAPER_MEAN[1]:.1f}%); median L2 {fmt(r['metrics'].get('median_l2'))}; "
                  f"{int(m['already_misclassified'].sum())} of {r['n']} inputs already misclassified.",
                  "", ("| source | inputs | already misclassified | AS_ignore-target | AS_target | "
                       "paper AS_ignore-target | paper AS_target |"),
                  "|---|---|---|---|---|---|---|"]
        counts, wrong = m["counts"].sum(1), m["already_misclassified"].sum(1)
        for s in range(len(ignore)):
            paper = PAPER_PER_SOURCE.get(s, (np.nan, np.nan))
            lines.append(f"| {s} | {int(counts[s])} | {int(wrong[s])} | {_pct(ignore[s])} | {_pct(target[s])} | "
                         f"{paper[0]:.1f}% | {paper[1]:.1f}% |")
        lines += ["", "| pair | ours AS_ignore-target (AS_target) | paper |", "|---|---|---|"]
        for (s, t), (pi, pt) in PAPER_CELLS.items():
            lines.append(f"| {s}→{t} | {_pct(m['as_ignore_target'][s, t])} ({_pct(m['as_target'][s, t])}) | "
                         f"{pi:.2f}% ({pt:.2f}%) |")
        lines.append("")
        own = [p for p in plots if Path(p).name.startswith(_stem(cell) + "_")]
        lines += embed(own) + [""]
    return lines


def _pct(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else fmt(float(value), pct=True)


def _markdown(report: SuiteReport) -> list[str]:
    return kos_markdown(report.done, report.plots)


def _plots(data: ReportData, folder: Path) -> list[str]:
    return kos_plots(data.done, folder)


KOS = SECTIONS.add(Section("kos", markdown=_markdown, plots=_plots), rank=40)
