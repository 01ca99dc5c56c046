"""Spatial transformation: a grid search over rotations and translations (Engstrom et al. 2019).

Not an Lp attack: the perturbation is a rotation by one of ``num_rotations`` angles in ``[-max_rotation,
max_rotation]`` (degrees) and a shift by one of ``num_translations`` offsets per axis in ``[-max_translation,
max_translation]`` (pixels); the first grid point that fools the model is kept, an input no grid point fools is
returned as it is. It is registered at ``linf`` only because every attack names a norm: the norm does not bound
anything here, it only names what reports measure. Foolbox's ``SpatialAttack`` is neither a fixed-epsilon nor a
minimisation attack: it ignores ``epsilons`` (the bridge passes ``None``) and returns the input where it fails.
Targeted runs are Foolbox only (its criterion); ART's attack reads no label.

ART (``SpatialTransformation``) and Foolbox (``SpatialAttack(grid_search=True)``) search the same grid once the
units are translated, which is what the builders below do:

- **translation units.** ART takes ``max_translation`` in percent of the image size and rounds every grid offset to
  whole pixels; Foolbox takes pixels, but converts them with ``t / (n/2)`` into ``grid_sample``'s
  ``align_corners=True`` coordinates, where 2 spans ``n - 1`` pixels, so its shift is ``t (n-1)/n`` pixels. The
  bridge passes ART ``100 t / n`` % and Foolbox ``t n/(n-1)``; with integer offsets (``2 max_translation /
  (num_translations - 1)`` a whole number) both shift by exactly the same pixels. Hence the shared default of 7
  offsets (-3..3 px): Foolbox's own 5 give +-1.5 px, which ART rounds to +-2 and Foolbox interpolates. Images must
  be square (one pixel count for both axes); ``max_translation`` is at most their side (ART's 100%).
- **ART's grid on NCHW input.** ART sizes its translation grid from ``x.shape[1]`` and ``x.shape[2]``, which on
  channels-first input are the channels and the height: on 1x28x28 MNIST it never shifts vertically. The bridge
  hands ART a channels-last view and a classifier that reads it (the same torch pipeline behind a transposition).
- **ART's search is per batch.** ART picks the one grid point that fools the most inputs of the batch, applies it to
  all of them and caches it for every later ``generate`` call; Foolbox picks per input. The bridge runs ART one
  input at a time with a fresh attack, so each input gets its own first fooling grid point and its result does not
  depend on its batch.
- **search order.** ART loops ``for tx: for ty: for rotation`` (content moved by ``+t``), Foolbox ``for rotation:
  for dx: for dy`` (content moved by ``-t``). The view handed to ART is transposed (width first) and Foolbox gets the
  negated bounds (its ``linspace`` then runs from ``+max`` to ``-max``), so both visit the translations in the same
  order and, on a grid with a single angle, the same grid points in the same order.

What stays different (``KnownCause`` below, measured in ``tests/bridge/attacks/test_spatial.py`` against scipy
references of each toolkit's transform): ART shifts by whole pixels, then rotates with ``scipy.ndimage`` cubic
splines (``order=3``, ``mode="constant"``, then clips to the bounds); Foolbox samples the combined rotation and shift
once, bilinearly with zero padding (``grid_sample``: scipy's ``affine_transform(order=1, mode="grid-constant")`` to
2e-6). At the same grid point a rotated image differs by 0.11-0.22 (the spline order), and by up to 0.75 on a digit
that touches the border (``mode="constant"`` does not interpolate beyond the edge, and the shift first drops what it
moves out of the frame). With several angles and several offsets the loops nest the rotation differently (ART
innermost, Foolbox outermost), so where several grid points fool, the toolkits keep different ones (9 of 32 MNIST
inputs at the shared defaults; both fool all 32). On translation-only grids with integer offsets the outputs are
identical (max |dx| 2e-6).
"""

from __future__ import annotations

import foolbox as fb
import numpy as np
from art.attacks.evasion import SpatialTransformation
from torch import nn

from ..model import Float32Classifier
from .base import ATTACKS, AttackDef, BuildContext, KnownCause, require_positive


def _derive(norm: str, p: dict) -> None:
    require_positive("spatial", p, "num_translations", "num_rotations")
    if p["max_translation"] < 0:
        raise ValueError(f"parameter 'max_translation' of attack 'spatial' must be >= 0 (pixels), "
                         f"got {p['max_translation']}")
    if not 0 <= p["max_rotation"] <= 180:
        raise ValueError(f"parameter 'max_rotation' of attack 'spatial' must be in [0, 180] (degrees), "
                         f"got {p['max_rotation']}")


def _square_side(model, max_translation: float) -> int:
    """The side ``n`` of the model's square images; ``ValueError`` when they are not square or too small."""
    _, height, width = model.input_shape
    if height != width or height < 2:
        raise ValueError(f"attack 'spatial' needs square images of side >= 2 (max_translation is in pixels of "
                         f"both axes), got input shape {tuple(model.input_shape)}")
    if max_translation > height:
        raise ValueError(f"parameter 'max_translation' of attack 'spatial' must be at most the image side "
                         f"{height}, got {max_translation}")
    return height


