"""Report sections for estimators and fits: JSMA hardness (next to Papernot §5.6), mean-field ε (Cubuk §6.3–6.4),
and power-law fits of the adversarial error over each attack's ε grid (Cubuk §6.1), with their PNGs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.analysis.hardness import PAPER as JSMA_PAPER
from advbridge.evaluations.reports.render import _fmt, _safe

#: Cubuk et al. §6.1: MNIST exponents by attack (our attack name, norm) -> B.
CUBUK_EXPONENTS = {("fgsm", "l2"): 1.1, ("fgsm", "linf"): 1.2, ("pgd", "linf"): 1.3, ("step_ll", "linf"): 2.3}


def _num(value: Any, spec: str) -> str:
    """A stored number (``None`` for NaN, ``"inf"`` for ∞ in estimator JSON) formatted, or "–"."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return "∞" if value == "inf" else value
    return format(value, spec)


def _matrix(rows) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def estimator_plots(estimates: list[dict[str, Any]], done: list[dict[str, Any]], suite_fits: dict[str, dict],
                    folder: Path) -> list[str]:
    """Hardness heatmaps, mean-field curves and power-law plots; paths relative to the report."""
    from advbridge.evaluations.analysis.hardness import HardnessResult, plot_hardness

    written = []
    for c in estimates:
        r = c["record"]
        stem = f"{r['estimator']}_{_safe(r['suite'])}_{_safe(r['model'])}"
        if r["estimator"] == "hardness":
            res = r["result"]
            view = HardnessResult(res["levels"], np.array([]), np.array([]), _matrix(res["hardness"]),
                                  _matrix(res["adversarial_distance"]), res["robustness"], res["success_rate"],
                                  res["mean_distortion_all"], res["mean_distortion_successful"], res["n_samples"],
                                  res["time_s"], res["vjp_calls"], res["vjp_calls_separate_runs"],
                                  saliency_on=res["saliency_on"])
            written += [f"plots/{p.name}" for p in plot_hardness(view, folder, stem)]
        if r["estimator"] == "meanfield":
            written += _meanfield_plots(c, [d for d in done if d["record"]["suite"] == r["suite"]
                                            and d["record"]["model"] == r["model"]], folder, stem)
    for suite, config in suite_fits.items():
        written += _power_law_plots(suite, [c for c in done if c["record"]["suite"] == suite], config, folder)
    return written


