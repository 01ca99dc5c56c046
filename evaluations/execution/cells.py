"""Cell computation: the inputs a cell needs (`Resources`, `CellInputs`), an attack cell's record and metrics
(`compute_cell`, `attack_metrics`) and an estimator cell's (`compute_estimator`). Executors call these."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advbridge.bridge import Model, run_attack
from advbridge.bridge.result import judge_success

from advbridge.evaluations.core.metrics import ALWAYS_RECORDED
from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.systems.defended import DefenseBuilder, defense_metrics
from advbridge.evaluations.suites.suite import Cell, EstimatorCell, Suite
from advbridge.evaluations.zoo.resolve import resolve_model
from advbridge.evaluations.estimators.base import ESTIMATORS

logger = logging.getLogger(__name__)

ZERO_GRADIENT_FRACTION = 0.01


@dataclass
class Resources:
    """Models, data and per-model sanity checks, loaded once per run and shared by its cells."""

    suite: Suite
    device: str | None = None
    data_root: str | None = None
    _data: Dataset | None = None
    _models: dict[str, Model] = field(default_factory=dict)
    _model_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    _slices: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor, np.ndarray]] = field(default_factory=dict)
    _sanity: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    _defense: DefenseBuilder | None = None
    _systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    _threat_models: dict[tuple[str, str], Model] = field(default_factory=dict)
    _clean_outputs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    @property
    def data(self) -> Dataset:
        if self._data is None:
            self._data = load_dataset(self.suite.data["dataset"], root=self.data_root)
        return self._data

    def model(self, name: str) -> Model:
        if name not in self._models:
            model, info = resolve_model(name, self.suite.data["dataset"], self.suite.seed, self.device, self.data,
                                        self.data_root)
            self._models[name], self._model_info[name] = model, info
        return self._models[name]

    def model_info(self, name: str) -> dict[str, Any]:
        self.model(name)
        return self._model_info[name]

    def slice(self, model_name: str, n: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """The cell's inputs: the first ``n`` of a seeded permutation of the split (correct ones if asked)."""
        key = (model_name if self.suite.data["correct_only"] else "", n)
        if key not in self._slices:
            x, y = self.data.split(self.suite.data["split"])
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.suite.data["seed"]))
            if self.suite.data["correct_only"]:
                model = self.model(model_name)
                order = order[(model.predict(x[order]) == y[order]).nonzero().flatten()]
            idx = order[:n]
            self._slices[key] = (x[idx], y[idx], idx.numpy())
        return self._slices[key]

    @property
    def defense(self) -> DefenseBuilder:
        if self._defense is None:
            self._defense = DefenseBuilder(self.suite.defense, self.suite.defenses, self.data,
                                           self.suite.data["dataset"], self.suite.seed, self.device)
        return self._defense

    def systems(self, model_name: str) -> dict[str, Any]:
        """The suite's defended systems around ``model_name`` (thresholds fitted on the validation split)."""
        if not self.suite.defenses:
            return {}
        if model_name not in self._systems:
            self._systems[model_name] = self.defense.systems(self.model(model_name))
        return self._systems[model_name]

    def attack_model(self, model_name: str, threat: str) -> Model:
        key = (model_name, threat)
        if key not in self._threat_models:
            self._threat_models[key] = self.defense.attack_model(self.model(model_name), threat)
        return self._threat_models[key]

    def clean_outputs(self, model_name: str, n: int) -> dict[str, Any]:
        """Each system's outputs on the cell's clean inputs (for false positives and clean accuracy)."""
        key = (model_name, n)
        if key not in self._clean_outputs:
            x, _, _ = self.slice(model_name, n)
            self._clean_outputs[key] = {name: _reseeded(system, self.suite.seed).run(x)
                                        for name, system in self.systems(model_name).items()}
        return self._clean_outputs[key]

    def sanity_flags(self, model_name: str, n: int) -> list[str]:
        """AutoAttack-style checks on the model itself: zero input gradients, randomised predictions."""
        key = (model_name, n)
        if key not in self._sanity:
            model = self.model(model_name)
            x, y, _ = self.slice(model_name, n)
            flags = []
            xg = x.to(model.device).detach().clone().requires_grad_(True)  # never flag the shared slice
            loss = torch.nn.functional.cross_entropy(model.pipeline(xg), y.to(model.device), reduction="sum")
            grad, = torch.autograd.grad(loss, xg)
            zero = float((grad.flatten(1).abs().amax(1) == 0).float().mean())
            if zero > ZERO_GRADIENT_FRACTION:
                flags.append(f"zero_gradient: the input gradient is zero on {100 * zero:.1f}% of inputs "
                             "(gradient masking or saturation; gradient attacks may be unreliable)")
            if not torch.equal(model.logits(x), model.logits(x)):
                flags.append("randomized: two predictions on the same input differ (use EOT-style attacks)")
            self._sanity[key] = flags
        return self._sanity[key]


