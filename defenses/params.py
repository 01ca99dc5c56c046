"""Parameter checks shared by the defenses' ``_check_params``: the bridge's one validation module, re-exported."""

from __future__ import annotations

from ..bridge.validation import check_finite, check_images, check_labels, check_positive, check_positive_int

__all__ = ["check_finite", "check_images", "check_labels", "check_positive", "check_positive_int"]
