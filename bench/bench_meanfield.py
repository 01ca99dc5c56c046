"""Mean-field benchmark: the cost of Γ = Jᵀu (algorithms.md §6.8) in forward-pass units.

On the zoo ``mnist_cnn`` and one batch (256 test images by default), each Γ method of
``advbridge.evaluations.meanfield.gamma`` is timed against one forward pass of the same batch without gradients
(target ≤ 4 units for the default, ``method="auto"``). Methods and forward passes are timed in interleaved
rounds, and each method's figure is the median over rounds of its time ÷ that round's forward pass, so that
load from other processes cancels out. ``autograd_functional_jvp`` is a reference, not a library method: the
VJP plus ``torch.autograd.functional.jvp`` (the double-VJP trick with its own forward pass).

Prints ratios measured in this one run and writes ``bench/meanfield_results.json``. Set ``--threads``
explicitly; ``--estimate N`` also runs ``estimate_meanfield`` on N test images and records its summary.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.analysis.meanfield import estimate_meanfield
from advbridge.evaluations.analysis.gamma import gamma
from advbridge.evaluations.zoo.classifiers import load_model

TARGET = 4.0
METHODS = ("auto", "linearized", "double_vjp", "jvp", "jacobian")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _autograd_functional(module, x, y):
    """Reference: VJP, then ``torch.autograd.functional.jvp`` (a second forward pass plus two backward passes)."""
    xg = x.detach().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(module(xg), y, reduction="sum"), xg)
    u = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return torch.autograd.functional.jvp(module, x, u)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--direction", default="l2", choices=["l2", "sign"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-jacobian", action="store_true", help="leave out the slow full-Jacobian reference")
    parser.add_argument("--estimate", type=int, default=0, metavar="N",
                        help="also run estimate_meanfield on N test images (0: skip)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("meanfield_results.json")))
    parser.add_argument("--strict", action="store_true", help="exit 1 when the default misses the target")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, "
          f"batch {args.batch_size}, direction {args.direction}, median of {args.repeats} interleaved rounds")
    data = load_dataset("mnist5k")
    zoo = load_model("mnist_cnn", device=device, data=data)
    module = zoo.model.pipeline.eval()
    x = data.x_test[:args.batch_size].to(device)
    y = data.y_test[:args.batch_size].to(device)

    def forward():
        with torch.no_grad():
            module(x)

    runs = {m: (lambda m=m: gamma(module, x, y, direction=args.direction, batch_size=args.batch_size, method=m))
            for m in METHODS if not (args.skip_jacobian and m == "jacobian")}
    if args.direction == "l2":
        runs["autograd_functional_jvp"] = lambda: _autograd_functional(module, x, y)
    for fn in (forward, *runs.values()):  # warm-up (the first forward-mode call imports torch._dynamo)
        fn()
    times: dict[str, list[float]] = {name: [] for name in ("forward", *runs)}
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    rng = random.Random(0)
    for _ in range(args.repeats):
        t_fwd = _timed(forward, device)
        times["forward"].append(t_fwd)
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            t = _timed(runs[name], device)
            times[name].append(t)
            ratios[name].append(t / t_fwd)
    t_fwd = statistics.median(times["forward"])
    results = {"threads": torch.get_num_threads(), "device": str(device), "torch": torch.__version__,
               "model": "mnist_cnn", "batch_size": args.batch_size, "direction": args.direction,
               "repeats": args.repeats, "target_units": TARGET, "forward_s": t_fwd, "methods": {}}
    print(f"{'forward (no grad)':<26}{1000 * t_fwd:9.1f} ms   1.00 units")
    for name in runs:
        units = statistics.median(ratios[name])
        t = statistics.median(times[name])
        meets = units <= TARGET
        results["methods"][name] = {"median_s": t, "units": units, "units_of_medians": t / t_fwd,
                                    "units_min": min(ratios[name]), "units_max": max(ratios[name]),
                                    "meets_target": meets}
        print(f"{name:<26}{1000 * t:9.1f} ms {units:6.2f} units (rounds {min(ratios[name]):.2f}-"
              f"{max(ratios[name]):.2f}) {'meets' if meets else 'misses'} <= {TARGET:g}")
    default_ok = results["methods"]["auto"]["meets_target"]
    print(f"default (method='auto') {'meets' if default_ok else 'misses'} the target of {TARGET:g} units; "
          f"methods that meet it: {[m for m, r in results['methods'].items() if r['meets_target']]}")
    if args.estimate:
        xe, ye = data.x_test[:args.estimate], data.y_test[:args.estimate]
        start = time.perf_counter()
        est = estimate_meanfield(module, xe, ye, direction=args.direction, batch_size=args.batch_size)
        elapsed = time.perf_counter() - start
        summary = est.to_dict(arrays=False)
        results["estimate"] = {**summary, "seconds": elapsed}
        print(f"estimate_meanfield on {est.n} test images ({elapsed:.1f} s, method {est.method}): "
              f"{est.n_used} correct, median eps_lin {est.eps_lin_median:.4g}, median eps_MF "
              f"{est.eps_mf_median:.4g} (L2, [0,1] pixels, unclipped linear response)")
        print("  <Γ_i> by rank: " + ", ".join(f"{g:.3g}" for g in est.gamma_mean_by_rank))
        print("  small-gap density exponents a_j (i.i.d. law: j-2): "
              + ", ".join(f"{j}: {a:.2f}" for j, a in est.exponents.items()))
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 1 if args.strict and not default_ok else 0


if __name__ == "__main__":
    sys.exit(main())