@dataclass(frozen=True)
class CellInputs:
    """Everything a cell needs, resolved on the driver so that an executor can ship it elsewhere."""

    model: Model
    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray
    sanity_flags: tuple[str, ...]
    model_info: dict[str, Any]
    attack_model: Model | None = None   # what the attack runs on (the model itself unless a threat says otherwise)
    systems: dict[str, Any] = field(default_factory=dict)          # defended systems to evaluate x_adv on
    clean_outputs: dict[str, Any] = field(default_factory=dict)    # their outputs on the clean inputs


def cell_inputs(cell: Cell, resources: Resources) -> CellInputs:
    """Resolve a cell's model, data slice and model-level sanity flags."""
    x, y, idx = resources.slice(cell.model, cell.n)
    defended = cell.threat != "none"
    return CellInputs(resources.model(cell.model), x, y, idx, tuple(resources.sanity_flags(cell.model, cell.n)),
                      resources.model_info(cell.model),
                      resources.attack_model(cell.model, cell.threat) if defended else None,
                      resources.systems(cell.model) if defended else {},
                      resources.clean_outputs(cell.model, cell.n) if defended else {})


def compute_cell(cell: Cell, inputs: CellInputs, key: str, seed: int, metric_names: tuple[str, ...],
                 batch_size: int = 128, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one cell; return its record (metrics, flags) and its per-sample arrays. Pure: no store, no files."""
    model, x, y = inputs.model, inputs.x, inputs.y
    attacked = inputs.attack_model if inputs.attack_model is not None else model
    result = run_attack(attacked, x, y, cell.spec, cell.backend, seed=seed, batch_size=batch_size, progress=progress)
    metrics = attack_metrics(model, x, y, result, batch_size)
    clean_pred, adv_pred = metrics.pop("_pred_clean"), metrics.pop("_pred_adv")
    y_np = y.numpy()
    norms = result.norms
    metrics = {k: v for k, v in metrics.items() if k in metric_names or k in ALWAYS_RECORDED}
    samples_extra: dict[str, Any] = {}
    for name, system in inputs.systems.items():
        outputs = _reseeded(system, seed).run(result.x_adv, batch_size)
        metrics.update(defense_metrics(name, outputs, inputs.clean_outputs[name], y_np))
        for det, scores in outputs.scores.items():  # for ROC curves: adversarial vs clean scores per detector
            samples_extra[f"scores[{name}/{det}]"] = scores.tolist()
            samples_extra[f"clean_scores[{name}/{det}]"] = inputs.clean_outputs[name].scores[det].tolist()
            samples_extra[f"threshold[{name}/{det}]"] = float(system.named_detectors[det].threshold)
        samples_extra[f"rejected[{name}]"] = outputs.rejected.tolist()
    flags = list(inputs.sanity_flags)
    if result.nonfinite.any():
        flags.append(f"nonfinite: {int(result.nonfinite.sum())} outputs held NaN/inf (counted as failed)")
    record = {
        "suite": cell.suite, "cell": key, "model": cell.model, "attack": cell.spec.name, "norm": cell.spec.norm,
        "backend": cell.backend, "label": cell.label, "defaults": cell.defaults, "setting": cell.setting,
        "params": _plain(result.params), "targeted": cell.spec.to_dict()["targeted"], "n": len(x),
        "threat": cell.threat,
        "metrics": metrics, "flags": flags, "time_s": result.time_s, "model_info": inputs.model_info,
    }
    samples = {"index": inputs.index.tolist(), "label": y_np.tolist(), "pred_clean": clean_pred.tolist(),
               "pred_adv": adv_pred.tolist(),
               **({"target": result.targets.tolist()} if result.targets is not None else {}),
               "success": result.success.tolist(), "already_misclassified": result.misclassified.tolist(),
               "nonfinite": result.nonfinite.tolist(), **{k: v.tolist() for k, v in norms.items()}, **samples_extra}
    return record, samples


def attack_metrics(model: Model, x: torch.Tensor, y: torch.Tensor, result, batch_size: int = 128) -> dict[str, Any]:
    """A cell's metrics under the one definition of success (``bridge.result.judge_success``).

    Success, its rate and the norms of successes come from ``result``, judged on the model the attack ran on; the
    accuracies are the bare ``model``'s on the same inputs:

    - ``clean_accuracy``: correct when clean, over all inputs;
    - ``adversarial_accuracy`` (robust accuracy): correct both clean and on ``x_adv``, over all inputs (an input
      already misclassified when clean counts as wrong); ``error_rate`` = 1 − ``adversarial_accuracy``;
    - ``already_misclassified``: the count of inputs the attacked model gets wrong when clean (never a success);
    - ``success_rate``: successes over the correctly classified inputs;
    - ``mean_confidence_on_errors``: the mean top probability on the adversarial inputs the model gets wrong;
    - ``median_*`` and ``mean_l2``: over successes; ``distortion_successful``: the fraction of features changed,
      over successes; ``distortion_all``: the same over every correctly classified input (Papernot's "all").

    :param model: The bare model (the accuracies' judge).
    :param x: Clean inputs.
    :param y: True labels.
    :param result: The ``AttackResult`` of the cell.
    :param batch_size: Inputs per forward pass.
    :return: The metrics, plus ``_pred_clean`` and ``_pred_adv`` (the bare model's predictions) for the samples.
    """
    clean_pred = model.predict(x, batch_size).numpy()
    adv_probs = torch.softmax(model.logits(result.x_adv, batch_size), 1).cpu()
    adv_pred = adv_probs.argmax(1).numpy()
    y_np = y.numpy()
    robust = judge_success(y_np, clean_pred, adv_pred)["robust"]
    errors = adv_pred != y_np
    norms = result.norms
    success = result.success & ~result.misclassified
    correct = ~result.misclassified
    features = int(np.prod(x.shape[1:]))
    return {
        "clean_accuracy": float((clean_pred == y_np).mean()),
        "adversarial_accuracy": float(robust.mean()),
        "error_rate": float(1.0 - robust.mean()),
        "already_misclassified": int(result.misclassified.sum()),
        "success_rate": _nan_to_none(result.success_rate),
        "mean_confidence_on_errors": float(adv_probs.max(1).values.numpy()[errors].mean()) if errors.any() else None,
        "median_l0": _nan_to_none(result.median_norm("l0")),
        "median_l1": _nan_to_none(result.median_norm("l1")),
        "median_l2": _nan_to_none(result.median_norm("l2")),
        "median_linf": _nan_to_none(result.median_norm("linf")),
        "mean_l2": float(norms["l2"][success].mean()) if success.any() else None,
        # Papernot's distortion: the fraction of input features changed, over the inputs attacked (the correctly
        # classified ones) and over successes.
        "distortion_all": float(norms["l0"][correct].mean() / features) if correct.any() else None,
        "distortion_successful": float(norms["l0"][success].mean() / features) if success.any() else None,
        "_pred_clean": clean_pred, "_pred_adv": adv_pred,
    }


def compute_estimator(cell: EstimatorCell, resources: Resources, key: str, seed: int,
                      progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one estimator cell; return its record and per-sample arrays."""
    model = resources.model(cell.model)
    x, y, idx = resources.slice(cell.model, cell.n)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    metrics, result, samples = ESTIMATORS[cell.name].compute(model, x, y, dict(cell.params), progress=progress,
                                                             data_root=resources.data_root)
    record = {"kind": "estimator", "suite": cell.suite, "cell": key, "model": cell.model, "estimator": cell.name,
              "label": cell.label, "n": len(x), "params": dict(cell.params), "metrics": metrics, "result": result,
              "time_s": time.perf_counter() - t0, "model_info": resources.model_info(cell.model)}
    return record, {"index": idx.tolist(), "label": y.tolist(), **samples}


def _reseeded(system, seed: int):
    """Randomized systems restart their draws per evaluation, so a cell's numbers never depend on cell order."""
    return system.reseed(seed) if hasattr(system, "reseed") else system


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in params.items()}
