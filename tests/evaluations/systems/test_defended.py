"""Suites with defenses: schema errors, threats, the MagNet metric per system against the library, defend CLI."""

import copy
import json
import re

import numpy as np
import pytest
import torch

from advbridge.bridge import AttackSpec, run_attack
from advbridge.defenses.magnet import MagNet, RandomizedMagNet, ReconstructionErrorDetector, graybox_random_row
from advbridge.evaluations.cli.app import main
from advbridge.evaluations.systems.defended import DefenseBuilder
from advbridge.evaluations.execution.runner import run_suite
from advbridge.evaluations.execution.cells import Resources
from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.schema import SuiteError
from suite_texts import DEFENDED



@pytest.fixture(scope="module")
def defended_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("defended")
    suite = load_suite("defended", text=DEFENDED)
    summary = run_suite(suite, out, progress=False)
    assert summary.failed == 0 and summary.computed == 4
    return suite, out


def _records(out):
    return {r["threat"]: r for r in json.loads((out / "results.json").read_text())}


def hand_metrics(system: MagNet, x: torch.Tensor, y: np.ndarray, x_clean: torch.Tensor) -> dict[str, float]:
    """MagNet's metric and its ablations written out from the system's parts (§1.4, §2.5): a reconstruction
    detector flags ``mean |x − ae(x)|^p >= threshold`` (other detectors: their own scores), an input is rejected
    when any detector flags it, the reformer is ``clip(ae(x), 0, 1)``."""
    def parts(v: torch.Tensor):
        with torch.no_grad():
            rejected = torch.zeros(len(v), dtype=torch.bool)
            for det in system.detectors:
                if isinstance(det, ReconstructionErrorDetector):
                    score = (v - det.ae(v)).abs().pow(det.p).flatten(1).mean(1)
                else:
                    score = torch.from_numpy(det.score(v))
                rejected |= score >= det.threshold
            raw = system.classifier(v).argmax(1)
            reformed = system.classifier(system.reformer.ae(v).clamp(0, 1)).argmax(1)
        return rejected.numpy(), raw.numpy() == y, reformed.numpy() == y

    rejected, raw_ok, reformed_ok = parts(x)
    clean_rejected, _, clean_reformed_ok = parts(x_clean)
    return {"accuracy_with_defense": float(np.mean(rejected | reformed_ok)),
            "accuracy_reformer_only": float(np.mean(reformed_ok)),
            "accuracy_detector_only": float(np.mean(rejected | raw_ok)),
            "detection_rate": float(np.mean(rejected)),
            "false_positive_rate": float(np.mean(clean_rejected)),
            "clean_accuracy_with_defense": float(np.mean(~clean_rejected & clean_reformed_ok))}


def test_cells_follow_the_threats(defended_run):
    suite, out = defended_run
    records = _records(out)
    assert set(records) == {"oblivious", "adaptive", "adaptive:D0", "adaptive:D1"}
    systems = {"magnet", "mid", "A", "B", "random"}
    for r in records.values():
        for name in systems:
            for metric in ("accuracy_with_defense", "detection_rate", "false_positive_rate",
                           "clean_accuracy_with_defense", "accuracy_reformer_only", "accuracy_detector_only"):
                assert 0.0 <= r["metrics"][f"{metric}[{name}]"] <= 1.0
    # the oblivious attack targets the bare classifier, the adaptive one the classifier behind reformer I: the
    # bare classifier fails on more of the oblivious examples
    assert records["oblivious"]["metrics"]["adversarial_accuracy"] < records["adaptive"]["metrics"]["adversarial_accuracy"]


