"""adv-lib (Rony & Ben Ayed), the optional third backend: the reference implementations of DDN and FMN by their
authors' group, and their APGD, C&W and DeepFool, for a three-way comparison with ART and Foolbox.

adv-lib is imported only when an ``advlib`` attack is built, so the registry loads without it. ``make install``
installs it (the ``advlib`` extra). Where it cannot be installed, `unavailable` says why and what to run: suites skip
its cells with that message, and `run_attack` raises it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

#: What to run when adv-lib is missing. Its dependency visdom 0.2.4 is an sdist whose build imports
#: ``pkg_resources``, which setuptools 81 dropped; ``build-constraints.txt`` pins the build's setuptools below it.
INSTALL_HINT = ("pip install 'adv-lib==0.2.8' with setuptools<81 for the build of its visdom dependency: "
                "PIP_CONSTRAINT=build-constraints.txt pip install -e '.[advlib]' (make install does this)")


def unavailable() -> str | None:
    """``None`` when adv-lib imports here; otherwise the reason and the command that installs it."""
    try:
        importlib.import_module("adv_lib.attacks")
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == "adv_lib":
            return f"backend 'advlib' needs adv-lib, which is not installed: {INSTALL_HINT}"
        return f"backend 'advlib': adv-lib is installed but does not import ({err}): {INSTALL_HINT}"
    except ImportError as err:  # installed without a working dependency (visdom)
        return f"backend 'advlib': adv-lib is installed but does not import ({err}): {INSTALL_HINT}"
    return None


def advlib_function(name: str) -> Callable[..., torch.Tensor]:
    """The attack function ``adv_lib.attacks.<name>``; ``ImportError`` with `INSTALL_HINT` when adv-lib is missing."""
    reason = unavailable()
    if reason is not None:
        raise ImportError(reason)
    return getattr(importlib.import_module("adv_lib.attacks"), name)


class AdvLibAttack:
    """An adv-lib attack function behind ART's ``generate(x, y)``, on the bridge model's torch pipeline.

    adv-lib clamps every iterate to [0, 1], so a model with other bounds is refused rather than attacked in the
    wrong box.

    :param name: The function in ``adv_lib.attacks`` (``ddn``, ``fmn``, ``apgd``, ``carlini_wagner_l2``, ``df``).
    :param model: The ``bridge.Model`` attacked.
    :param targeted: ``y`` holds targets rather than true labels.
    :param kwargs: The function's own keyword arguments (its parameter names, e.g. ``γ``, ``α_init``).
    """

    def __init__(self, name: str, model: Any, targeted: bool, **kwargs: Any) -> None:
        if tuple(model.bounds) != (0.0, 1.0):
            raise ValueError(f"backend 'advlib' attacks inputs in [0, 1] only (adv-lib clamps to that box); "
                             f"the model's bounds are {tuple(model.bounds)}")
        self.function = advlib_function(name)
        self.model = model
        self.targeted = targeted
        self.kwargs = kwargs

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Adversarial inputs for ``x`` against labels (or targets) ``y``, as float32 numpy on the CPU."""
        device = self.model.device
        inputs = torch.from_numpy(np.asarray(x, np.float32)).to(device)
        labels = torch.from_numpy(np.asarray(y)).long().to(device)
        out = self.function(self.model.pipeline, inputs, labels, targeted=self.targeted, **self.kwargs)
        return out.detach().cpu().numpy().astype(np.float32)
