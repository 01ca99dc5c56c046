"""The linear-response and mean-field section (Cubuk et al. §6.3–6.5): the ``meanfield`` estimates, and their
predicted error curves against the error the suite's FGSM / L2-FGM cells measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.core.formatting import embed, safe
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport


def _num(value: Any, spec: str) -> str:
    """A stored number (``None`` for NaN, ``"inf"`` for ∞ in estimator JSON) formatted, or "–"."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return "∞" if value == "inf" else value
    return format(value, spec)


def meanfield_markdown(estimates: list[dict[str, Any]], plots: list[str]) -> list[str]:
    """One row per ``meanfield`` estimate and direction, then the predicted-vs-measured plots."""
    meanfield = [c for c in estimates if c["record"]["estimator"] == "meanfield"]
    if not meanfield:
        return []
    lines = ["## Linear response and mean field (Cubuk et al. §6.3–6.5)", "",
             "Γ = JᵀJδ/‖Jδ‖ (L2-FGM) or Jᵀsign(Jδ) (FGSM) from one VJP and one linearised forward pass. ε̂_lin: the "
             "first logit crossing under the linear response; ε̂_MF = Δ₁₂/(⟨Γ₂⟩ − ⟨Γ₁⟩) with the rank-indexed "
             "data-set means. Medians over the correctly classified inputs; a_j: the small-Δ density exponent "
             "of the logit gap Δ₁ⱼ (i.i.d. logits predict j − 2). The predicted curves P(ε̂ < ε) ignore the "
             "clipping to [0, 1] that the measured attacks apply, so they sit above the measured error at "
             "large ε.", "",
             "| model | attack | method | median ε̂_lin | median ε̂_MF | ⟨Γ₁⟩, ⟨Γ₂⟩, ⟨Γ₃⟩ | a₂, a₃, a₄ |",
             "|---|---|---|---|---|---|---|"]
    for c in meanfield:
        r = c["record"]
        for name, res in r["result"].items():
            gammas = ", ".join(_num(v, ".3g") for v in res["gamma_mean_by_rank"][:3])
            exps = ", ".join(_num(res["exponents"].get(str(j)), ".2f") for j in (2, 3, 4))
            lines.append(f"| {r['model']} | {'L2-FGM' if name == 'l2_fgm' else 'FGSM'} | {res['method']} | "
                         f"{_num(res['eps_lin_median'], '.4g')} | {_num(res['eps_mf_median'], '.4g')} | {gammas} | "
                         f"{exps} |")
    lines.append("")
    own = [p for p in plots if Path(p).name.startswith("meanfield_")]
    return lines + embed(own) + [""]


def meanfield_plots(estimates: list[dict[str, Any]], done: list[dict[str, Any]], folder: Path) -> list[str]:
    """Every ``meanfield`` estimate's plots, against the attack cells of its suite and model."""
    written = []
    for c in estimates:
        r = c["record"]
        if r["estimator"] == "meanfield":
            stem = f"{r['estimator']}_{safe(r['suite'])}_{safe(r['model'])}"
            written += _meanfield_plots(c, [d for d in done if d["record"]["suite"] == r["suite"]
                                            and d["record"]["model"] == r["model"]], folder, stem)
    return written


#: The measured attack each mean-field direction predicts: (attack, norm).
MEASURED_BY = {"l2_fgm": ("fgsm", "l2"), "fgsm": ("fgsm", "linf")}


def _meanfield_plots(cell: dict[str, Any], done: list[dict[str, Any]], folder: Path, stem: str) -> list[str]:
    """P(ε̂_lin < ε) and P(ε̂_MF < ε) against the error measured by the suite's FGSM / L2-FGM cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    samples = cell["samples"]
    used = np.asarray(samples.get("used", []), bool)
    written = []
    for name in cell["record"]["result"]:
        attack, norm = MEASURED_BY[name]
        measured = sorted((float(d["record"]["setting"]["eps"]), d["record"]["metrics"]["clean_accuracy"]
                           - d["record"]["metrics"]["adversarial_accuracy"], d["record"]["backend"])
                          for d in done if d["record"]["attack"] == attack and d["record"]["norm"] == norm
                          and "eps" in d["record"]["setting"] and d["record"]["threat"] == "none")
        top = max([m[0] for m in measured] + [1e-3])
        grid = np.linspace(0, top * 1.05, 200)
        fig, ax = plt.subplots(figsize=(5.0, 3.6))
        for kind in ("lin", "mf"):
            values = np.array([np.inf if v is None else v for v in samples[f"eps_{kind}[{name}]"]], float)[used]
            ax.plot(grid, [(values < e).mean() for e in grid], label=f"predicted P(ε̂_{kind} < ε)")
        for backend in sorted({m[2] for m in measured}):
            pts = [(e, v) for e, v, b in measured if b == backend]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle="--",
                    label=f"measured {attack} {norm} ({backend})")
        ax.set_xlabel(f"ε ({'L2' if name == 'l2_fgm' else 'L∞'})")
        ax.set_ylabel("adversarial error")
        ax.set_title(f"{cell['record']['model']}: {'L2-FGM' if name == 'l2_fgm' else 'FGSM'}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"meanfield_{stem.removeprefix('meanfield_')}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(f"plots/{path.name}")
    return written



def _markdown(report: SuiteReport) -> list[str]:
    return meanfield_markdown(report.estimates, report.plots)


def _plots(data: ReportData, folder: Path) -> list[str]:
    return meanfield_plots(data.estimates, data.done, folder)


MEANFIELD = SECTIONS.add(Section("meanfield", markdown=_markdown, plots=_plots), rank=52)