def test_runner_metrics_match_the_library(defended_run, tiny, mnist5k):
    """Recompute the oblivious cell by hand: same AEs (cached), same thresholds, same attack, same metric."""
    suite, out = defended_run
    resources = Resources(suite, device="cpu")
    x, y, _ = resources.slice("mnist_tiny_cnn", 30)
    builder = DefenseBuilder(suite.defense, suite.defenses, mnist5k, "mnist5k", suite.seed, "cpu")
    systems = builder.systems(resources.model("mnist_tiny_cnn"))
    assert isinstance(systems["magnet"], MagNet) and isinstance(systems["random"], RandomizedMagNet)
    for threat in ("oblivious", "adaptive"):
        attacked = builder.attack_model(resources.model("mnist_tiny_cnn"), threat)
        adv = run_attack(attacked, x, y, AttackSpec("fgsm", "linf", params={"eps": 0.15}), "art", seed=suite.seed)
        record = _records(out)[threat]
        assert record["metrics"]["success_rate"] == pytest.approx(adv.success_rate)
        for name in ("magnet", "mid", "A", "B"):
            ev = systems[name].evaluate(adv.x_adv, y.numpy())
            assert record["metrics"][f"accuracy_with_defense[{name}]"] == pytest.approx(ev.with_defense)
            assert record["metrics"][f"detection_rate[{name}]"] == pytest.approx(ev.detection_rate)
            assert record["metrics"][f"false_positive_rate[{name}]"] == pytest.approx(
                float(systems[name].detect(x).mean()))
            # every MagNet metric of the cell, against the system's parts put together by hand
            for metric, value in hand_metrics(systems[name], adv.x_adv, y.numpy(), x).items():
                assert record["metrics"][f"{metric}[{name}]"] == pytest.approx(value, abs=1e-12), (threat, name, metric)
        assert record["metrics"]["adversarial_accuracy"] == pytest.approx(
            float((tiny.predict(adv.x_adv) == y).float().mean()))
    # The suite's detectors reject almost nothing here (2-epoch AEs), so "rejected OR correct" is not yet told apart
    # from other combinations: with every threshold at the median score of clean + adversarial inputs, about half
    # are rejected and some of those are classified correctly (after reforming, or raw).
    for name in ("magnet", "mid"):
        system = copy.deepcopy(systems[name])
        both_x, both_y = torch.cat([x, adv.x_adv]), np.concatenate([y.numpy(), y.numpy()])
        for det in system.detectors:
            det.threshold = float(np.median(det.score(both_x)))
        outputs = system.run(both_x)
        assert (outputs.rejected & (outputs.pred_reformed == both_y)).any()
        assert (outputs.rejected & (outputs.pred_raw == both_y)).any()
        assert (~outputs.rejected & (outputs.pred_reformed != both_y)).any()
        ev = system.evaluate(both_x, both_y)
        hand = hand_metrics(system, both_x, both_y, both_x)
        for metric in ("with_defense", "reformer_only", "detector_only", "detection_rate"):
            key = metric if metric == "detection_rate" else f"accuracy_{metric}"
            assert getattr(ev, metric) == pytest.approx(hand[key], abs=1e-12), (name, metric)


def test_report_shows_threats_side_by_side_and_the_graybox_matrix(defended_run):
    suite, out = defended_run
    report = (out / "report.md").read_text()
    assert "magnet: with defense (oblivious) | magnet: with defense (adaptive)" in report
    assert "### Detectors: TPR at the chosen FPR" in report and "| Random (column mean) |" in report
    records = _records(out)
    matrix = np.array([[records[t]["metrics"][f"accuracy_with_defense[{s}]"] for t in ("adaptive:D0", "adaptive:D1")]
                       for s in ("A", "B")])
    row = next(line for line in report.splitlines() if line.startswith("| Random (column mean) |"))
    shown = [float(v.strip().rstrip("%")) / 100 for v in row.split("|")[2:-1]]
    np.testing.assert_allclose(shown, graybox_random_row(matrix), atol=0.0006)
    paper_row = next(line for line in report.splitlines() if "made up for the test" in line)
    assert "| 50.0% |" in paper_row and "mnist_tiny_cnn/art" in paper_row
    pngs = sorted(p.name for p in (out / "plots").glob("roc_*.png"))
    assert pngs and all((out / "plots" / p).stat().st_size > 1000 for p in pngs)
    with ResultStore(out / "results.db") as store:
        samples = store.cells()[0]["samples"]
    assert any(k.startswith("clean_scores[magnet/") for k in samples)


