"""Published numbers of Kos, Fischer & Song (2017), "Adversarial examples for generative models", §4.4: the MNIST
classifier attack's (source, target) success rates (data only)."""

from __future__ import annotations

#: Paper, MNIST classifier attack: per-source mean (AS_ignore-target, AS_target) in % over the 9 targets.
PAPER_PER_SOURCE: dict[int, tuple[float, float]] = {
    0: (24.8, 7.9), 1: (34.7, 14.2), 2: (54.3, 21.9), 3: (52.9, 26.8), 4: (64.4, 38.4),
    5: (42.8, 21.8), 6: (43.6, 7.3), 7: (55.1, 17.3), 8: (87.8, 42.9), 9: (60.3, 24.0)}
#: Paper: mean (AS_ignore-target, AS_target) in % over all 90 pairs.
PAPER_MEAN: tuple[float, float] = (52.0, 22.3)
#: Paper: example cells (source, target) -> (AS_ignore-target, AS_target) in %.
PAPER_CELLS: dict[tuple[int, int], tuple[float, float]] = {
    (0, 4): (75.90, 0.00), (1, 0): (99.20, 77.60), (8, 6): (100.00, 57.95), (9, 7): (47.83, 43.48)}
#: Paper: per-source sample counts inferred from the percentages (992 images in all).
PAPER_SOURCE_COUNTS: dict[int, int] = {0: 83, 1: 125, 2: 114, 3: 107, 4: 110, 5: 87, 6: 87, 7: 99, 8: 88, 9: 92}
