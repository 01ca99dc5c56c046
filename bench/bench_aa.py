"""The A/A false-flag rate of crossval's statistics for random attacks, measured.

One toolkit (Foolbox) runs single-draw uniform L∞ noise (ε = 0.5, success 19-28% by seed on the tiny CNN) with two
seeds per pair; every flag is a false alarm. Prints the rate of the statistical flags (McNemar and Wilcoxon,
``bridge.stats.ALPHA``) beside the old fixed 5-point rule, and writes ``bench/aa_results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from advbridge.bridge import AttackSpec, aa_check
from advbridge.bridge.crossval import SUCCESS_GAP
from advbridge.bridge.stats import ALPHA
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.classifiers import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    tiny = load_model("mnist_tiny_cnn", "mnist5k", device="cpu", data=data).model
    keep = (tiny.predict(data.x_test) == data.y_test).nonzero().flatten()[:32]
    x, y = data.x_test[keep], data.y_test[keep]
    spec = AttackSpec("noise", "linf", params={"eps": 0.5, "repeats": 1})
    flags = fixed = 0
    start = time.perf_counter()
    for pair in range(args.pairs):
        report = aa_check(tiny, x, y, spec, "foolbox", seeds=(2 * pair, 2 * pair + 1), progress=False)
        flags += any(f.code in ("success_gap", "norm_gap") for f in report.flags)
        a, b = report.results.values()
        fixed += abs(a.success_rate - b.success_rate) > SUCCESS_GAP
    out = {"threads": torch.get_num_threads(), "pairs": args.pairs, "alpha": ALPHA, "statistical_flags": flags,
           "fixed_rule_flags": fixed, "time_s": round(time.perf_counter() - start, 1)}
    print(f"torch threads {out['threads']}; A/A on {args.pairs} seed pairs: statistical flags {flags} "
          f"({flags / args.pairs:.1%}, target <= {ALPHA:.0%}); fixed 5-point rule {fixed} ({fixed / args.pairs:.1%})")
    (Path(__file__).parent / "aa_results.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
