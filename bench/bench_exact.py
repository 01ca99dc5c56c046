"""The exact oracle's solve time per sample, measured (``evaluations.analysis.exact``).

On the first ``--n`` correctly classified mnist5k test inputs: the affine ``mnist_softmax`` in L∞, L1 (LPs) and L2
(QPs), and the ReLU ``mnist_relu_small`` (784-32-32-10) in L∞ and L1 (MILPs, ``--time-limit`` seconds per class).
Prints, per model and norm, the median and largest solve time, how many values are exact (gap closed) and the
binaries used; writes ``bench/exact_results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from advbridge.evaluations.analysis.exact import minimal_distance
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.classifiers import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    data = load_dataset("mnist5k")
    rows = []
    for name, norms in (("mnist_softmax", ("linf", "l1", "l2")), ("mnist_relu_small", ("linf", "l1"))):
        model = load_model(name, "mnist5k", device="cpu", data=data).model
        keep = (model.predict(data.x_test) == data.y_test).nonzero().flatten()[:args.n]
        for norm in norms:
            results = []
            for i in keep:
                start = time.perf_counter()
                r = minimal_distance(model.module, data.x_test[i], int(data.y_test[i]), norm,
                                     time_limit=args.time_limit)
                results.append((time.perf_counter() - start, r))
            times = [t for t, _ in results]
            row = {"model": name, "norm": norm, "n": len(results), "median_s": statistics.median(times),
                   "max_s": max(times), "exact": int(sum(bool(r.exact) for _, r in results)),
                   "verified": int(sum(bool(r.verified) for _, r in results)),
                   "binaries": [r.unstable for _, r in results],
                   "brackets": [[r.lower, r.distance] for _, r in results]}
            rows.append(row)
            print(f"{name:17s} {norm:4s} median {row['median_s']:7.2f} s  max {row['max_s']:7.2f} s  "
                  f"exact {row['exact']}/{row['n']}  verified {row['verified']}/{row['n']}  "
                  f"binaries {row['binaries']}  brackets " +
                  ", ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in row["brackets"]))
    Path("bench/exact_results.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
