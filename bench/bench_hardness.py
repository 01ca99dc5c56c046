"""Hardness-matrix benchmark: 100 test images × 9 targets × 9 distortion levels on `mnist_cnn` in one JSMA pass.

Target: ≤ 5 minutes on 2 CPU cores. Also prints the vector-Jacobian products of the single pass against what one
run per level would compute (the same counting), and with ``--separate`` times those runs too. Writes
``bench/hardness_results.json``. Set ``--threads`` explicitly (default 2: the target is for 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from advbridge.bridge.attacks.jsma import PapernotJSMA
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.analysis.hardness import DEFAULT_LEVELS, all_target_pairs, hardness_matrix
from advbridge.evaluations.zoo.classifiers import load_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--saliency-on", default="probs", choices=("probs", "logits"))
    parser.add_argument("--separate", action="store_true", help="also time one JSMA run per level")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).with_name("hardness_results.json")))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, {args.n} images × 9 "
          f"targets × {len(DEFAULT_LEVELS)} levels, saliency on {args.saliency_on}")
    data = load_dataset("mnist5k")
    model = load_model("mnist_cnn", device=device, data=data).model
    x, y = data.x_test[:args.n], data.y_test[:args.n]
    result = hardness_matrix(model, x, y, saliency_on=args.saliency_on, progress=False)
    out = {"threads": torch.get_num_threads(), "device": str(device), "n": args.n, "time_s": result.time_s,
           "vjp_calls": result.vjp_calls, "vjp_calls_separate_runs": result.vjp_calls_separate,
           "success_rate": result.success_rate, "mean_distortion_all": result.mean_distortion_all,
           "mean_distortion_successful": result.mean_distortion_successful}
    ok = result.time_s <= 300
    print(f"single pass: {result.time_s:.1f} s ({'meets' if ok else 'misses'} <= 300 s); VJPs {result.vjp_calls} "
          f"vs {result.vjp_calls_separate} for one run per level ({result.vjp_calls_separate / result.vjp_calls:.2f}x)")
    print(f"at Υ = 14.5%: success {100 * result.success_rate:.1f}%, distortion {100 * result.mean_distortion_all:.2f}% "
          f"(all), {100 * result.mean_distortion_successful:.2f}% (successful)")
    if args.separate:
        x_pairs, _, targets = all_target_pairs(x, y, 10)
        start = time.perf_counter()
        for level in DEFAULT_LEVELS:
            PapernotJSMA(model.art(), max_distortion=level, saliency_on=args.saliency_on, batch_size=256,
                         forward=model.pipeline).generate(x_pairs.numpy(), targets.numpy())
        out["separate_runs_s"] = time.perf_counter() - start
        print(f"one run per level: {out['separate_runs_s']:.1f} s ({out['separate_runs_s'] / result.time_s:.2f}x)")
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 1 if not ok and "--strict" in (argv or sys.argv) else 0


if __name__ == "__main__":
    sys.exit(main())
