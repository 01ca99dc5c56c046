"""The one definition of success in every consumer: suite metrics, defended-system metrics, Kos matrices and the
rendered reports (Definitions paragraph, each plot embedded once). Expected values are worked out by hand."""

import re

import numpy as np
import pytest
import torch
from advbridge.bridge import AttackSpec, Model
from advbridge.defenses.magnet import MagNetOutputs
from advbridge.evaluations.systems.defended import defense_metrics
from advbridge.evaluations.analysis.kos import as_matrices
from advbridge.evaluations.reports.sections.kos import kos_markdown
from advbridge.evaluations.reports.cells import cell_matrices
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.execution.cells import CellInputs, compute_cell
from advbridge.evaluations.core.metrics import METRICS
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.suite import Cell
from torch import nn

W = np.array([[10.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
B = np.array([0.0, -5.0, 0.0])


def linear_model() -> Model:
    """Three classes on a 1×1×2 input, z = W x + b."""
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(B, dtype=torch.float32))
    return Model(nn.Sequential(nn.Flatten(), layer), (1, 1, 2), nb_classes=3, device="cpu")


def _cell(spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, backend: str = "art"):
    model = linear_model()
    cell = Cell("s", "linear", spec, backend, spec.name, len(x), "shared")
    inputs = CellInputs(model, x, y, np.arange(len(x)), (), {})
    return compute_cell(cell, inputs, "key", 0, METRICS, progress=False)


@pytest.mark.parametrize("backend", ["art", "foolbox"])
def test_suite_metrics_count_only_correctly_classified_inputs(backend):
    # a = (1, 0): z = (10, -5, 0), class 0, labelled 2 (already misclassified); FGSM pushes it out of the box,
    #   so it stays put (norm 0) and stays wrong.
    # b = (0.2, 0.8): z = (2, -4.2, 1.6), class 0 = label; FGSM ε = 0.05 -> (0.15, 0.85), class 2: broken.
    # c = (0.1, 0.9): z = (1, -4.1, 1.8), class 2 = label; -> (0.15, 0.85), z = (1.5, -4.15, 1.7): class 2, held.
    x = torch.tensor([[1.0, 0.0], [0.2, 0.8], [0.1, 0.9]]).reshape(3, 1, 1, 2)
    y = torch.tensor([2, 0, 2])
    record, samples = _cell(AttackSpec("fgsm", "linf", params={"eps": 0.05}), x, y, backend)
    m = record["metrics"]
    assert samples["pred_adv"] == [0, 2, 2]
    assert samples["success"] == [False, True, False]  # d798862: a was a "success" with zero perturbation
    assert samples["already_misclassified"] == [True, False, False]
    assert m["already_misclassified"] == 1
    assert m["success_rate"] == pytest.approx(1 / 2)           # d798862: 2/3
    assert m["clean_accuracy"] == pytest.approx(2 / 3)
    assert m["adversarial_accuracy"] == pytest.approx(1 / 3)   # only c is right clean and attacked
    assert m["error_rate"] == pytest.approx(2 / 3)
    step = np.hypot(0.05, 0.05)
    assert m["mean_l2"] == pytest.approx(step, rel=1e-5)       # d798862: (0 + step) / 2
    assert m["median_l2"] == pytest.approx(step, rel=1e-5)
    assert m["distortion_successful"] == pytest.approx(1.0)    # b changed both of its 2 features (d798862: 0.5)
    assert m["distortion_all"] == pytest.approx(1.0)           # over b and c (d798862: (0 + 2 + 2) / 3 / 2)


def test_robust_accuracy_of_a_suite_cell_counts_already_misclassified_as_wrong():
    # Targeted FGSM ε = 1 toward class 1: a = (0.9, 0.1), labelled 2 but class 0 when clean, lands on (0, 1),
    # z = (0, -4, 2): class 2, its label, by accident; c = (0.1, 0.9) lands on (0, 0): class 0, wrong.
    x = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).reshape(2, 1, 1, 2)
    y = torch.tensor([2, 2])
    record, samples = _cell(AttackSpec("fgsm", "linf", targeted=(1, 1), params={"eps": 1.0}), x, y)
    assert samples["pred_adv"] == [2, 0]
    assert record["metrics"]["adversarial_accuracy"] == 0.0  # d798862: 0.5 (a counted as robust)
    assert record["metrics"]["error_rate"] == 1.0


def test_defense_metrics_count_already_misclassified_inputs_as_wrong():
    y = np.array([0, 1, 2, 3])
    none: dict = {}
    clean = MagNetOutputs(none, none, rejected=np.zeros(4, bool), pred_raw=np.array([0, 1, 9, 3]),
                          pred_reformed=np.array([0, 1, 2, 9]))
    adv = MagNetOutputs(none, none, rejected=np.array([False, True, True, True]), pred_raw=np.array([5, 5, 5, 3]),
                        pred_reformed=np.array([0, 5, 5, 3]))
    m = defense_metrics("s", adv, clean, y)
    # Input 3 is wrong after reforming when clean: never handled by the defended classifier, whatever is rejected.
    assert m["accuracy_with_defense[s]"] == pytest.approx(3 / 4)   # d798862: 1.0
    # Input 2 is wrong for the bare classifier when clean.
    assert m["accuracy_detector_only[s]"] == pytest.approx(2 / 4)  # d798862: 3/4
    assert m["accuracy_reformer_only[s]"] == pytest.approx(1 / 4)  # d798862: 2/4
    assert m["detection_rate[s]"] == pytest.approx(3 / 4)
    assert m["clean_accuracy_with_defense[s]"] == pytest.approx(3 / 4)
    assert m["false_positive_rate[s]"] == 0.0
    assert m["already_misclassified[s]"] == 1


def test_kos_matrices_leave_out_already_misclassified_source_images():
    # Pair 0 -> 1 holds two inputs: one correct when clean whose attack failed (ŷ = 0), one misclassified when clean
    # (clean prediction 2) whose ŷ hits the target. Pair 1 -> 0: one correct input, hit.
    source, target, pred, pred_clean = [0, 0, 1], [1, 1, 0], [0, 1, 0], [0, 2, 1]
    m = as_matrices(source, target, pred, nb_classes=3, pred_clean=pred_clean)
    assert m["as_target"][0, 1] == 0.0 and m["as_ignore_target"][0, 1] == 0.0  # d798862: 0.5 and 0.5
    assert m["as_target"][1, 0] == 1.0
    assert m["counts"][0, 1] == 2 and m["counted"][0, 1] == 1 and m["already_misclassified"][0, 1] == 1
    cell = {"record": {"suite": "k", "model": "vae", "attack": "kos_latent", "setting": {}, "n": 3,
                       "metrics": {"median_l2": 1.0}},
            "samples": {"label": source, "target": target, "pred_adv": pred, "pred_clean": pred_clean}}
    np.testing.assert_array_equal(cell_matrices(cell)["as_target"][:3, :3], m["as_target"])  # K = 10 there
    text = "\n".join(kos_markdown([cell], []))
    assert "1 of 3 inputs already misclassified" in text
    assert "| 0 | 2 | 1 |" in text  # source 0: 2 inputs, 1 already misclassified


REPORT_SUITE = """\
[suite]
name = "defs"
models = ["mnist_tiny_cnn"]
backends = ["art"]
[data]
n = 24
[[attacks]]
name = "fgsm"
norm = "l2"
params = { eps = [0.5, 1.0] }
[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = [0.05, 0.1] }
[[estimators]]
name = "meanfield"
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("defs")
    run_suite(load_suite("defs", text=REPORT_SUITE), out, progress=False, device="cpu")
    return out, (out / "report.md").read_text()


def test_report_states_the_definitions(report):
    _, text = report
    assert "**Definitions.**" in text and "*Already misclassified*" in text
    assert "| already misclassified |" in text
    assert "Stale cells" not in text


def test_report_embeds_each_plot_once(report):
    # d798862: the mean-field plots were embedded by their section and again under "## Plots".
    out, text = report
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any("meanfield_" in p for p in embedded)
    assert len(embedded) == len(set(embedded)), sorted(p for p in embedded if embedded.count(p) > 1)
    pngs = {f"plots/{p.name}" for p in (out / "plots").glob("*.png")}
    assert set(embedded) == pngs  # every plot written is shown
