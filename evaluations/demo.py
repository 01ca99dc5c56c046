"""`advbridge demo`: train or load mnist_cnn and cross-validate five attacks between ART and Foolbox."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from advbridge.bridge import AttackSpec, crossval
from advbridge.bridge.result import library_versions

from .data import load_dataset
from .zoo import load_model

logger = logging.getLogger(__name__)

#: (spec, n full, n quick): the minimisation attacks get fewer inputs because ART's versions are slow.
DEMO_ATTACKS = (
    (AttackSpec("fgsm", "linf", params={"eps": 0.1}), 200, 50),
    (AttackSpec("pgd", "linf", params={"eps": 0.1}), 200, 50),
    (AttackSpec("cw", "l2"), 50, 10),
    (AttackSpec("ead", "l1"), 50, 10),
    (AttackSpec("deepfool", "l2"), 100, 20),
)


def run_demo(out: Path, *, quick: bool = False, seed: int = 0, device: str | None = None,
             batch_size: int = 128) -> dict:
    """Write ``out/report.md``, ``out/summary.json`` and one ``crossval.json``/``.md`` per attack."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("mnist5k")
    zoo = load_model("mnist_cnn", "mnist5k", seed=seed, device=device, data=data)
    model = zoo.model
    logger.info("mnist_cnn test accuracy %.4f", zoo.test_accuracy)
    correct = (model.predict(data.x_test) == data.y_test).nonzero().flatten()
    rows, reports = [], {}
    for spec, n_full, n_quick in tqdm(DEMO_ATTACKS, desc="demo attacks", unit="attack"):
        n = n_quick if quick else n_full
        idx = correct[:n]
        report = crossval(model, data.x_test[idx], data.y_test[idx], spec, ("art", "foolbox"), seed=seed,
                          batch_size=batch_size)
        report.save(out / spec.name)
        reports[spec.name] = report.to_json()
        rows.append(report)
    elapsed = time.perf_counter() - start
    summary = {"model": "mnist_cnn", "test_accuracy": zoo.test_accuracy, "quick": quick, "seed": seed,
               "torch_threads": torch.get_num_threads(), "wall_time_s": elapsed, "versions": library_versions(),
               "crossval": reports}
    _write(out / "summary.json", json.dumps(summary, indent=2))
    _write(out / "report.md", _markdown(summary, rows))
    return summary


def _markdown(summary: dict, reports) -> str:
    lines = [
        "# advbridge demo: ART vs Foolbox on mnist_cnn", "",
        f"- Model: `mnist_cnn` (Carlini/MagNet architecture) trained on the embedded MNIST-5k subset "
        f"(3,500 training images, not the full 60,000); test accuracy **{100 * summary['test_accuracy']:.2f}%** "
        "on its 1,000 test images.",
        f"- Inputs: correctly classified test images. Seed {summary['seed']}, "
        f"{summary['torch_threads']} torch thread(s), {'quick' if summary['quick'] else 'full'} run, "
        f"wall time {summary['wall_time_s']:.0f} s.",
        "- Every backend gets the same shared canonical parameters; success is re-judged on `x_adv` with one model.",
        "", "| attack | norm | n | ART success | Foolbox success | ART median L2 | Foolbox median L2 | agreement "
            "| time ART/Foolbox | flags |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        a, f = r.results["art"].summary(), r.results["foolbox"].summary()
        codes = ", ".join(sorted({fl.code for fl in r.flags})) or "none"
        lines.append(f"| {r.spec.name} | {r.spec.norm} | {r.n} | {100 * a['success_rate']:.1f}% | "
                     f"{100 * f['success_rate']:.1f}% | {a['median_l2']:.3f} | {f['median_l2']:.3f} | "
                     f"{100 * r.agreement:.1f}% | {a['time_s'] / max(f['time_s'], 1e-9):.1f}x | {codes} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items()), ""]
    for r in reports:
        lines.append(r.to_markdown())
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