@pytest.mark.parametrize("snippet, message", [
    ('[[defenses]]\nname = "x"\ndetectors = [{ kind = "kde", ae = "I" }]\n', "detector kind must be one of"),
    ('[[defenses]]\nname = "x"\ndetectors = [{ kind = "reconstruction", ae = "III" }]\n', "unknown autoencoder 'III'"),
    ('[[defenses]]\nname = "x"\nreformer = "none"\n', "needs detectors or a reformer"),
    ('[[defenses]]\nname = "x"\nrandomize = ["y", "z"]\n', "randomize must list at least 2 systems defined above"),
    ('[[defenses]]\nname = "a"\nreformer = "I"\n[[defenses]]\nname = "b"\nreformer = "II"\n[[defenses]]\nname = "r"\n'
     'randomize = ["a", "b"]\n[[defenses]]\nname = "x"\nrandomize = ["r", "a"]\n',
     "randomize may list only systems with detectors or a reformer, not the randomized system(s) ['r']"),
    ('[defense]\nthreats = ["whitebox"]\n[[defenses]]\nname = "x"\nreformer = "I"\n', "unknown threat 'whitebox'"),
    ('[defense]\nautoencoder = { epoch = 3 }\n[[defenses]]\nname = "x"\nreformer = "I"\n', "unknown autoencoder field"),
    ('[[defenses]]\nname = "x"\nreformer = "I"\n[[paper]]\nattack = "fgsm"\nmetric = "detection_rate[y]"\n'
     'value = 0.5\nsource = "s"\n', "unknown metric 'detection_rate[y]'"),
])
def test_bad_defense_tables_name_the_line(snippet, message):
    text = ('[suite]\nname = "bad"\nmodels = ["mnist_tiny_cnn"]\n[data]\nn = 5\n'
            '[[attacks]]\nname = "fgsm"\n' + snippet)
    with pytest.raises(SuiteError, match=re.escape(message)) as err:
        load_suite("bad.toml", text=text)
    assert "bad.toml:" in str(err.value)


def test_defend_cli_writes_defend_json(tmp_path, capsys):
    out = tmp_path / "defend"
    code = main(["defend", "--defense", "mid", "--model", "mnist_tiny_cnn", "--attack", "fgsm", "--norm", "linf",
                 "--param", "eps=0.1,0.2", "--backend", "art", "--n", "20", "--autoencoder-epochs", "2",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "defend.json").read_text())
    assert doc["defense"] == "mid" and len(doc["settings"]) == 4  # 2 eps x (oblivious, adaptive)
    for row in doc["settings"]:
        assert set(row) >= {"accuracy_no_defense", "accuracy_with_defense", "detection_rate", "false_positive_rate"}
    # Each row recomputed by hand: the stored suite's system and slice, the same FGSM, the metric from the parts.
    with ResultStore(out / "results.db") as store:
        suite = load_suite("stored", text=store.suites()[0]["text"])
    resources = Resources(suite, device="cpu")
    x, y, _ = resources.slice("mnist_tiny_cnn", 20)
    system = resources.systems("mnist_tiny_cnn")["mid"]
    assert len(x) == 20 and len(system.detectors) == 3
    for row in doc["settings"]:
        attacked = resources.attack_model("mnist_tiny_cnn", row["threat"])
        adv = run_attack(attacked, x, y, AttackSpec("fgsm", "linf", params=row["setting"]), "art", seed=suite.seed)
        hand = hand_metrics(system, adv.x_adv, y.numpy(), x)
        for field in ("accuracy_with_defense", "detection_rate", "false_positive_rate", "clean_accuracy_with_defense"):
            assert row[field] == pytest.approx(hand[field], abs=1e-12), (row["threat"], row["setting"], field)
        assert row["accuracy_no_defense"] == pytest.approx(float((resources.model("mnist_tiny_cnn").predict(
            adv.x_adv) == y).float().mean()))
    records = json.loads((out / "results.json").read_text())
    for row in doc["settings"]:  # defend.json is the store's numbers, renamed
        record = next(r for r in records if r["threat"] == row["threat"] and r["setting"] == row["setting"])
        assert row["accuracy_with_defense"] == record["metrics"]["accuracy_with_defense[mid]"]
        assert row["false_positive_rate"] == record["metrics"]["false_positive_rate[mid]"]
        assert row["accuracy_no_defense"] == record["metrics"]["adversarial_accuracy"]
    by = {(r["threat"], r["setting"]["eps"]): r for r in doc["settings"]}
    assert by[("oblivious", 0.2)]["accuracy_no_defense"] <= by[("oblivious", 0.1)]["accuracy_no_defense"]
    with pytest.raises(SystemExit):
        main(["defend", "--defense", "feature_squeezing", "--attack", "fgsm", "--out", str(out)])
