"""The advbridge console script, run as a real subprocess."""

import json
import os
import sqlite3
import subprocess
import sys
import tomllib
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
    assert list(doc) == ["attack", "norm", "params", "n", "backends", "agreement", "flags", "already_misclassified",
                         "stronger", "stronger_by_pair"]
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
    # the stored suite text is the suite that ran: it names the user's model (#13)
    with sqlite3.connect(out / "results.db") as db:
        (text,), = db.execute("SELECT text FROM suites").fetchall()
    assert tomllib.loads(text)["suite"]["models"] == ["mnist_tiny_cnn"]
    assert {r["model"] for r in records} == {"mnist_tiny_cnn"}


def test_audit_validates_the_model_before_any_work(tmp_path):
    """An unknown --model is the suite's own 'unknown model' error (exit 2), before a store is written (#13)."""
    out = tmp_path / "audit"
    proc = run("audit", "--model", "mnist_nope", "--quick", "--out", str(out), "--threads", "1", check=False)
    assert proc.returncode == 2
    assert "toolkit_audit.toml:" in proc.stderr and "unknown model 'mnist_nope'" in proc.stderr
    assert not (out / "results.db").exists()


SUITES = Path(__file__).resolve().parents[3] / "evaluations" / "suites"


def _suite_model_names() -> set[str]:
    """Every model named in the shipped suite files, read with tomllib: [suite] and [quick] models, [[paper]]
    models, and the model lists of [[estimators]] params."""
    names: set[str] = set()
    for path in SUITES.glob("*.toml"):
        doc = tomllib.loads(path.read_text())
        names |= set(doc["suite"]["models"]) | set(doc.get("quick", {}).get("models", []))
        names |= {p["model"] for p in doc.get("paper", []) if "model" in p}
        names |= {m for e in doc.get("estimators", []) for m in e.get("params", {}).get("models", [])}
    return names


def test_models_lists_every_model_a_suite_names_and_where_its_weights_come_from():
    lines = run("models").stdout.splitlines()
    status = {}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1] in ("zoo", "variant", "generative", "gpdnn"):
            status[fields[0]] = "shipped" if fields[2] == "shipped" else " ".join(fields[2:4])
    names = _suite_model_names()
    assert {"mnist_vae", "mnist_gpdnn", "mnist_cnn+adv_fgsm", "mnist_ae400"} <= names  # the reference is not empty
    assert {n: status.get(n) for n in names} == {n: "shipped" for n in names}
    assert status["mnist_tiny_cnn"] == "shipped" and status["mnist_cnn+entropy"] == "trained locally"


def test_weights_check_verifies_every_shipped_file():
    manifest = json.loads((Path(__file__).resolve().parents[3] / "evaluations" / "weights" / "weights.json")
                          .read_text())
    out = run("weights", "--check").stdout
    assert {line.split()[-1] for line in out.splitlines() if line.startswith("ok")} == set(manifest["checkpoints"])
