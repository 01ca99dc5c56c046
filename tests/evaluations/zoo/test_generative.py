"""Generative suites: Invert-and-Classify systems and BPDA threats in the runner, the invert and kos commands, the
Kos matrices in the report, generator caching with sample grids, and schema errors with file:line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from advbridge.evaluations.cli.app import main
from advbridge.evaluations.zoo.generative import GeneratorRecipe, load_generator
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.execution.cells import Resources
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.schema import SuiteError

INVERT = """\
[suite]
name = "inc_small"
models = ["mnist_tiny_cnn"]
backends = ["art"]

[data]
n = 12

[defense]
threats = ["oblivious", "adaptive:inc"]
generator = { kind = "vae", latent_dim = 8, epochs = 2 }
projection = { steps = 20, restarts = 3, lr = 10.0 }

[[defenses]]
name = "inc"
reformer = "invert"

[[attacks]]
name = "fgsm"
norm = "linf"
params = { eps = 0.2 }
"""


@pytest.fixture(scope="module")
def invert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("inc")
    suite = load_suite("inc_small", text=INVERT)
    summary = run_suite(suite, out, progress=False, device="cpu")
    assert summary.failed == 0
    return suite, out


def test_generator_is_cached_with_sample_grids(mnist5k):
    first = load_generator(GeneratorRecipe("vae", latent_dim=8, epochs=2), mnist5k, "mnist5k", device="cpu")
    again = load_generator(GeneratorRecipe("vae", latent_dim=8, epochs=2), mnist5k, "mnist5k", device="cpu")
    assert first.path == again.path and first.path.exists()
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    samples, recon = first.grids
    assert Image.open(samples).size == (8 * 28 + 9 * 2, 8 * 28 + 9 * 2)
    assert Image.open(recon).format == "PNG"
    with pytest.raises(ValueError, match=r"generator kind must be one of \['vae', 'wgan_gp', 'alpha_gan'\], got 'gan'"):
        GeneratorRecipe("gan")


def test_inc_metrics_equal_the_classifier_on_the_projection(invert_run, tiny, mnist5k):
    suite, out = invert_run
    with ResultStore(out / "results.db") as store:
        cells = {c["record"]["threat"]: c for c in store.cells(status="done")}
    assert set(cells) == {"oblivious", "adaptive:inc"}
    resources = Resources(suite, device="cpu")
    x, y, _ = resources.slice("mnist_tiny_cnn", 12)
    system = resources.systems("mnist_tiny_cnn")["inc"]
    projection = system.reformer.projection
    for threat, cell in cells.items():
        attacked = resources.attack_model("mnist_tiny_cnn", threat)
        assert (threat == "adaptive:inc") == bool(attacked.preprocessing)
        from advbridge.bridge import AttackSpec, run_attack

        adv = run_attack(attacked, x, y, AttackSpec("fgsm", "linf", "none", {"eps": 0.2}), "art", seed=suite.seed,
                         progress=False).x_adv
        with torch.no_grad():
            expected = float((tiny.module(projection.project(adv).images).argmax(1) == y).float().mean())
        assert cell["record"]["metrics"]["accuracy_with_defense[inc]"] == pytest.approx(expected)
    # BPDA: the attack through the projection gets a gradient on every input (ART would otherwise get zero).
    model = resources.attack_model("mnist_tiny_cnn", "adaptive:inc")
    grad = model.art().loss_gradient(x.numpy(), np.eye(10, dtype=np.float32)[y.numpy()])
    assert (np.abs(grad).reshape(len(x), -1).max(1) > 0).all()
    report = (out / "report.md").read_text()
    assert "adaptive:inc" in report and "inc: with defense (oblivious)" in report


@pytest.mark.parametrize("snippet, message", [
    ('generator = { kind = "gan" }', r":\d+: \[defense\].generator: generator kind must be one of"),
    ("projection = { steps = 0 }", r":\d+: \[defense\].projection: steps must be a positive integer, got 0"),
    ('projection = { gradient = "none" }', r":\d+: \[defense\].projection: gradient must be one of"),
    ("projection = { restart = 3 }", r":\d+: unknown projection field\(s\) \['restart'\]"),
    ('threats = ["adaptive:nosuch"]', r":\d+: unknown threat 'adaptive:nosuch'"),
])
def test_bad_generative_tables_name_the_line(snippet, message):
    key = snippet.split(" =")[0]
    lines = [line for line in INVERT.splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join(lines).replace("[defense]\n", f"[defense]\n{snippet}\n")
    with pytest.raises(SuiteError, match=message):
        load_suite("bad.toml", text=text)


def test_unknown_system_classifier_is_rejected():
    text = INVERT.replace('reformer = "invert"\n', 'reformer = "invert"\nclassifier = "robust"\n')
    with pytest.raises(SuiteError, match=r":\d+: classifier must be one of \['base', 'enhanced'\], got 'robust'"):
        load_suite("bad.toml", text=text)


def test_kos_cli_writes_matrices_that_match_the_samples(tmp_path, capsys):
    out = tmp_path / "kos"
    code = main(["kos", "--attack", "latent", "--model", "mnist_vae_tiny", "--n", "30", "--steps", "30",
                 "--out", str(out), "--threads", "1"])
    assert code == 0
    doc = json.loads((out / "kos.json").read_text())
    with ResultStore(out / "results.db") as store:
        (cell,) = store.cells(status="done")
    s = cell["samples"]
    assert len(s["target"]) == 30 and all(t != y for t, y in zip(s["target"], s["label"]))
    # Independent of as_matrices: per (source, target) pair, over the sources classified correctly when clean.
    label, target, pred_adv, pred_clean = (np.asarray(s[k]) for k in ("label", "target", "pred_adv", "pred_clean"))
    expected = np.full((10, 10), np.nan)
    expected_ignore = np.full((10, 10), np.nan)
    for src in range(10):
        for tgt in range(10):
            rows = [i for i in range(len(label)) if label[i] == src and target[i] == tgt and pred_clean[i] == src]
            if rows:
                expected[src, tgt] = sum(pred_adv[i] == tgt for i in rows) / len(rows)
                expected_ignore[src, tgt] = sum(pred_adv[i] != src for i in rows) / len(rows)
    got = np.array([[np.nan if v is None else v for v in row] for row in doc["as_target"]])
    np.testing.assert_allclose(got, expected, equal_nan=True)
    np.testing.assert_allclose(np.array([[np.nan if v is None else v for v in row] for row in doc["as_ignore_target"]]),
                               expected_ignore, equal_nan=True)
    ignore = np.array([[np.nan if v is None else v for v in row] for row in doc["as_ignore_target"]])
    assert np.all((got <= ignore) | np.isnan(got))
    assert np.asarray(doc["counts"]).sum() == 30
    assert doc["mean_as_ignore_target"] > 0.3  # 30 Adam steps at λ = 0.1 already move most reconstructions
    assert len(doc["plots"]) == 2 and "AS_ignore-target" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "success matrices (Kos et al. §4.3)" in report and "| 1→0 |" in report


def test_invert_cli_writes_invert_json(tmp_path):
    out = tmp_path / "inv"
    code = main(["invert", "--model", "mnist_tiny_cnn", "--attack", "fgsm", "--param", "eps=0.1,0.2",
                 "--generator-epochs", "2", "--latent-dim", "8", "--steps", "10", "--restarts", "2", "--n", "10", "--out", str(out),
                 "--threads", "1"])
    assert code == 0
    doc = json.loads((out / "invert.json").read_text())
    assert [row["setting"]["eps"] for row in doc["settings"]] == [0.1, 0.2]
    for row in doc["settings"]:
        assert 0 <= row["accuracy_no_defense"] <= 1 and 0 <= row["accuracy_with_defense"] <= 1
    with pytest.raises(SystemExit):
        main(["invert", "--attack", "fgsm", "--generator", "gan", "--out", str(out)])