def translation_grid(backend: str, max_translation: float, num_translations: int, side: int) -> list[float]:
    """The pixel offsets ``backend`` tries per axis, as the toolkit computes them from the bridge's parameters:
    ART rounds ``linspace`` to whole pixels and drops duplicates; Foolbox shifts by ``linspace`` (after the bridge's
    ``n/(n-1)`` correction, exactly those pixels)."""
    if backend == "art":
        most = int(round(side * (100.0 * max_translation / side) / 100.0))
        return sorted({int(round(g)) for g in np.linspace(-most, most, num=num_translations)})
    return sorted(float(g) for g in np.linspace(-max_translation, max_translation, num_translations))


class _Transposed(nn.Module):
    """``(N, W, H, C)`` to ``(N, C, H, W)`` (and back: the permutation is its own inverse)."""

    def forward(self, x):
        return x.permute(0, 3, 2, 1).contiguous()


class ArtSpatial:
    """ART's ``SpatialTransformation`` as the bridge runs it: one input at a time, each with a fresh attack (ART
    otherwise applies one grid point to the whole batch and reuses it for later calls), on a transposed
    channels-last view ``(N, W, H, C)`` read by a classifier that transposes back to the model's NCHW pipeline."""

    def __init__(self, model, params) -> None:
        side = _square_side(model, params["max_translation"])
        channels = model.input_shape[0]
        self.classifier = Float32Classifier(
            model=nn.Sequential(_Transposed(), model.pipeline), loss=nn.CrossEntropyLoss(),
            input_shape=(side, side, channels), nb_classes=model.nb_classes, channels_first=False,
            clip_values=np.asarray(model.bounds, dtype=np.float32),
            device_type="gpu" if model.device.type == "cuda" else "cpu")
        self.kwargs = {"max_translation": 100.0 * params["max_translation"] / side,
                       "num_translations": params["num_translations"],
                       "max_rotation": float(params["max_rotation"]), "num_rotations": params["num_rotations"]}

    def attack(self) -> SpatialTransformation:
        return SpatialTransformation(self.classifier, verbose=False, **self.kwargs)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        out = np.empty_like(x)
        for i in range(len(x)):
            view = np.ascontiguousarray(x[i:i + 1].transpose(0, 3, 2, 1))
            out[i:i + 1] = self.attack().generate(view).transpose(0, 3, 2, 1)
        return out


def _art(ctx: BuildContext):
    return ArtSpatial(ctx.model, ctx.params)


def _foolbox(ctx: BuildContext):
    p = ctx.params
    side = _square_side(ctx.model, p["max_translation"])
    # Negated bounds: Foolbox's linspace then runs from +max to -max, ART's order (see the module docstring).
    attack = fb.attacks.SpatialAttack(max_translation=-p["max_translation"] * side / (side - 1),
                                      max_rotation=-float(p["max_rotation"]), num_translations=p["num_translations"],
                                      num_rotations=p["num_rotations"], grid_search=True)
    return attack, None  # not a fixed-epsilon attack: SpatialAttack ignores `epsilons`


INTERPOLATION = ("ART shifts by whole pixels, then rotates with scipy.ndimage.rotate (cubic spline, order=3, "
                 "mode='constant', then clips); Foolbox samples rotation and shift at once, bilinearly with zero "
                 "padding (grid_sample = scipy affine_transform order=1, mode='grid-constant', to 2e-6): at the same "
                 "grid point a rotated MNIST image differs by 0.11-0.22, up to 0.75 for a digit touching the border; "
                 "with several angles and offsets ART loops rotations innermost and Foolbox outermost, so the first "
                 "fooling point differs where several fool (9 of 32 inputs at the shared defaults, both 100% "
                 "success); ART fools relative to its clean prediction, Foolbox relative to the label (only "
                 "already-misclassified inputs differ); a non-integer offset step is rounded to whole pixels by ART "
                 "and interpolated by Foolbox. Translation-only grids with integer offsets give identical outputs")

SPATIAL = ATTACKS.add(AttackDef(
    name="spatial",
    summary="Spatial transformation: first fooling rotation/translation of a grid (not Lp-bounded; the norm only "
            "names what reports measure)",
    norms={"linf": ("art", "foolbox")},
    defaults={"max_translation": 3.0, "num_translations": 7, "max_rotation": 30.0, "num_rotations": 5},
    targeted_backends=frozenset({"foolbox"}),
    same_algorithm=True,
    derive=_derive,
    build={"art": _art, "foolbox": _foolbox},
    toolkit_defaults={
        "art": {"max_translation": 0.0, "num_translations": 1, "max_rotation": 0.0, "num_rotations": 1},
        "foolbox": {"max_translation": 3.0, "num_translations": 5, "max_rotation": 30.0, "num_rotations": 5},
    },
    known_causes=(KnownCause(frozenset({"outputs_differ", "success_gap"}), INTERPOLATION),),
), rank=75)
