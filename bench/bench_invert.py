"""Invert-and-Classify benchmark: projection throughput with the R restarts batched ÷ a Python loop over restarts.

Both paths run the identical computation (the same z₀, steps and per-image losses) on the suite's VAE decoder;
only the batching differs: one ``(B·R, d)`` batch per step, or R batches of ``(B, d)``. Target: ≥ 0.5·R×.
Prints ratios measured in this one run and writes ``bench/invert_results.json``. Set ``--threads`` explicitly.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from bench_defenses import median_time  # the same timing helper (bench/ is on sys.path when run as a script)

from advbridge.defenses.projection import project
from advbridge.evaluations.data.datasets import load_dataset
from advbridge.evaluations.zoo.generative import GeneratorRecipe, load_generator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,16,100", help="images per projection call B (comma-separated)")
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50, help="L per timing (the defense uses 200; time is linear)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=str(Path(__file__).with_name("invert_results.json")))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}, R {args.restarts}, "
          f"L {args.steps}, median of {args.repeats}")
    data = load_dataset("mnist5k")
    gen = load_generator(GeneratorRecipe("vae"), data, "mnist5k", device=device)
    results = {"threads": torch.get_num_threads(), "device": str(device), "restarts": args.restarts,
               "steps": args.steps, "batches": {}}
    target = 0.5 * args.restarts
    misses = []
    for b in (int(v) for v in args.batches.split(",")):
        x = data.x_test[:b].to(device)

        def run(batched: bool, x=x):
            project(gen.generator, x, gen.latent_dim, steps=args.steps, restarts=args.restarts, batched=batched)
        run(True)  # warm-up
        t_batched = median_time(lambda: run(True), args.repeats, device)
        t_loop = median_time(lambda: run(False), args.repeats, device)
        ratio = t_loop / t_batched
        results["batches"][b] = {"batched_s": t_batched, "loop_s": t_loop, "speedup": ratio,
                                 "images_per_s_batched": b / t_batched, "images_per_s_loop": b / t_loop}
        ok = ratio >= target
        misses += [] if ok else [b]
        print(f"B {b:>4}: batched {b / t_batched:8.2f} img/s | loop over restarts {b / t_loop:8.2f} img/s | "
              f"{ratio:.2f}x ({'meets' if ok else 'misses'} >= {target:g}x)")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 1 if misses and "--strict" in (argv or sys.argv) else 0


if __name__ == "__main__":
    sys.exit(main())
