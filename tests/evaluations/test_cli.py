"""The advbridge console script, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("advbridge")


def run(*args, check=True):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(EXE), *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_attacks_lists_the_registry():
    out = run("attacks").stdout
    for name in ("fgsm", "bim", "pgd", "cw", "ead", "deepfool", "newtonfool", "jsma", "step_ll", "lbfgs"):
        assert f"\n{name} " in out or out.startswith(name)
    assert "linf:art/foolbox" in out and "l0:native/art" in out and "l2:native" in out


def test_crossval_writes_contract_json(tmp_path):
    out = tmp_path / "cv"
    proc = run("crossval", "--model", "mnist_tiny_cnn", "--attack", "fgsm", "--norm", "linf", "--n", "10",
               "--param", "eps=0.2", "--backends", "art,foolbox", "--out", str(out), "--threads", "1")
    doc = json.loads((out / "crossval.json").read_text())
    assert list(doc) == ["attack", "norm", "params", "n", "backends", "agreement", "flags"]
    assert doc["n"] == 10 and doc["params"]["eps"] == 0.2 and doc["agreement"] == 1.0
    assert "agreement 100.0%" in proc.stdout and (out / "crossval.md").exists()


def test_crossval_grid_writes_one_folder_per_setting(tmp_path):
    out = tmp_path / "grid"
    run("crossval", "--model", "mnist_tiny_cnn", "--attack", "fgsm", "--n", "5", "--param", "eps=0.1,0.3",
        "--out", str(out), "--threads", "1")
    eps = [json.loads((out / f"setting-{i:02d}" / "crossval.json").read_text())["params"]["eps"] for i in (0, 1)]
    assert eps == [0.1, 0.3]


@pytest.mark.parametrize("args,message", [
    (["--attack", "fgsm", "--param", "epsilon=0.1"], "unknown parameter(s) ['epsilon']"),
    (["--attack", "fgsm", "--backends", "art,cleverhans"], "unknown backend 'cleverhans'"),
    (["--attack", "fgsm", "--param", "eps"], "--param must look like key=value"),
])
def test_crossval_bad_arguments(tmp_path, args, message):
    proc = run("crossval", "--model", "mnist_tiny_cnn", "--n", "4", "--out", str(tmp_path), *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_audit_on_a_user_chosen_model(tmp_path):
    out = tmp_path / "audit"
    proc = run("audit", "--model", "mnist_tiny_cnn", "--quick", "--out", str(out), "--threads", "1")
    assert "failed" in proc.stdout and ", 0 failed" in proc.stdout
    records = json.loads((out / "results.json").read_text())
    labels = {r["label"] for r in records}
    assert "deepfool" in labels and "deepfool (toolkit defaults)" in labels
    own = {r["backend"]: r["params"] for r in records if r["label"] == "deepfool (toolkit defaults)"}
    assert own["art"]["overshoot"] == 1e-6 and own["foolbox"]["overshoot"] == 0.02
    report = (out / "report.md").read_text()
    assert "## Backends compared, sample by sample" in report and "newtonfool (toolkit defaults)" in report
