"""The suite runner: expand a suite into cells, skip finished ones, compute the rest and commit each at once.

A killed run loses at most the cell in flight; rerunning with the same ``--out`` resumes. The local
executor computes cells in this process; ``compute_cell`` is the unit an executor runs.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from advbridge.bridge import Model, run_attack
from advbridge.bridge.result import judge_success, library_versions

from advbridge.evaluations.data.datasets import Dataset, load_dataset
from advbridge.evaluations.systems.defended import DefenseBuilder, defense_metrics
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.suite import Cell, EstimatorCell, Suite, config_key
from advbridge.evaluations.zoo.resolve import resolve_model

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
#: A sanity flag is raised when more than this fraction of inputs has an all-zero input gradient.
ZERO_GRADIENT_FRACTION = 0.01
#: Metrics every attack cell records whatever the suite's ``metrics`` list (the definitions need them).
ALWAYS_RECORDED = ("clean_accuracy", "adversarial_accuracy", "already_misclassified")


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
    samples_extra: dict[str, list] = {}
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


@dataclass
class RunSummary:
    suite: str
    total: int
    computed: int
    skipped: int
    failed: int
    wall_time_s: float
    out: Path
    #: Cells left out because their data was not supplied (``--data-root``), one message each; run them later.
    not_run: list[str] = field(default_factory=list)


def run_suite(suite: Suite, out: str | Path, *, force: bool = False, executor: str = "local",
              device: str | None = None, batch_size: int = 128, data_root: str | None = None,
              progress: bool = True, write_report: bool = True, address: str | None = None,
              max_retries: int | None = None) -> RunSummary:
    """Run every unfinished cell of ``suite`` into ``out/results.db`` and render the reports.

    :param suite: A loaded suite.
    :param out: Output folder; the store is ``out/results.db``.
    :param force: Recompute cells that are already finished.
    :param executor: ``local`` (in-process) or ``ray`` (cells as Ray tasks; needs ``advbridge[ray]``).
    :param device: Device for models and attacks (the local executor and the driver).
    :param batch_size: Inputs per toolkit call.
    :param data_root: Folder of user-supplied data files.
    :param address: Ray cluster address (``auto`` or ``ray://host:port``); embedded local Ray when absent.
    :param max_retries: Ray retries per task (default 2).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {list(EXECUTORS)}")
    if executor == "ray":
        from advbridge.evaluations.execution.ray_executor import DEFAULT_MAX_RETRIES, require_ray, run_on_ray

        require_ray()  # a clear error before any work
    start = time.perf_counter()
    out = Path(out)
    store = ResultStore(out / "results.db")
    store.save_suite(suite.name, suite.text, suite.quick)
    versions = library_versions()
    resources = Resources(suite, device=device, data_root=data_root)
    not_run: list[str] = []
    keyed = []
    for cell in suite.cells():
        config = cell.config(suite, versions)
        keyed.append((cell, config, config_key(config)))
    done = store.done_keys()
    todo = [item for item in keyed if force or item[2] not in done]
    logger.info("suite %s: %d cells, %d to compute", suite.name, len(keyed), len(todo))
    try:
        if executor == "ray":
            computed, failed = run_on_ray(todo, suite, resources, store, batch_size=batch_size,
                                          max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                                          address=address, progress=progress)
        else:
            computed, failed = _run_local(todo, suite, resources, store, force, batch_size, progress)
        estimator_cells = [(cell, config, config_key(config))
                           for cell in suite.estimator_cells() for config in [cell.config(suite, versions)]]
        estimator_todo = [item for item in estimator_cells if force or item[2] not in done]
        more, more_failed = _run_estimators(estimator_todo, suite, resources, store, force, progress, not_run)
        computed, failed = computed + more, failed + more_failed
        keyed += estimator_cells
        todo += estimator_todo
    finally:
        store.close()
    summary = RunSummary(suite.name, len(keyed), computed, len(keyed) - len(todo), failed,
                         time.perf_counter() - start, out, not_run)
    if write_report:
        from advbridge.evaluations.reports.render import write_reports

        write_reports(out, suite_name=suite.name)
    return summary


def _run_local(todo, suite: Suite, resources: Resources, store: ResultStore, force: bool, batch_size: int,
               progress: bool) -> tuple[int, int]:
    """The local executor: cells one after another in this process, each committed when it finishes."""
    computed = failed = 0
    for cell, config, key in tqdm(todo, desc=f"suite {suite.name}", unit="cell", disable=not progress):
        if not force and store.is_done(key):  # another run sharing the store finished it meanwhile
            continue
        store.mark_started(key)
        t0 = time.perf_counter()
        try:
            record, samples = compute_cell(cell, cell_inputs(cell, resources), key, suite.seed, suite.metrics,
                                           batch_size, progress)
        except Exception as err:  # recorded, shown in the report, retried on the next run
            logger.error("cell %s (%s %s on %s) failed: %s", key, cell.label, cell.setting, cell.backend, err)
            store.commit_failure(key, suite.name, config, "".join(traceback.format_exception_only(err)).strip())
            failed += 1
            continue
        store.commit_cell(key, suite.name, config, record, samples, time.perf_counter() - t0)
        computed += 1
    return computed, failed


def compute_estimator(cell: EstimatorCell, resources: Resources, key: str, seed: int,
                      progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one estimator cell; return its record and per-sample arrays."""
    from advbridge.evaluations.estimators.base import ESTIMATORS

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


def _run_estimators(todo, suite: Suite, resources: Resources, store: ResultStore, force: bool,
                    progress: bool, not_run: list[str]) -> tuple[int, int]:
    """Estimator cells, on the driver, each committed when it finishes (as attack cells are). A cell whose data the
    user has not supplied (``DataNotSupplied``) is left out of the store, its message appended to ``not_run``."""
    from advbridge.evaluations.estimators.domain_shift import DataNotSupplied

    computed = failed = 0
    for cell, config, key in tqdm(todo, desc=f"suite {suite.name} estimators", unit="cell",
                                  disable=not progress or not todo):
        if not force and store.is_done(key):
            continue
        store.mark_started(key)
        t0 = time.perf_counter()
        try:
            record, samples = compute_estimator(cell, resources, key, suite.seed, progress)
        except DataNotSupplied as err:
            logger.warning("estimator %s (%s) not run: %s", cell.name, cell.label, err)
            not_run.append(f"{cell.label}: {err}")
            continue
        except Exception as err:  # recorded, shown in the report, retried on the next run
            logger.error("estimator %s on %s failed: %s", cell.name, cell.model, err)
            store.commit_failure(key, suite.name, config, "".join(traceback.format_exception_only(err)).strip())
            failed += 1
            continue
        store.commit_cell(key, suite.name, config, record, samples, time.perf_counter() - t0)
        computed += 1
    return computed, failed


def _reseeded(system, seed: int):
    """Randomized systems restart their draws per evaluation, so a cell's numbers never depend on cell order."""
    return system.reseed(seed) if hasattr(system, "reseed") else system


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in params.items()}
