"""Ray executor benchmark: one suite of independent cells, local executor vs Ray on 2 CPUs.

Prints the speed-up and the per-task overhead measured in this one run, and writes bench/ray_results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from advbridge.evaluations.execution.executors.ray import init_ray
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.zoo.classifiers import load_model

SUITE = """\
[suite]
name = "ray_bench"
models = ["mnist_tiny_cnn"]
backends = ["foolbox"]

[data]
n = {n}

[[attacks]]
name = "pgd"
norm = "linf"
params = {{ eps = [0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16], steps = {steps} }}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--noop-tasks", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).with_name("ray_results.json")))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"torch threads: {torch.get_num_threads()} (driver and each Ray task), Ray CPUs: {args.cpus}")
    load_model("mnist_tiny_cnn", device="cpu")  # train/cache outside the timed region
    suite = load_suite("ray_bench", text=SUITE.format(n=args.n, steps=args.steps))
    n_cells = len(suite.cells())

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        local = run_suite(suite, Path(tmp) / "local", device="cpu", progress=False, write_report=False)
        local_s = time.perf_counter() - start

        start = time.perf_counter()
        ray, _ = init_ray(num_cpus=args.cpus)
        init_s = time.perf_counter() - start
        start = time.perf_counter()
        remote = run_suite(suite, Path(tmp) / "ray", executor="ray", device="cpu", progress=False,
                           write_report=False)
        ray_s = time.perf_counter() - start
        start = time.perf_counter()  # again, with the workers' imports (torch, ART, Foolbox) already done
        warm = run_suite(suite, Path(tmp) / "ray", executor="ray", device="cpu", progress=False,
                         write_report=False, force=True)
        warm_s = time.perf_counter() - start

        @ray.remote(num_cpus=1)
        def noop(i: int) -> int:
            return i

        ray.get(noop.remote(0))
        start = time.perf_counter()
        for i in range(50):
            ray.get(noop.remote(i))
        latency_ms = (time.perf_counter() - start) / 50 * 1000
        start = time.perf_counter()
        ray.get([noop.remote(i) for i in range(args.noop_tasks)])
        throughput_ms = (time.perf_counter() - start) / args.noop_tasks * 1000
        ray.shutdown()

    assert local.computed == remote.computed == warm.computed == n_cells
    results = {"cells": n_cells, "n": args.n, "steps": args.steps, "ray_cpus": args.cpus, "torch_threads": 1,
               "local_s": local_s, "ray_s": ray_s, "ray_warm_s": warm_s, "ray_init_s": init_s,
               "speedup": local_s / ray_s, "speedup_warm_workers": local_s / warm_s,
               "speedup_including_init": local_s / (ray_s + init_s),
               "task_round_trip_ms": latency_ms, "task_overhead_batched_ms": throughput_ms}
    print(f"{n_cells} cells (PGD, {args.n} images, {args.steps} steps each)")
    print(f"local executor: {local_s:.1f} s")
    print(f"ray executor:   {ray_s:.1f} s  (+ {init_s:.1f} s to start the embedded Ray)")
    print(f"ray, warm workers: {warm_s:.1f} s")
    print(f"speed-up: {results['speedup']:.2f}x cold workers, {results['speedup_warm_workers']:.2f}x warm workers "
          f"({results['speedup_including_init']:.2f}x counting Ray's start)")
    print(f"per-task overhead: {latency_ms:.2f} ms round trip, {throughput_ms:.2f} ms per task when "
          f"{args.noop_tasks} are in flight")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
