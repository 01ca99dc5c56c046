"""The suite runner on the real SQLite store: resume, --force, kill -9 and resume, concurrent runs, reports."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advbridge.evaluations.reports.render import write_reports
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.load import load_suite

EXE = Path(sys.executable).with_name("advbridge")

SMALL = """\
[suite]
name = "small"
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]

[data]
n = 40

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = [0.05, 0.1, 0.2] }

[[attacks]]
name = "deepfool"
norm = "l2"
n = 8
params = { steps = 10 }
"""

# Twelve PGD cells of a few tenths of a second each: long enough to be killed in the middle.
SLOW = """\
[suite]
name = "slow"
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]

[data]
n = 300

[[attacks]]
name = "pgd"
norm = "linf"
params = { eps = [0.02, 0.04, 0.06, 0.08, 0.1, 0.12], steps = 30 }
"""


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([str(EXE), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)


def _metrics(out: Path) -> dict:
    return {r["cell"]: r["metrics"] for r in json.loads((out / "results.json").read_text())}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("small")
    summary = run_suite(load_suite("small", text=SMALL), out, progress=False)
    return out, summary


def test_run_writes_store_and_reports(small_run):
    out, summary = small_run
    assert summary.total == 8 and summary.computed == 8 and summary.failed == 0
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 8
    for r in records:
        assert {"suite", "cell", "model", "attack", "norm", "backend", "params", "metrics", "time_s"} <= set(r)
        assert {"clean_accuracy", "adversarial_accuracy", "success_rate", "median_l2"} <= set(r["metrics"])
    fgsm = [r for r in records if r["attack"] == "fgsm"]
    acc = {(r["backend"], r["setting"]["eps"]): r["metrics"]["adversarial_accuracy"] for r in fgsm}
    assert acc[("art", 0.05)] >= acc[("art", 0.2)]  # the security curve goes down with eps
    assert acc[("art", 0.1)] == acc[("foolbox", 0.1)]
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 9 and csv_lines[0].startswith("suite,cell,model")
    report = (out / "report.md").read_text()
    assert "## Backends compared, sample by sample" in report and "security_small_fgsm_linf.png" in report
    assert re.search(r"- `mnist_tiny_cnn`: test accuracy \d+\.\d\d% \(zoo, shipped weights\)\.", report)
    assert (out / "plots" / "security_small_fgsm_linf.png").stat().st_size > 1000
    assert list((out / "plots").glob("minimal_small_*deepfool*.png"))
    assert json.loads(next((out / "crossval").glob("*fgsm*eps0.1/crossval.json")).read_text())["agreement"] == 1.0


def test_rerun_skips_and_force_recomputes(small_run):
    out, _ = small_run
    suite = load_suite("small", text=SMALL)
    again = run_suite(suite, out, progress=False)
    assert again.computed == 0 and again.skipped == 8
    with ResultStore(out / "results.db") as store:
        assert set(store.finish_counts().values()) == {1}
    forced = run_suite(suite, out, force=True, progress=False)
    assert forced.computed == 8
    with ResultStore(out / "results.db") as store:
        assert set(store.finish_counts().values()) == {2}


def test_report_rerenders_from_the_store_alone(small_run):
    out, _ = small_run
    before = (out / "results.json").read_text()
    (out / "results.json").unlink()
    (out / "report.md").unlink()
    proc = subprocess.run([str(EXE), "report", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "results.json").read_text()) == json.loads(before)
    assert (out / "report.md").read_text().startswith("# Suite `small`")


def test_report_without_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results store"):
        write_reports(tmp_path)


def test_sigkill_mid_run_then_resume_loses_and_repeats_nothing(tmp_path, tiny):
    suite_file = tmp_path / "slow.toml"
    suite_file.write_text(SLOW)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli("run", str(suite_file), "--out", str(killed), "--threads", "1")
    db = killed / "results.db"
    deadline = time.time() + 240
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    finished = conn.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
            except sqlite3.OperationalError:
                finished = 0
            if finished >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= finished < 12

    with ResultStore(db) as store:
        assert store.integrity_check() == "ok"
        done_before = store.done_keys()
    assert 3 <= len(done_before) < 12

    resumed = _cli("run", str(suite_file), "--out", str(killed), "--threads", "1")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    with ResultStore(db) as store:
        assert store.integrity_check() == "ok"
        counts = store.finish_counts()
        assert len(store.done_keys()) == 12                     # none lost
        assert all(counts[k] == 1 for k in counts)              # none computed twice
        assert done_before <= set(counts)

    uninterrupted = _cli("run", str(suite_file), "--out", str(clean), "--threads", "1")
    assert uninterrupted.wait(timeout=600) == 0
    assert _metrics(killed) == _metrics(clean)                  # identical to a run that was never killed


def test_two_concurrent_runs_share_one_store(tmp_path, tiny):
    suite_file = tmp_path / "small.toml"
    suite_file.write_text(SMALL)
    out = tmp_path / "shared"
    procs = [_cli("run", str(suite_file), "--out", str(out), "--threads", "1") for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    with ResultStore(out / "results.db") as store:
        assert store.integrity_check() == "ok"
        assert len(store.done_keys()) == 8
        assert len(store.cells()) == 8
    assert len(json.loads((out / "results.json").read_text())) == 8
