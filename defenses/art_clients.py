"""Put MagNet/MID detectors inside ART's ``DetectorClassifier``.

ART's ``DetectorClassifier(classifier, detector)`` wants the detector as a *classifier* with one output ``d``
per input, and appends the column ``(d + 1) · max(classifier output)``: the input is reported as the extra
"adversarial" class exactly when ``d > 0`` (with probabilities as the classifier's outputs). ``DetectorMargin``
is that output for one of our fitted detectors: ``score(x) − threshold``, nudged above zero where the score
equals the threshold, so that ART rejects exactly the inputs that ``detector.detect`` flags.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from torch import nn

from .magnet import ForwardPasses, ThresholdDetector, check_bounds, check_input_shape
from .params import check_images


class DetectorMargin(nn.Module):
    """``score(x) − threshold`` of a fitted detector, shape ``(N, 1)``; positive iff the detector flags x.

    Differentiable for the reconstruction-error and divergence detectors; MID's estimators are computed in
    numpy, so its margin carries no gradient.
    """

    def __init__(self, detector: ThresholdDetector) -> None:
        super().__init__()
        if not isinstance(detector, ThresholdDetector):
            raise TypeError(f"detector must be a MagNet or MID detector, got {type(detector).__name__}")
        if detector.threshold is None:
            raise ValueError(f"{type(detector).__name__} is not fitted: call fit(x_clean_validation) first")
        self.detector = detector
        for module in detector.torch_modules():  # registered, so that .to(device) moves them
            self.add_module(f"wrapped_{len(list(self.children()))}", module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A check only (graph and device kept): the shape and bounds the detector was fitted on.
        check_images(x, self.detector.expected_shape, self.detector.bounds, "x", device=None)
        score = self.detector.score_batch(ForwardPasses(x.float())).to(x.device)
        threshold = cast(float, self.detector.threshold)  # not None: __init__ checked it is fitted
        margin = score - threshold
        tiny = torch.finfo(margin.dtype).tiny
        return torch.where(score >= threshold, margin.clamp_min(tiny), margin).unsqueeze(1)


def art_detector(detector: ThresholdDetector, input_shape: tuple[int, ...],
                 clip_values: tuple[float, float] = (0.0, 1.0), device_type: str = "cpu"):
    """The fitted ``detector`` as the ART classifier that ``DetectorClassifier`` expects as its detector.

    :param input_shape: ``(C, H, W)``; must match the shape the detector checks (given or fitted).
    :param clip_values: Must equal the detector's ``bounds``, so that ART and the detector agree on valid input.
    """
    from art.estimators.classification import PyTorchClassifier

    margin = DetectorMargin(detector)
    shape = check_input_shape(input_shape)
    if shape is None:
        raise ValueError("input_shape must be (C, H, W), got None")
    if detector.expected_shape is not None and shape != detector.expected_shape:
        raise ValueError(f"input_shape {shape} differs from the detector's input shape {detector.expected_shape}")
    if check_bounds(clip_values, "clip_values") != tuple(detector.bounds):
        raise ValueError(f"clip_values {tuple(clip_values)} differ from the detector's bounds {tuple(detector.bounds)}")
    return PyTorchClassifier(model=margin, loss=nn.BCEWithLogitsLoss(), input_shape=input_shape,
                             nb_classes=2, clip_values=np.asarray(clip_values, np.float32), device_type=device_type)
