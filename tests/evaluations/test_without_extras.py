"""An install without the optional extras (``advbridge[ray]``, ``advbridge[gp]``), for real: one fresh Python whose
import system refuses Ray and GPyTorch (a ``sys.meta_path`` finder installed before advbridge is imported) runs
every check, so the tests run — and mean what they say — also where ``make test`` has installed the extras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SMALL = """\
[suite]
name = "small_ray"
models = ["mnist_tiny_cnn"]
[data]
n = 4
[[attacks]]
name = "fgsm"
params = { eps = 0.1 }
"""

BLOCKER = '''
import sys

BLOCKED = ("ray", "gpytorch")


class BlockExtras:
    """What an install without the extras looks like: ``import ray`` (or any ``ray.*``, or gpytorch) raises."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, BlockExtras())
'''

CHECKS = '''
import contextlib
import io
from pathlib import Path

result = {"import_errors": {}}
for name in ("ray", "ray.util", "gpytorch"):
    try:
        __import__(name)
        result["import_errors"][name] = None
    except ImportError as err:
        result["import_errors"][name] = type(err).__name__

import advbridge.bridge, advbridge.defenses, advbridge.evaluations.cli.app, advbridge.evaluations.execution.runner
import advbridge.evaluations.reports.render, advbridge.evaluations.zoo.classifiers, advbridge.evaluations.suites.suite
result["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)

from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.suites.load import load_suite

try:
    run_suite(load_suite("small_ray", text=SMALL), Path("out"), executor="ray", progress=False)
    result["run_suite"] = None
except Exception as err:
    result["run_suite"] = [type(err).__name__, str(err)]
result["store_written"] = Path("out", "results.db").exists()

Path("small.toml").write_text(SMALL)
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    try:
        code = advbridge.evaluations.cli.app.main(["run", "small.toml", "--executor", "ray", "--out", "cli_out"])
    except SystemExit as exit_:
        code = exit_.code
result["cli"] = [code, stderr.getvalue()]

try:
    import advbridge.defenses.gpdnn
    result["defenses.gpdnn"] = None
except ImportError as err:
    result["defenses.gpdnn"] = str(err)
from advbridge.evaluations.zoo.gpdnn import load_gpdnn
try:
    load_gpdnn("mnist_gpdnn", "mnist5k", device="cpu")
    result["load_gpdnn"] = None
except ImportError as err:
    result["load_gpdnn"] = str(err)
'''


@pytest.fixture(scope="module")
def without_extras(tmp_path_factory) -> dict:
    """The checks' results from a Python where Ray and GPyTorch cannot be imported."""
    folder = tmp_path_factory.mktemp("without_extras")
    script = (BLOCKER + f"SMALL = {SMALL!r}\n" + textwrap.dedent(CHECKS)
              + "\nimport json\nprint('RESULT ' + json.dumps(result))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=folder, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(v for v in proc.stdout.splitlines() if v.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_the_blocker_really_blocks(without_extras):
    assert without_extras["import_errors"] == {"ray": "ModuleNotFoundError", "ray.util": "ModuleNotFoundError",
                                               "gpytorch": "ModuleNotFoundError"}


def test_base_install_never_imports_ray_or_gpytorch(without_extras):
    assert without_extras["loaded"] == []


def test_missing_ray_is_a_clear_error(without_extras):
    assert without_extras["run_suite"] == [
        "ValueError", "executor 'ray' needs Ray, which is an optional extra: pip install 'advbridge[ray]' (and the "
                      "same torch version on every worker)"]
    assert without_extras["store_written"] is False  # refused before any work


def test_missing_ray_through_the_cli(without_extras):
    code, stderr = without_extras["cli"]
    assert code not in (0, None)
    assert "pip install 'advbridge[ray]'" in stderr and "Traceback" not in stderr


def test_missing_gpytorch_is_a_clear_error(without_extras):
    assert without_extras["defenses.gpdnn"] == "advbridge.defenses.gpdnn needs GPyTorch: pip install 'advbridge[gp]'"
    assert without_extras["load_gpdnn"] == "GPDNN model 'mnist_gpdnn' needs GPyTorch: pip install 'advbridge[gp]'"
