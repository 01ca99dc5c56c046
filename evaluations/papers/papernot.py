"""Published numbers of Papernot et al. (2016), "The Limitations of Deep Learning in Adversarial Settings" (data only).
"""

from __future__ import annotations

#: §5.6, MNIST test set: success rate, mean distortion (all), mean distortion (successful).
PAPER = {"success_rate": 0.9705, "mean_distortion_all": 0.0445, "mean_distortion_successful": 0.0403}
