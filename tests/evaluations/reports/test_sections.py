"""The report-section registry: every registered section renders on a tiny hand-made store (cells of every kind a
section reads), in the registered order; a duplicate name is refused; the renderer never imports a section module
and sections never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.reports import render
from advbridge.evaluations.reports.render import write_reports
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport
from advbridge.evaluations.suites.load import load_suite

NAMES = ["summary", "attacks", "defenses", "kos", "hardness", "meanfield", "power_law", "transfer", "paper",
         "backends", "sanity", "failed", "plots"]
#: A heading (or line) each section writes on the tiny case.
HEADINGS = {
    "summary": "# Suite `tiny`", "attacks": "## FGSM (linf)", "defenses": "## Defenses",
    "kos": "## Attacks on the generative model", "hardness": "## JSMA hardness", "meanfield": "## Linear response",
    "power_law": "## Power law", "transfer": "## Transfer between the NN and the GPDNN", "paper": "## Paper vs ours",
    "backends": "## Backends compared", "sanity": "## Sanity flags", "failed": "## Failed cells", "plots": "## Plots",
}
TINY = """\
[suite]
name = "tiny"
description = "A hand-made store for the section registry test."
models = ["mnist_tiny_cnn"]
backends = ["art", "foolbox"]
metrics = ["clean_accuracy", "adversarial_accuracy", "success_rate", "median_l2"]

[data]
n = 20

[defense]
threats = ["oblivious", "adaptive"]

[[defenses]]
name = "magnet"
reformer = "I"
detectors = [{ kind = "reconstruction", ae = "I", p = 2, drop_rate = 0.01 }]

[power_law]
n_boot = 20

[[attacks]]
name = "fgsm"
label = "FGSM"
params = { eps = [0.1, 0.2] }

[[paper]]
attack = "fgsm"
params = { eps = 0.1 }
metric = "adversarial_accuracy"
value = 0.5
source = "made up for the test"

