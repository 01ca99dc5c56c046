"""A shipped suite run from an empty cache reproduces its committed numbers (#19): the shipped weights, not whoever
trained first on which machine, decide them, and nothing is trained.

The reference, ``tests/evaluations/data/goodfellow_fgsm_quick.json``, is the quick ``goodfellow_fgsm`` run made once
from the shipped weights (``python tests/evaluations/reports/test_reproducible_report.py`` rewrites it after
``make weights``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.core.cache import WEIGHTS_DIR

REFERENCE = Path(__file__).parents[1] / "data" / "goodfellow_fgsm_quick.json"
SUITE = WEIGHTS_DIR.parent / "suites" / "goodfellow_fgsm.toml"
#: Rates are counts over the inputs and must match exactly; means of probabilities to float32 rounding.
EXACT = ("clean_accuracy", "adversarial_accuracy", "error_rate")


def records(out: Path) -> list[dict]:
    with ResultStore(out / "results.db") as store:
        return [c["record"] for c in store.cells(status="done")]


def numbers(out: Path) -> dict[str, dict[str, float | None]]:
    """``model / label / setting / backend`` -> metrics, from a run's store (what its reports are rendered from)."""
    return {f"{r['model']} / {r['label']} / {r['setting']} / {r['backend']}": r["metrics"] for r in records(out)}


def run_quick(out: Path, threads: int) -> dict[str, dict[str, float | None]]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        summary = run_suite(load_suite(SUITE, quick=True), out, progress=False, device="cpu", write_report=False)
    finally:
        torch.set_num_threads(before)
    assert summary.failed == 0 and summary.computed == summary.total
    return numbers(out)


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2 threads: `make test-slow`
def test_quick_goodfellow_fgsm_from_an_empty_cache_matches_the_committed_numbers(tmp_path, monkeypatch, threads):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ADVBRIDGE_CACHE", str(cache))
    got = run_quick(tmp_path / "run", threads)
    reference = json.loads(REFERENCE.read_text())["cells"]
    assert sorted(got) == sorted(reference)
    for cell, metrics in reference.items():
        for name, value in metrics.items():
            if name in EXACT or value is None:
                assert got[cell][name] == value, (cell, name)
            else:
                assert got[cell][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (cell, name)
    assert {r["model_info"]["weights"] for r in records(tmp_path / "run")} == {"shipped"}
    assert not (cache / "models").exists()  # nothing trained


if __name__ == "__main__":  # rewrite the reference from the shipped weights
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["ADVBRIDGE_CACHE"] = str(Path(tmp) / "cache")
        cells = run_quick(Path(tmp) / "run", 1)
    REFERENCE.write_text(json.dumps({"suite": "goodfellow_fgsm", "quick": True, "threads": 1,
                                     "made_with": "python tests/evaluations/reports/test_reproducible_report.py",
                                     "cells": cells}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE} ({len(cells)} cells)", file=sys.stderr)