def estimator_markdown(suite, estimates: list[dict[str, Any]], done: list[dict[str, Any]],
                       plots: list[str]) -> list[str]:
    """The estimator and power-law sections of ``report.md`` for one suite."""
    lines: list[str] = []
    hardness = [c for c in estimates if c["record"]["estimator"] == "hardness"]
    if hardness:
        lines += ["## JSMA hardness (Papernot et al. §5.5–5.7)", "",
                  "One JSMA pass (pair saliency, θ = +1) per model toward every other class at the largest Υ; every "
                  "smaller Υ is a prefix of it (greedy, deterministic), so the 9 levels of §5.7 and the headline "
                  "Υ = 14.5% come from the same pass. Distortion: fraction of the 784 features changed.", "",
                  "| model | sources × targets | saliency | success | distortion (all) | distortion (successful) | "
                  "robustness R(F) | time (s) | VJPs: one pass / one run per level |", "|---|---|---|---|---|---|---|---|---|"]
        for c in hardness:
            r, res = c["record"], c["record"]["result"]
            lines.append(f"| {r['model']} | {res['n_samples']} × 9 | {res['saliency_on']} | "
                         f"{_fmt(res['success_rate'], True)} | {_fmt(res['mean_distortion_all'], True)} | "
                         f"{_fmt(res['mean_distortion_successful'], True)} | {res['robustness']:.3f} | "
                         f"{res['time_s']:.1f} | {res['vjp_calls']} / {res['vjp_calls_separate_runs']} |")
        lines.append(f"| paper (§5.6, MNIST test set, LeNet) | 10,000 × 9 | probabilities | "
                     f"{_fmt(JSMA_PAPER['success_rate'], True)} | {_fmt(JSMA_PAPER['mean_distortion_all'], True)} | "
                     f"{_fmt(JSMA_PAPER['mean_distortion_successful'], True)} | – | – | – |")
        lines.append("")
        own = [p for p in plots if Path(p).name.startswith("hardness_")]
        lines += [f"![{p}]({p})" for p in own] + [""]
    meanfield = [c for c in estimates if c["record"]["estimator"] == "meanfield"]
    if meanfield:
        lines += ["## Linear response and mean field (Cubuk et al. §6.3–6.5)", "",
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
        lines += [f"![{p}]({p})" for p in own] + [""]
    if suite is not None and suite.power_law:
        lines += _power_law_markdown(suite, done, plots)
    return lines


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


# --------------------------------------------------------------------------- power law
def power_law_groups(done: list[dict[str, Any]], attacks: list[str] | None = None,
                     max_eps: dict[str, float] | None = None) -> dict[tuple, dict[str, Any]]:
    """Per (model, attack label, norm, backend, threat): the ε grid, err_adv(ε) = clean − adversarial (robust)
    accuracy, i.e. the fraction of inputs right when clean and wrong after the attack, and those per-sample
    indicators for the bootstrap (an already-misclassified input never contributes)."""
    groups: dict[tuple, list] = defaultdict(list)
    for c in done:
        r = c["record"]
        if "eps" not in r["setting"] or (attacks and r["attack"] not in attacks):
            continue
        if max_eps and r["norm"] in max_eps and float(r["setting"]["eps"]) > max_eps[r["norm"]]:
            continue
        groups[(r["model"], r["label"], r["attack"], r["norm"], r["backend"], r["threat"])].append(c)
    out = {}
    for key, cells in groups.items():
        cells.sort(key=lambda c: float(c["record"]["setting"]["eps"]))
        eps = np.array([float(c["record"]["setting"]["eps"]) for c in cells])
        err = np.array([c["record"]["metrics"]["clean_accuracy"] - c["record"]["metrics"]["adversarial_accuracy"]
                        for c in cells])
        per_sample = None
        if all("pred_clean" in (c["samples"] or {}) for c in cells) and len({c["record"]["n"] for c in cells}) == 1:
            label = np.asarray(cells[0]["samples"]["label"])
            per_sample = np.stack([((np.asarray(c["samples"]["pred_clean"]) == label)
                                    & (np.asarray(c["samples"]["pred_adv"]) != label)).astype(float) for c in cells], 1)
        out[key] = {"eps": eps, "err": err, "samples": per_sample,
                    "adversarial_accuracy": np.array([c["record"]["metrics"]["adversarial_accuracy"] for c in cells])}
    return out


def fit_groups(done: list[dict[str, Any]], config: dict[str, Any], seed: int = 0) -> dict[tuple, Any]:
    """``fit_power_law`` on every group with at least two usable points (a failed fit is kept as its reason)."""
    from advbridge.evaluations.analysis.power_law import fit_power_law

    fits = {}
    for key, g in power_law_groups(done, config.get("attacks"), config.get("max_eps")).items():
        try:
            fits[key] = fit_power_law(g["eps"], g["err"], samples=g["samples"], n_boot=int(config.get("n_boot", 1000)),
                                      seed=seed)
        except ValueError as err:
            fits[key] = str(err)
    return fits


def _power_law_markdown(suite, done: list[dict[str, Any]], plots: list[str]) -> list[str]:
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
    own = [p for p in plots if Path(p).name.startswith(f"powerlaw_{_safe(suite.name)}_")
           or Path(p).name.startswith(f"models_{_safe(suite.name)}_")]
    lines += [f"![{p}]({p})" for p in own] + [""]
    return lines


def _power_law_plots(suite: str, done: list[dict[str, Any]], config: dict[str, Any], folder: Path) -> list[str]:
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
            path = folder / f"{kind}_{_safe(suite)}_{_safe(label)}_{norm}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(f"plots/{path.name}")
    return written
