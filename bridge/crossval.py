"""`crossval`: run one spec on several backends and compare them sample by sample, with flags and causes."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_write_text
from .model import Model
from .result import DEFINITIONS, AttackResult
from .run import run_attack
from .spec import AttackSpec
from .stats import ALPHA, mcnemar_p, median_interval, wilcoxon_p
from .validation import check_inputs, check_labels

#: Tolerances behind the flags.
SUCCESS_GAP = 0.05        # success rates differ by more than 5 points
NORM_GAP = 0.05           # median norms differ by more than 5% at equal success
OUTPUT_TOLERANCE = 1e-5   # a deterministic shared algorithm must agree to this (max |Δ|)


@dataclass
class Flag:
    """One crossval finding, with its known cause and upstream issue when it matches one."""

    code: str
    message: str
    cause: str | None = None
    upstream: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.cause:
            out["cause"] = self.cause
        if self.upstream:
            out["upstream"] = list(self.upstream)
        return out


def pair_key(a: str, b: str, order: list[str]) -> tuple[str, str]:
    """The key of the pair ``{a, b}`` in ``stronger_by_pair``: the two backends in ``order``'s order."""
    first, second = sorted((a, b), key=order.index)
    return first, second


@dataclass
class CrossvalReport:
    """Per-backend results of one spec, their per-sample agreement and the flags raised."""

    spec: AttackSpec
    params: dict[str, Any]
    results: dict[str, AttackResult]
    agreement: float
    flags: list[Flag] = field(default_factory=list)
    #: The stronger backend at equal budget per pair ``(a, b)`` in backend order; ``None`` for a tie.
    stronger_by_pair: dict[tuple[str, str], str | None] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return next(iter(self.results.values())).n

    @property
    def stronger(self) -> str | None:
        """The backend stronger than every other one (with two backends: the pair's winner); ``None`` otherwise."""
        names = list(self.results)
        for name in names:
            if all(self.stronger_by_pair.get(pair_key(name, other, names)) == name
                   for other in names if other != name):
                return name
        return None

    @property
    def already_misclassified(self) -> int:
        """Inputs the model gets wrong when clean (the same for every backend: one model judges them all)."""
        return int(next(iter(self.results.values())).misclassified.sum())

    def _stronger_text(self) -> str:
        if len(self.results) <= 2:
            return self.stronger or "tie"
        return ", ".join(f"{a} vs {b}: {w or 'tie'}" for (a, b), w in self.stronger_by_pair.items())

    def to_json(self) -> dict[str, Any]:
        """The ``crossval.json`` document (its keys are a stable contract)."""
        return {
            "attack": self.spec.name,
            "norm": self.spec.norm,
            "params": _jsonable(self.params),
            "n": self.n,
            "backends": {name: _jsonable(r.summary()) for name, r in self.results.items()},
            "agreement": self.agreement,
            "flags": [f.to_dict() for f in self.flags],
            "already_misclassified": self.already_misclassified,
            "stronger": self.stronger,
            "stronger_by_pair": {f"{a}/{b}": w for (a, b), w in self.stronger_by_pair.items()},
        }

    def table(self) -> str:
        """A plain-text table for the terminal."""
        head = (f"{'backend':<9} {'success':>8} {'med L0':>8} {'med L1':>8} {'med L2':>8} {'med Linf':>9} "
                f"{'time s':>8}")
        lines = [(f"{self.spec}  n={self.n}, {self.already_misclassified} already misclassified "
                  "(never a success)"), head, "-" * len(head)]
        for name, r in self.results.items():
            s = r.summary()
            lines.append(f"{name:<9} {_pct(s['success_rate']):>8} {s['median_l0']:>8.1f} {s['median_l1']:>8.4f} "
                         f"{s['median_l2']:>8.4f} {s['median_linf']:>9.4f} {s['time_s']:>8.2f}")
        lines.append(f"agreement {_pct(self.agreement)}   stronger: {self._stronger_text()}")
        for key, value in self.ratios.items():
            lines.append(f"{key}: {value:.3f}")
        lines += [f"! {f.message}" + (f"  [known: {f.cause}]" if f.cause else "") for f in self.flags]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The ``crossval.md`` report."""
        lines = [f"## `{self.spec.name}` ({self.spec.norm}), n = {self.n}", "",
                 "Parameters (shared by every backend): " + ", ".join(
                     f"`{k}={v}`" for k, v in sorted(self.params.items())), "",
                 (f"Already misclassified when clean: {self.already_misclassified} of {self.n} (never a success; "
                  "success rates are over the correctly classified inputs)."), "",
                 "| backend | success | median L0 | median L1 | median L2 | median L∞ | time (s) |",
                 "|---|---|---|---|---|---|---|"]
        for name, r in self.results.items():
            s = r.summary()
            lines.append(f"| {name} | {_pct(s['success_rate'])} | {s['median_l0']:.1f} | {s['median_l1']:.4f} "
                         f"| {s['median_l2']:.4f} | {s['median_linf']:.4f} | {s['time_s']:.2f} |")
        lines += ["", (f"Per-sample agreement on success (correctly classified inputs): **{_pct(self.agreement)}**. "
                       f"Stronger at equal budget: **{self._stronger_text()}**.")]
        for key, value in self.ratios.items():
            lines.append(f"- {key}: {value:.3f}")
        if self.flags:
            lines += ["", "Flags:", ""]
            for f in self.flags:
                lines.append(f"- **{f.code}**: {f.message}")
                if f.cause:
                    lines.append(f"  - known cause: {f.cause}")
                for url in f.upstream:
                    lines.append(f"  - upstream: {url}")
        else:
            lines += ["", "No flags."]
        lines += ["", DEFINITIONS]
        return "\n".join(lines) + "\n"

    def save(self, directory) -> None:
        """Write ``crossval.json`` and ``crossval.md`` into ``directory``."""
        out = Path(directory)
        atomic_write_text(out / "crossval.json", json.dumps(self.to_json(), indent=2))
        atomic_write_text(out / "crossval.md", self.to_markdown())


def crossval(model: Model, x, y, spec: AttackSpec, backends: tuple[str, ...] | list[str] = ("art", "foolbox"), *,
             seed: int = 0, batch_size: int = 128, progress: bool = True) -> CrossvalReport:
    """Run ``spec`` on each backend with identical inputs, seed and parameters, and compare.

    :param model: The wrapped model.
    :param x: Inputs (NCHW, within bounds).
    :param y: True labels.
    :param spec: The attack.
    :param backends: Two or more backends, e.g. ``("art", "foolbox")``.
    :param seed: Seed for every backend run.
    :param batch_size: Inputs per toolkit call.
    :param progress: Show progress bars.
    """
    if isinstance(backends, str) or not isinstance(backends, (tuple, list)):
        raise TypeError(f"backends must be a tuple or list of backend names, got {backends!r}")
    backends = tuple(backends)
    if not backends or len(set(backends)) != len(backends):
        raise ValueError(f"backends must name distinct backends, got {list(backends)}")
    if not isinstance(model, Model):
        raise TypeError(f"model must be an advbridge.bridge.Model, got {type(model).__name__}")
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    x_t = check_inputs(x, model, "x")
    y_t = check_labels(y, len(x_t), model.nb_classes, "y")
    params = spec.resolved_params()
    for backend in backends:  # fail before any work when a backend cannot honour the spec
        spec.definition.check_backend(backend, spec.norm, params, spec.is_targeted)
    results = {b: run_attack(model, x_t, y_t, spec, b, seed=seed, batch_size=batch_size, progress=progress)
               for b in backends}
    agreement = agreement_rate(results)
    report = CrossvalReport(spec=spec, params=params, results=results, agreement=agreement)
    compare(report, model.bounds)
    return report


def aa_check(model: Model, x, y, spec: AttackSpec, backend: str = "art", seeds: tuple[int, int] = (0, 1), *,
             batch_size: int = 128, progress: bool = True) -> CrossvalReport:
    """The A/A check of a random attack: one backend run with two seeds, compared with the statistics crossval uses
    for random attacks. Its flags are false alarms by construction (the same implementation), so over many seed
    pairs they should be raised at most ``stats.ALPHA`` of the time.

    :param seeds: The two seeds; the results are keyed ``"<backend>@<seed>"``.
    """
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec must be an AttackSpec, got {type(spec).__name__}")
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds must be two different integers, got {seeds!r}")
    if not is_random(spec, spec.resolved_params()):
        raise ValueError(f"aa_check needs a random attack (stochastic, or random_start=True); {spec} is deterministic")
    results = {f"{backend}@{s}": run_attack(model, x, y, spec, backend, seed=s, batch_size=batch_size,
                                            progress=progress) for s in seeds}
    report = CrossvalReport(spec=spec, params=spec.resolved_params(), results=results,
                            agreement=agreement_rate(results))
    (a, ra), (b, rb) = results.items()
    norm_key = "l2" if spec.norm == "l2" or not spec.definition.minimization else spec.norm
    report.stronger_by_pair[(a, b)] = _statistical_flags(report, a, ra, b, rb, norm_key, spec.definition.minimization)
    return report


def agreement_rate(results: dict[str, AttackResult]) -> float:
    """Fraction of the correctly classified inputs on which every backend's success agrees (NaN when none is;
    already-misclassified inputs are failures everywhere, so they would agree by definition)."""
    stacked = np.stack([r.success for r in results.values()])
    correct = ~np.any(np.stack([r.misclassified for r in results.values()]), 0)
    agree = (stacked == stacked[0]).all(0)
    return float(agree[correct].mean()) if correct.any() else float("nan")


def compare(report: CrossvalReport, bounds: tuple[float, float] | None = None) -> None:
    """Fill ``report.flags``, ``stronger_by_pair`` (every pair) and ``ratios``; checks needing ``x_adv`` are skipped
    without it."""
    spec, attack = report.spec, report.spec.definition
    norm_key = "l2" if spec.norm == "l2" or not attack.minimization else spec.norm
    flags = report.flags
    for name, r in report.results.items():
        bad = int(r.nonfinite.sum())
        if bad:
            flags.append(Flag("nonfinite", f"{name}: non-finite values in x_adv for {bad} of {r.n} samples "
                                           "(counted as failed, replaced by the input)"))
        differ = attack.differing_toolkit_defaults(name, spec.norm, report.params)
        if differ:
            text = ", ".join(f"{k}={own!r} (shared {shared!r})" for k, (own, shared) in sorted(differ.items()))
            flags.append(Flag("defaults_differ", f"{name}'s own defaults would differ from the shared ones: {text}"))
    random = is_random(spec, report.params)
    for (a, ra), (b, rb) in itertools.combinations(report.results.items(), 2):
        gap = ra.success_rate - rb.success_rate
        if random:
            verdict = _statistical_flags(report, a, ra, b, rb, norm_key, attack.minimization)
        elif abs(gap) > SUCCESS_GAP:
            flags.append(Flag("success_gap", f"success differs by more than {100 * SUCCESS_GAP:.0f} points: "
                                             f"{a} {100 * ra.success_rate:.1f}% vs {b} {100 * rb.success_rate:.1f}%"))
        common = ra.success & rb.success
        ma = ra.median_norm(norm_key, common)
        mb = rb.median_norm(norm_key, common)
        if common.any():
            report.ratios[f"median {norm_key} ratio {a}/{b} (common successes)"] = ma / mb if mb > 0 else float("nan")
            if not random and attack.minimization and abs(gap) <= SUCCESS_GAP and \
                    abs(ma - mb) > NORM_GAP * min(ma, mb):
                flags.append(Flag("norm_gap", f"median {norm_key} differs by more than {100 * NORM_GAP:.0f}% at "
                                              f"equal success: {a} {ma:.4g} vs {b} {mb:.4g} on {int(common.sum())} "
                                              "samples both broke"))
        report.stronger_by_pair[(a, b)] = verdict if random else _stronger(a, b, gap, ma, mb, attack.minimization)
        if attack.same_algorithm and not report.params.get("random_start", False) and ra.x_adv is not None \
                and rb.x_adv is not None:
            diff = float((ra.x_adv - rb.x_adv).abs().max())
            report.ratios[f"max |x_adv {a} - x_adv {b}|"] = diff
            if diff > OUTPUT_TOLERANCE:
                flags.append(Flag("outputs_differ", f"deterministic attack and outputs differ by more than "
                                                    f"{OUTPUT_TOLERANCE:g}: max |Δ| = {diff:.3g} ({a} vs {b})"))
        report.ratios[f"time ratio {a}/{b}"] = ra.time_s / max(rb.time_s, 1e-9)
    for name, r in report.results.items():
        if bounds is None or r.x_adv is None:
            continue
        low, high = bounds
        if float(r.x_adv.min()) < low - 1e-5 or float(r.x_adv.max()) > high + 1e-5:
            flags.append(Flag("out_of_bounds", f"{name}: x_adv leaves the model's bounds [{low}, {high}]"))
    for f in flags:
        causes = [c for c in attack.known_causes
                  if f.code in c.flags and (c.norms is None or spec.norm in c.norms)]
        if causes:
            f.cause = "; ".join(c.cause for c in causes)
            f.upstream = tuple(dict.fromkeys(u for c in causes for u in c.upstream))


def is_random(spec: AttackSpec, params: dict[str, Any]) -> bool:
    """Whether two runs of ``spec`` may differ by chance: a stochastic attack, or a random start."""
    return spec.definition.stochastic or bool(params.get("random_start", False))


def _statistical_flags(report: CrossvalReport, a: str, ra: AttackResult, b: str, rb: AttackResult, norm_key: str,
                       minimization: bool) -> str | None:
    """Flags for a random attack: McNemar on per-sample success and (minimisation attacks) Wilcoxon on the paired
    norms of the inputs both broke, each at ``ALPHA / 2``; the p-values and the medians' 95% intervals go into
    ``report.ratios``. Returns the stronger backend when a test finds a difference, else ``None`` (a tie)."""
    correct = ~(ra.misclassified | rb.misclassified)
    p_success = mcnemar_p(ra.success, rb.success, correct)
    report.ratios[f"McNemar p {a}/{b} (per-sample success)"] = p_success
    if p_success < ALPHA / 2:
        report.flags.append(Flag("success_gap", f"success differs beyond chance (McNemar p = {p_success:.3g} < "
                                                f"{ALPHA / 2:g}): {a} {100 * ra.success_rate:.1f}% vs {b} "
                                                f"{100 * rb.success_rate:.1f}%"))
        return a if ra.success_rate > rb.success_rate else b
    if not minimization:
        return None
    common = ra.success & rb.success
    na, nb = ra.norms[norm_key][common], rb.norms[norm_key][common]
    p_norm = wilcoxon_p(na, nb)
    report.ratios[f"Wilcoxon p {a}/{b} (median {norm_key}, common successes)"] = p_norm
    for name, values in ((a, na), (b, nb)):
        low, high = median_interval(values)
        report.ratios[f"median {norm_key} {name} 95% interval low"] = low
        report.ratios[f"median {norm_key} {name} 95% interval high"] = high
    if p_norm < ALPHA / 2:
        report.flags.append(Flag("norm_gap", f"median {norm_key} differs beyond chance (Wilcoxon p = {p_norm:.3g} < "
                                             f"{ALPHA / 2:g}): {a} {float(np.median(na)):.4g} vs {b} "
                                             f"{float(np.median(nb)):.4g} on {int(common.sum())} samples both broke"))
        return a if float(np.median(na)) < float(np.median(nb)) else b
    return None


def _stronger(a: str, b: str, gap: float, ma: float, mb: float, minimization: bool) -> str | None:
    """Higher success wins; at equal success (within the gap) a minimisation attack wins on smaller norm."""
    if minimization and abs(gap) <= SUCCESS_GAP and np.isfinite(ma) and np.isfinite(mb):
        if abs(ma - mb) > NORM_GAP * min(ma, mb):
            return a if ma < mb else b
        return None
    if gap != 0:
        return a if gap > 0 else b
    return None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if np.isfinite(value) else "–"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj
