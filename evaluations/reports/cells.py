"""What the report sections (and the CLI) read from stored cells: already-misclassified inputs, the Kos success
matrices of one cell, and the power-law groups and fits of a suite's ε grids."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from advbridge.evaluations.analysis.kos import as_matrices
from advbridge.evaluations.analysis.power_law import fit_power_law


def stored_misclassified(record: dict[str, Any], samples: dict[str, Any]) -> np.ndarray:
    """A stored cell's already-misclassified inputs: the stored array, or for cells stored before it existed the
    bare model's clean mistakes (the attacked model's when there is no threat; all False without predictions)."""
    if "already_misclassified" in samples:
        return np.asarray(samples["already_misclassified"], bool)
    if "pred_clean" in samples and "label" in samples:
        return np.asarray(samples["pred_clean"]) != np.asarray(samples["label"])
    return np.zeros(record["n"], bool)


def cell_matrices(cell: dict[str, Any]) -> dict[str, np.ndarray]:
    """The AS matrices of one stored Kos cell: inputs the classifier gets wrong when clean are already
    misclassified (never a success, left out of the rates)."""
    s = cell["samples"]
    return as_matrices(s["label"], s["target"], s["pred_adv"], pred_clean=s.get("pred_clean"))


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
    fits: dict[tuple, Any] = {}
    for key, g in power_law_groups(done, config.get("attacks"), config.get("max_eps")).items():
        try:
            fits[key] = fit_power_law(g["eps"], g["err"], samples=g["samples"], n_boot=int(config.get("n_boot", 1000)),
                                      seed=seed)
        except ValueError as err:
            fits[key] = str(err)
    return fits
