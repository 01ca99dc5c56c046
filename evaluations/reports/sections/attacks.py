"""One table per attack label (every model, norm, setting, backend and threat of it), and the curves of the closing
plot list: security-evaluation curves (accuracy against ε) and minimal-perturbation curves."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.bridge import ATTACKS

from advbridge.evaluations.core.formatting import fmt, safe, setting_key, setting_text
from advbridge.evaluations.core.metrics import DISTANCE_METRICS, PCT_METRICS
from advbridge.evaluations.reports.cells import stored_misclassified
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport

#: The distance metrics an attack table shows (next to the rates of `PCT_METRICS`) when the suite lists them.


def attack_tables(report: SuiteReport) -> list[str]:
    """Per attack label: one row per cell with the suite's metrics, time and flag count."""
    suite, lines = report.suite, []
    metric_names = [m for m in (suite.metrics if suite else ()) if m in PCT_METRICS | DISTANCE_METRICS]
    by_label: dict[str, list[dict]] = defaultdict(list)
    for c in report.done:
        by_label[c["record"]["label"]].append(c["record"])
    for label, recs in by_label.items():
        recs.sort(key=lambda r: (r["model"], r["norm"], setting_key(r["setting"]), r["backend"], r["threat"]))
        shown = [m for m in metric_names if any(m in r["metrics"] for r in recs)]
        threat_col = any(r["threat"] != "none" for r in recs)
        norms = ", ".join(sorted({r["norm"] for r in recs}))
        lines += [f"## {label} ({norms})", "",
                  "| model | norm | setting | backend | " + ("threat | " if threat_col else "") + "n | "
                  + "already misclassified | " + " | ".join(shown) + " | time (s) | flags |",
                  "|---|---|---|---|" + ("---|" if threat_col else "") + "---|" * (len(shown) + 1) + "---|---|"]
        for r in recs:
            cells = [fmt(r["metrics"].get(m), m in PCT_METRICS) for m in shown]
            lines.append(f"| {r['model']} | {r['norm']} | {setting_text(r['setting'])} | {r['backend']} | "
                         + (f"{r['threat']} | " if threat_col else "") + f"{r['n']} | "
                         + f"{fmt(r['metrics'].get('already_misclassified'))} | " + " | ".join(cells) +
                         f" | {r['time_s']:.2f} | {len(r['flags'])} |")
        lines.append("")
    return lines


def curve_plots(data: ReportData, folder: Path) -> list[str]:
    """Security-evaluation curves (accuracy vs eps) and minimal-perturbation curves, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves: dict[tuple, dict[tuple, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    minimal: dict[tuple, dict[str, np.ndarray]] = defaultdict(dict)
    for c in data.done:
        r = c["record"]
        if "eps" in r["setting"]:
            line = r["backend"] if r["threat"] == "none" else f"{r['backend']}, {r['threat']}"
            curves[(r["suite"], r["label"], r["norm"])][(r["model"], line)].append(
                (float(r["setting"]["eps"]), r["metrics"]["adversarial_accuracy"]))
        if ATTACKS[r["attack"]].minimization:
            norm_key = r["norm"]
            values = np.asarray(c["samples"][norm_key], float)
            values[~np.asarray(c["samples"]["success"], bool)] = np.inf
            values[stored_misclassified(r, c["samples"])] = 0.0  # wrong when clean: not robust at any r
            setting = ",".join(f"{k}={v}" for k, v in sorted(r["setting"].items()))
            line = r["backend"] if r["threat"] == "none" else f"{r['backend']}, {r['threat']}"
            minimal[(r["suite"], r["model"], r["label"], norm_key, setting)][line] = values
    folder.mkdir(parents=True, exist_ok=True)
    for (suite, label, norm), lines in sorted(curves.items()):
        models = sorted({m for m, _ in lines})
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models):
            for (m, backend), points in sorted(lines.items()):
                if m != model:
                    continue
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        linestyle="-" if backend.startswith("art") else "--", label=backend)
            ax.set_title(f"{model}")
            ax.set_xlabel(f"ε ({norm})")
            ax.set_ylabel("accuracy under attack")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{suite}: {label} security-evaluation curve")
        fig.tight_layout()
        name = f"security_{safe(suite)}_{safe(label)}_{norm}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")
    for (suite, model, label, norm, setting), per_backend in sorted(minimal.items()):
        written.append(_minimal_plot(plt, folder, suite, model, label, norm, setting, per_backend))
    return written


def _minimal_plot(plt: Any, folder: Path, suite: str, model: str, label: str, norm: str, setting: str,
                  per_backend: dict[str, np.ndarray]) -> str:
    """The fraction of inputs robust at norm ≤ r against r, one line per backend (and threat)."""
    finite = np.concatenate([v[np.isfinite(v)] for v in per_backend.values()] + [np.zeros(1)])
    grid = np.linspace(0, max(float(finite.max()) * 1.05, 1e-6), 200)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for backend, values in sorted(per_backend.items()):
        ax.plot(grid, [(values > r).mean() for r in grid], label=backend,
                linestyle="-" if backend.startswith("art") else "--")
    ax.set_xlabel(f"perturbation size r ({norm})")
    ax.set_ylabel("fraction robust at norm ≤ r")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{model}: {label} {setting}".strip(), fontsize=9)
    fig.tight_layout()
    stem = "_".join(part for part in ("minimal", safe(suite), safe(model), safe(label), norm, safe(setting)) if part)
    name = f"{stem}.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return f"plots/{name}"


ATTACK_TABLES = SECTIONS.add(Section("attacks", markdown=attack_tables, plots=curve_plots, embeds_plots=False),
                             rank=20)
