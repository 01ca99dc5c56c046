"""The metric names: one list, read by the suite schema, the cell computation and the report sections.

Definitions: ``execution.cells.attack_metrics`` and ``bridge.result.judge_success``. Success counts only inputs the
model classifies correctly when clean; ``already_misclassified`` counts the others, which robust (adversarial)
accuracy counts as wrong. A suite's data is not filtered to correct inputs unless ``[data] correct_only = true``:
the definition makes the filter unnecessary for the rates.
"""

from __future__ import annotations

__all__ = ["ALWAYS_RECORDED", "ATTACK_METRICS", "DEFENSE_METRICS", "DISTANCE_METRICS", "METRICS", "PCT_METRICS"]

#: Attack-cell metrics in their default order, each with its kind: a ``rate`` (a fraction of the inputs or of the
#: features, shown as a percentage), a ``distance`` (a perturbation norm) or a ``count``.
ATTACK_METRICS: dict[str, str] = {
    "clean_accuracy": "rate", "adversarial_accuracy": "rate", "error_rate": "rate", "success_rate": "rate",
    "mean_confidence_on_errors": "rate", "median_l0": "distance", "median_l1": "distance", "median_l2": "distance",
    "median_linf": "distance", "mean_l2": "distance", "distortion_all": "rate", "distortion_successful": "rate",
    "already_misclassified": "count"}
#: The names a suite's ``metrics`` list may hold (its default: all of them).
METRICS: tuple[str, ...] = tuple(ATTACK_METRICS)
#: Metrics shown as percentages.
PCT_METRICS: frozenset[str] = frozenset(m for m, kind in ATTACK_METRICS.items() if kind == "rate")
#: Perturbation norms, shown as numbers.
DISTANCE_METRICS: frozenset[str] = frozenset(m for m, kind in ATTACK_METRICS.items() if kind == "distance")
#: Metrics every attack cell records whatever the suite's ``metrics`` list (the definitions need them).
ALWAYS_RECORDED: tuple[str, ...] = ("clean_accuracy", "adversarial_accuracy", "already_misclassified")
#: Per-system metrics recorded for every cell of a suite with [[defenses]] (``name[system]`` in the records), all
#: rates.
DEFENSE_METRICS: tuple[str, ...] = ("accuracy_with_defense", "accuracy_detector_only", "accuracy_reformer_only",
                                    "detection_rate", "clean_accuracy_with_defense", "false_positive_rate")
