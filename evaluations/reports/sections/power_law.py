"""The power-law section (Cubuk et al. §6.1): A·ε^B fits of the adversarial error over each attack's ε grid, next
to the paper's MNIST exponents, with log-log plots and accuracy-under-attack curves per model."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.core.formatting import embed, safe
from advbridge.evaluations.reports.cells import fit_groups, power_law_groups
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport
from advbridge.evaluations.suites.suite import Suite

#: Cubuk et al. §6.1: MNIST exponents by attack (our attack name, norm) -> B.
CUBUK_EXPONENTS = {("fgsm", "l2"): 1.1, ("fgsm", "linf"): 1.2, ("pgd", "linf"): 1.3, ("step_ll", "linf"): 2.3}


def power_law_markdown(suite: Suite, done: list[dict[str, Any]], plots: list[str]) -> list[str]:
    """One row per fitted group (model, attack, norm, backend, threat), then the plots."""
    fits = fit_groups(done, suite.power_law, suite.seed)
    lines = ["## Power law of the adversarial error (Cubuk et al. §6.1)", "",
             "err_adv(ε) = clean accuracy − robust accuracy under attack (the fraction of inputs classified correctly "
             "when clean and wrongly after the attack; already-misclassified inputs never count), fitted as A·ε^B by "
             "least squares in log-log over the "
             "grid points with err > 0" + "".join(f", ε ≤ {v} ({k})" for k, v in suite.power_law.get("max_eps", {}).items())
             + "; 95% bootstrap interval of B over the attacked inputs.", "",
             "| model | attack | norm | backend | threat | points | A | B | B 95% CI | paper B (MNIST) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, label, attack, norm, backend, threat), fit in sorted(fits.items(), key=lambda kv: kv[0]):
        paper = CUBUK_EXPONENTS.get((attack, norm))
        paper_text = f"{paper}" if paper is not None else "–"
        if isinstance(fit, str):
            lines.append(f"| {model} | {label} | {norm} | {backend} | {threat} | – | – | – | {fit} | {paper_text} |")
            continue
        lines.append(f"| {model} | {label} | {norm} | {backend} | {threat} | {fit.n_points} | {fit.A:.3g} | "
                     f"{fit.B:.2f} | [{fit.B_ci[0]:.2f}, {fit.B_ci[1]:.2f}] | {paper_text} |")
    lines.append("")
    own = [p for p in plots if Path(p).name.startswith(f"powerlaw_{safe(suite.name)}_")
           or Path(p).name.startswith(f"models_{safe(suite.name)}_")]
    return lines + embed(own) + [""]


def power_law_plots(suite: str, done: list[dict[str, Any]], config: dict[str, Any], folder: Path) -> list[str]:
    """Log-log err vs ε with the fits, per attack; and accuracy under attack vs ε with one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fits = fit_groups(done, config)
    groups = power_law_groups(done, config.get("attacks"))
    by_attack: dict[tuple, list] = defaultdict(list)
    for key in groups:
        by_attack[(key[1], key[3])].append(key)
    written = []
    for (label, norm), keys in sorted(by_attack.items()):
        for kind in ("powerlaw", "models"):
            fig, ax = plt.subplots(figsize=(5.2, 3.8))
            for key in sorted(keys):
                g = groups[key]
                name = f"{key[0]} ({key[4]})" if key[5] == "none" else f"{key[0]} ({key[4]}, {key[5]})"
                if kind == "models":
                    ax.plot(g["eps"], g["adversarial_accuracy"], marker="o", label=name)
                    continue
                keep = g["err"] > 0
                points = ax.loglog(g["eps"][keep], g["err"][keep], marker="o", linestyle="none", label=name)
                fit = fits.get(key)
                if fit is not None and not isinstance(fit, str):
                    grid = np.geomspace(g["eps"][keep].min(), g["eps"][keep].max(), 50)
                    ax.loglog(grid, fit.A * grid ** fit.B, color=points[0].get_color(), linewidth=1,
                              label=f"B = {fit.B:.2f}")
            ax.set_xlabel(f"ε ({norm})")
            ax.set_ylabel("adversarial error" if kind == "powerlaw" else "accuracy under attack")
            ax.set_title(f"{suite}: {label} ({norm})", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"{kind}_{safe(suite)}_{safe(label)}_{norm}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(f"plots/{path.name}")
    return written


def _markdown(report: SuiteReport) -> list[str]:
    suite = report.suite
    return power_law_markdown(suite, report.done, report.plots) if suite is not None and suite.power_law else []


def _plots(data: ReportData, folder: Path) -> list[str]:
    written = []
    for name, suite in data.suites.items():
        if suite and suite.power_law:
            written += power_law_plots(name, [c for c in data.done if c["record"]["suite"] == name],
                                       suite.power_law, folder)
    return written


POWER_LAW = SECTIONS.add(Section("power_law", markdown=_markdown, plots=_plots), rank=54)