[[estimators]]
name = "domain_shift"
models = ["mnist_tiny_cnn"]
params = { models = ["mnist_tiny_cnn"] }
"""
N = 20


def _cell(rng, i: int, model: str, attack: str, norm: str, backend: str, setting: dict, threat: str = "none",
          label: str | None = None, targeted: str = "none") -> tuple[dict, dict]:
    y = rng.integers(0, 10, N)
    pred_clean = np.where(np.arange(N) % 7 == 0, (y + 1) % 10, y)
    pred_adv = np.where(np.arange(N) % 2 == 0, (y + 2) % 10, y)
    samples = {"index": list(range(N)), "label": y.tolist(), "pred_clean": pred_clean.tolist(),
               "pred_adv": pred_adv.tolist(), "success": (pred_adv != y).tolist(),
               "already_misclassified": (pred_clean != y).tolist(), "nonfinite": [False] * N,
               **{k: np.round(rng.random(N), 3).tolist() for k in ("l0", "l1", "l2", "linf")}}
    metrics = {"clean_accuracy": 0.85, "adversarial_accuracy": float(np.round(0.6 - setting.get("eps", 0), 3)),
               "success_rate": 0.5, "median_l2": 1.25, "already_misclassified": 3}
    if targeted == "random":
        samples["target"] = ((y + 1 + np.arange(N) % 9) % 10).tolist()
    if threat != "none":
        metrics.update({"accuracy_with_defense[magnet]": 0.7, "detection_rate[magnet]": 0.4,
                        "clean_accuracy_with_defense[magnet]": 0.8, "false_positive_rate[magnet]": 0.05,
                        "already_misclassified[magnet]": 2})
        samples.update({"scores[magnet/rec_I]": np.round(rng.random(N) + 0.3, 3).tolist(),
                        "clean_scores[magnet/rec_I]": np.round(rng.random(N), 3).tolist(),
                        "threshold[magnet/rec_I]": 0.8})
    record = {"suite": "tiny", "cell": f"c{i}", "model": model, "attack": attack, "norm": norm, "backend": backend,
              "label": label or attack, "setting": setting, "params": dict(setting), "targeted": targeted, "n": N,
              "threat": threat, "metrics": metrics, "flags": ["randomized: made up"] if i == 0 else [],
              "time_s": 0.5, "model_info": {"test_accuracy": 0.9}}
    return record, samples


def _estimates(rng) -> list[tuple[dict, dict]]:
    nan_diag = [[None if s == t else round(float(v), 3) for t, v in enumerate(row)]
                for s, row in enumerate(rng.random((10, 10)))]
    hardness = {"levels": [0.01 * k for k in range(1, 10)], "hardness": nan_diag, "adversarial_distance": nan_diag,
                "robustness": 0.4, "success_rate": 0.9, "mean_distortion_all": 0.05,
                "mean_distortion_successful": 0.04, "n_samples": 10, "time_s": 1.0, "vjp_calls": 60,
                "vjp_calls_separate_runs": 160, "saliency_on": "probs"}
    direction = {"method": "linearized", "gamma_mean_by_rank": [-3.5, 0.7, 0.1], "exponents": {"2": 0.1, "3": 1.2},
                 "eps_lin_median": 0.2, "eps_mf_median": None}
    meanfield_samples = {"used": [True] * N, **{f"eps_{kind}[{d}]": [None] + [0.01 * k for k in range(1, N)]
                                                for kind in ("lin", "mf") for d in ("l2_fgm", "fgsm")}}
    models = ["mnist_lenet", "mnist_gpdnn"]
    transfer = {"rows": models, "columns": models, "kinds": ["attack", "attack"], "sigmas": [None, None],
                "error": [[1.0, 0.1], [0.2, 1.0]], "log_likelihood": [[-0.7, -0.1], [-0.2, -0.8]],
                "counted": [[9, 9], [9, 9]], "distortion": [0.05, 0.04], "success_rate": [1.0, 0.9],
                "n_attacked": [9, 9], "n_counted": [9, 9], "clean_error": [0.01, 0.02],
                "clean_log_likelihood": [-0.04, -0.05], "n": 10, "backend": "foolbox", "seed": 0, "time_s": 2.0,
                "spec": {"name": "cw", "norm": "l2", "targeted": "none", "params": {}}}
    table1 = [{"model": m, "distortion": 0.05, "success_rate": 1.0, "n_attacked": 9, "n_counted": 9,
               "train_error": 0.01, "test_error": 0.02} for m in models]
    table = {"mnist": {m: {"accuracy": 0.99, "log_likelihood": -0.04, "n": 100} for m in models}}
    results = [("hardness", hardness, {}), ("meanfield", {"l2_fgm": direction, "fgsm": direction}, meanfield_samples),
               ("transfer", {"transfer": transfer, "table1": table1}, {}), ("domain_shift", {"table": table}, {})]
    return [({"kind": "estimator", "suite": "tiny", "cell": f"e{i}", "model": "mnist_tiny_cnn", "estimator": name,
              "label": name, "n": N, "params": {}, "metrics": {}, "result": result, "time_s": 1.0},
             {"index": list(range(N)), **samples}) for i, (name, result, samples) in enumerate(results)]


def tiny_store(path: Path) -> Path:
    """A store holding the tiny suite, attack cells of every kind a section reads, estimates and a failed cell."""
    rng = np.random.default_rng(0)
    specs = [("mnist_tiny_cnn", "fgsm", "linf", "art", {"eps": 0.1}, "none", "FGSM", "none"),
             ("mnist_tiny_cnn", "fgsm", "linf", "art", {"eps": 0.2}, "none", "FGSM", "none"),
             ("mnist_tiny_cnn", "fgsm", "linf", "foolbox", {"eps": 0.1}, "none", "FGSM", "none"),
             ("mnist_tiny_cnn", "fgsm", "linf", "art", {"eps": 0.1}, "oblivious", "FGSM", "none"),
             ("mnist_tiny_cnn", "fgsm", "linf", "art", {"eps": 0.1}, "adaptive", "FGSM", "none"),
             ("mnist_vae", "kos_latent", "l2", "native", {"lam": 0.1}, "none", None, "random"),
             ("mnist_lenet", "cw", "l2", "foolbox", {}, "none", None, "none"),
             ("mnist_gpdnn", "cw", "l2", "foolbox", {}, "none", None, "none")]
    with ResultStore(path) as store:
        store.save_suite("tiny", TINY, False)
        for i, (model, attack, norm, backend, setting, threat, label, targeted) in enumerate(specs):
            record, samples = _cell(rng, i, model, attack, norm, backend, setting, threat, label, targeted)
            store.commit_cell(f"k{i}", "tiny", {"i": i}, record, samples, record["time_s"])
        for j, (record, samples) in enumerate(_estimates(rng)):
            store.commit_cell(f"e{j}", "tiny", {"e": j}, record, samples, record["time_s"])
        store.commit_failure("broken", "tiny", {"i": -1}, "RuntimeError: made up")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_report")
    tiny_store(out / "results.db")
    write_reports(out)
    return out


def test_the_registered_sections_and_their_order():
    assert list(SECTIONS) == NAMES
    assert all(isinstance(s, Section) and s.name == name for name, s in SECTIONS.items())


def test_a_section_registered_twice_is_refused():
    with pytest.raises(ValueError, match="report section 'kos' is registered twice"):
        SECTIONS.add(SECTIONS["kos"], rank=1)
    assert list(SECTIONS) == NAMES


def test_every_section_renders_the_tiny_case(rendered, tmp_path):
    with ResultStore(rendered / "results.db") as store:
        cells = store.cells()
    done = [c for c in cells if c["status"] == "done"]
    estimates = [c for c in done if c["record"].get("kind") == "estimator"]
    done = [c for c in done if c["record"].get("kind") != "estimator"]
    failed = [c for c in cells if c["status"] == "failed"]
    suite = load_suite("tiny", text=TINY)
    data = ReportData(done, estimates, {"tiny": suite})
    plots: dict[str, list[str]] = {}
    for name, section in SECTIONS.items():
        if section.plots is not None:
            plots[name] = section.plots(data, tmp_path / "plots")
            assert plots[name], name
            assert all((tmp_path / p).stat().st_size > 1000 for p in plots[name]), name
    assert set(plots) == {"attacks", "defenses", "kos", "hardness", "meanfield", "power_law", "transfer"}
    everything = [p for made in plots.values() for p in made]
    report = SuiteReport("tiny", suite, done, failed, estimates, render.backend_comparisons(done), everything,
                         plots["attacks"])
    for name, section in SECTIONS.items():
        text = "\n".join(section.markdown(report))
        assert HEADINGS[name] in text, name
    for name in ("defenses", "kos", "hardness", "meanfield", "power_law", "transfer"):  # each embeds its own
        assert any(f"]({p})" in "\n".join(SECTIONS[name].markdown(report)) for p in plots[name]), name


def test_the_report_is_the_sections_in_order(rendered):
    text = (rendered / "report.md").read_text()
    at = [text.index(HEADINGS[name]) for name in NAMES]
    assert at == sorted(at)
    assert "## Domain shift (Bradshaw et al. 2017, §8.3)" in text and "## C&W L2 against the NN" in text
    assert "| made up for the test |" in text and "### Graybox" not in text
    pngs = sorted(p.name for p in (rendered / "plots").iterdir())
    assert all(f"(plots/{p})" in text for p in pngs)  # every plot is shown by one section


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}


def test_the_renderer_and_the_sections_never_import_a_section():
    reports = Path(render.__file__).parent
    assert not any(m.startswith("advbridge.evaluations.reports.sections") for m in _imports(reports / "render.py"))
    for path in (reports / "sections").glob("*.py"):
        assert not any(m.startswith("advbridge.evaluations.reports.sections") for m in _imports(path)), path.name
