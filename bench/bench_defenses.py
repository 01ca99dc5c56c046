"""Defense benchmark: the scoring cost of MagNet and MID ÷ the sum of the forward passes they need.

For 1,000 test images the forward passes are the classifier on x, each autoencoder on x and the classifier on
each reconstruction it reads; a system that shares them between its detectors and its reformer costs about
their sum (target ≤ 1.25). The same detectors scored one by one, each recomputing its passes, are timed too.
Prints ratios measured in this one run and writes ``bench/defense_results.json``. Set ``--threads`` explicitly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.systems.defended import DefenseBuilder
from advbridge.evaluations.zoo.classifiers import load_model

SYSTEMS = [
    {"name": "magnet", "reformer": "I",
     "detectors": [{"kind": "reconstruction", "ae": "I", "p": 2}, {"kind": "reconstruction", "ae": "II", "p": 1}]},
    {"name": "mid", "reformer": "I",
     "detectors": [{"kind": "reconstruction", "ae": "I", "p": 2}, {"kind": "reconstruction", "ae": "II", "p": 1},
                   {"kind": "mid", "ae": "I"}]},
    {"name": "mid_alone", "reformer": "none", "detectors": [{"kind": "mid", "ae": "I"}]},
]


def median_time(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_passes(system, x: torch.Tensor, batch_size: int):
    """The passes ``system`` needs, run bare: f(x), each AE on x, f on each reconstruction read."""
    classifier = system.classifier
    aes = {}
    read = {}
    for det in system.detectors:
        aes[id(det.ae)] = det.ae
        if hasattr(det, "classifier"):
            read[id(det.ae)] = det.ae
    if system.reformer is not None:
        aes[id(system.reformer.ae)] = system.reformer.ae
        read[id(system.reformer.ae)] = system.reformer.ae

    def run():
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                b = x[start:start + batch_size].to(system.device)
                classifier(b)
                recon = {key: ae(b) for key, ae in aes.items()}
                for key in read:
                    classifier(recon[key])
    return run, len(aes), len(read)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).with_name("defense_results.json")))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, n {args.n}, "
          f"batch {args.batch_size}, median of {args.repeats}")
    data = load_dataset("mnist5k")
    model = load_model("mnist_cnn", device=device, data=data).model
    x = data.x_test[:args.n]
    builder = DefenseBuilder({"fit_n": 500}, SYSTEMS, data, "mnist5k", 0, device)
    results = {"threads": torch.get_num_threads(), "device": str(device), "n": len(x), "systems": {}}
    failures = []
    for name, system in builder.systems(model).items():
        system.run(x[:args.batch_size], args.batch_size)  # warm-up
        passes, n_aes, n_read = forward_passes(system, x, args.batch_size)
        t_passes = median_time(passes, args.repeats, device)
        t_shared = median_time(lambda s=system: s.run(x, args.batch_size), args.repeats, device)

        def one_by_one(s=system):  # what run() returns, without sharing: each score, raw and reformed predictions
            for det in s.detectors:
                det.score(x, args.batch_size)
            with torch.no_grad():
                for start in range(0, len(x), args.batch_size):
                    s.classifier(x[start:start + args.batch_size].to(device))
            s.predict(x, args.batch_size)
        t_separate = median_time(one_by_one, args.repeats, device)
        ratio = t_shared / t_passes
        results["systems"][name] = {"forward_passes_s": t_passes, "shared_s": t_shared, "one_by_one_s": t_separate,
                                    "ratio": ratio, "one_by_one_ratio": t_separate / t_passes,
                                    "autoencoders": n_aes, "classifier_on_reconstructions": n_read,
                                    "detectors": list(system.named_detectors)}
        ok = ratio <= 1.25
        failures += [] if ok else [name]
        print(f"{name:<10} detectors {len(system.detectors)}: passes (f(x) + {n_aes} AE + {n_read} f(AE)) "
              f"{1000 * t_passes:7.1f} ms | shared scoring {1000 * t_shared:7.1f} ms = {ratio:.2f}x "
              f"({'meets' if ok else 'misses'} <= 1.25) | one detector at a time {1000 * t_separate:7.1f} ms = "
              f"{t_separate / t_passes:.2f}x")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 1 if failures and "--strict" in (argv or sys.argv) else 0


if __name__ == "__main__":
    sys.exit(main())
