"""Bridge benchmarks: bridge overhead over direct toolkit calls, and ART vs Foolbox C&W at shared defaults.

Prints ratios measured in this one run and writes ``bench/results.json``. Set ``--threads`` explicitly:
on a busy 2-core machine 2 torch threads were measured ~80x slower than 1.
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

from advbridge.bridge import AttackSpec, crossval, run_attack
from advbridge.bridge.attacks import BuildContext
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.classifiers import load_model


def direct_call(model, spec: AttackSpec, backend: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """The same toolkit attack, built and called without the bridge (no validation, no judging)."""
    params = spec.resolved_params()
    ctx = BuildContext(model, spec.norm, params, False, len(x))
    attack = spec.definition.build[backend](ctx)
    if backend == "art":
        attack.generate(x.numpy(), y=y.numpy())
    else:
        import foolbox as fb

        fb_attack, eps = attack
        fb_attack(model.foolbox(), x.to(model.device), fb.criteria.Misclassification(y.to(model.device)),
                  epsilons=eps)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=256, help="images for the overhead benchmark")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cw-n", type=int, default=8,
                        help="images for the ART vs Foolbox C&W comparison on mnist_cnn (4x as many on the tiny CNN)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}  device: {args.device or 'auto'}  torch {torch.__version__}")

    data = load_dataset("mnist5k")
    zoo = load_model("mnist_cnn", data=data, device=args.device)
    model = zoo.model
    print(f"mnist_cnn test accuracy: {100 * zoo.test_accuracy:.2f}%  device: {model.device}")
    x, y = data.x_test[:args.n], data.y_test[:args.n]

    overhead = []
    cases = [(AttackSpec("fgsm", "linf"), ("art", "foolbox")),
             (AttackSpec("pgd", "linf", params={"steps": 20}), ("art", "foolbox")),
             # C&W overhead on Foolbox (ART's C&W on 256 images x 5 repeats would take most of an hour).
             (AttackSpec("cw", "l2", params={"binary_search_steps": 2, "steps": 20}), ("foolbox",))]
    print(f"\nBridge overhead: median of {args.repeats} runs on {len(x)} mnist5k test images")
    print(f"{'attack':<8} {'backend':<8} {'bridge s':>9} {'direct s':>9} {'ratio':>7}")
    for spec, backends in cases:
        for backend in backends:
            run_attack(model, x, y, spec, backend, progress=False)  # warm-up
            bridge = median_time(lambda spec=spec, backend=backend: run_attack(model, x, y, spec, backend,
                                                                            batch_size=len(x), progress=False),
                                 args.repeats)
            direct = median_time(lambda spec=spec, backend=backend: direct_call(model, spec, backend, x, y), args.repeats)
            overhead.append({"attack": spec.name, "backend": backend, "bridge_s": bridge, "direct_s": direct,
                             "ratio": bridge / direct})
            print(f"{spec.name:<8} {backend:<8} {bridge:>9.3f} {direct:>9.3f} {bridge / direct:>7.3f}")

    cw_rows = []
    for model_name, n_cw in (("mnist_tiny_cnn", args.cw_n * 4), ("mnist_cnn", args.cw_n)):
        cw_model = load_model(model_name, data=data, device=args.device).model
        correct = (cw_model.predict(data.x_test) == data.y_test).nonzero().flatten()[:n_cw]
        report = crossval(cw_model, data.x_test[correct], data.y_test[correct], AttackSpec("cw", "l2"),
                          ("art", "foolbox"), batch_size=n_cw, progress=False)
        art, fb = report.results["art"], report.results["foolbox"]
        row = {"model": model_name, "n": n_cw, "params": report.params, "art_time_s": art.time_s,
               "foolbox_time_s": fb.time_s, "time_ratio_art_over_foolbox": art.time_s / fb.time_s,
               "art_success": art.success_rate, "foolbox_success": fb.success_rate,
               "art_median_l2": art.median_norm("l2"), "foolbox_median_l2": fb.median_norm("l2"),
               "agreement": report.agreement}
        cw_rows.append(row)
        print(f"\nC&W L2 at the shared defaults on {n_cw} correctly classified images, {model_name}")
        print(f"ART {art.time_s:.1f} s, success {100 * art.success_rate:.1f}%, median L2 {art.median_norm('l2'):.3f}")
        print(f"Foolbox {fb.time_s:.1f} s, success {100 * fb.success_rate:.1f}%, median L2 "
              f"{fb.median_norm('l2'):.3f}")
        print(f"ART time / Foolbox time: {row['time_ratio_art_over_foolbox']:.1f}x (target <= 10x at equal success)")

    results = {"torch_threads": torch.get_num_threads(), "device": str(model.device), "n": len(x),
               "repeats": args.repeats, "overhead": overhead, "cw_shared_defaults": cw_rows,
               "mnist_cnn_test_accuracy": zoo.test_accuracy}
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
