"""Report sections for the ``transfer`` estimator and the GPDNN robustness suite, next to the papers' numbers.

- Szegedy et al. (2014) Table 1 (training / test error, average minimal distortion) and Table 2 (the transfer
  matrix with its noise rows), for the zoo models that stand for the paper's (``SZEGEDY_NAMES``);
- Bradshaw et al. (2017) §8.3: the MNIST transfer table (error / log-likelihood) between the NN and the GPDNN, and
  the C&W robustness comparison (failed attacks, perturbation sizes) from the suite's ``cw`` attack cells;
- Bradshaw §8.3 domain shift: accuracy / log-likelihood on foreign digit sets (``domain_shift`` estimator), or the
  message saying which files to supply when the suite lists it but it has not run;
- a heatmap PNG per transfer matrix (``plots/transfer_<suite>_<label>.png``).

Paper numbers are algorithms.md §7.4 and §8.3. A paper cell appears only where both our row and our column map to
a paper model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.evaluations.analysis.transfer import plot_transfer
from advbridge.evaluations.core.formatting import embed, safe
from advbridge.evaluations.data.domain_shift import TEST_SETS, not_supplied_message
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport
from advbridge.evaluations.suites.suite import Suite

#: Our zoo model -> Szegedy's model name (Table 1).
SZEGEDY_NAMES = {"mnist_fc10_wd1e-4": "FC10(1e-4)", "mnist_fc10_wd1e-2": "FC10(1e-2)", "mnist_fc10_wd1": "FC10(1)",
                 "mnist_mlp": "FC100-100-10", "mnist_fc200": "FC200-200-10", "mnist_ae400": "AE400-10"}
#: Szegedy Table 1: model -> (train error, test error, average minimal distortion).
SZEGEDY_TABLE1 = {"FC10(1e-4)": (0.067, 0.074, 0.062), "FC10(1e-2)": (0.10, 0.094, 0.1),
                  "FC10(1)": (0.212, 0.20, 0.14), "FC100-100-10": (0.0, 0.0164, 0.058),
                  "FC200-200-10": (0.0, 0.0154, 0.065), "AE400-10": (0.0057, 0.019, 0.086)}
SZEGEDY_COLUMNS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")
#: Szegedy Table 2: row -> (error in % per SZEGEDY_COLUMNS, average distortion). Noise rows keyed by our row names.
SZEGEDY_TABLE2 = {
    "FC10(1e-4)": ((100, 11.7, 22.7, 2, 3.9, 2.7), 0.062),
    "FC10(1e-2)": ((87.1, 100, 35.2, 35.9, 27.3, 9.8), 0.1),
    "FC10(1)": ((71.9, 76.2, 100, 48.1, 47, 34.4), 0.14),
    "FC100-100-10": ((28.9, 13.7, 21.1, 100, 6.6, 2), 0.058),
    "FC200-200-10": ((38.2, 14, 23.8, 20.3, 100, 2.7), 0.065),
    "AE400-10": ((23.4, 16, 24.8, 9.4, 6.6, 100), 0.086),
    "noise σ=0.1": ((5.0, 10.1, 18.3, 0, 0, 0.8), 0.1),
    "noise σ=0.3": ((15.6, 11.3, 22.7, 5, 4.3, 3.1), 0.3),
}
#: Our models -> Bradshaw's MNIST models (§8.3). Their NN (DC, arch B) has no counterpart here.
BRADSHAW_NAMES = {"mnist_lenet": "NN (SC, arch A)", "mnist_gpdnn": "GPDNN (SC, arch C)"}
#: Bradshaw §8.3 MNIST transfer: (crafted on or "none", evaluated on) -> (error, log-likelihood).
BRADSHAW_MNIST: dict[tuple[str | None, str | None], tuple[float, float]] = {
    ("none", "NN (SC, arch A)"): (0.0100, -0.039), ("none", "GPDNN (SC, arch C)"): (0.007, -0.038),
    ("NN (SC, arch A)", "NN (SC, arch A)"): (1.000, -0.718), ("NN (SC, arch A)", "GPDNN (SC, arch C)"): (0.009, -0.056),
    ("GPDNN (SC, arch C)", "NN (SC, arch A)"): (0.031, -0.094),
    ("GPDNN (SC, arch C)", "GPDNN (SC, arch C)"): (1.000, -0.828),
}
#: Bradshaw §8.3 domain shift: test set -> model -> (accuracy, log-likelihood); models trained on MNIST.
BRADSHAW_DOMAIN_SHIFT = {
    "mnist": {"NN (SC, arch A)": (0.990, -0.039), "GPDNN (SC, arch C)": (0.993, -0.038)},
    "anomnist": {"NN (SC, arch A)": (0.781, -1.125), "GPDNN (SC, arch C)": (0.831, -0.818)},
    "semeion": {"NN (SC, arch A)": (0.249, -9.609), "GPDNN (SC, arch C)": (0.320, -2.841)},
    "svhn": {"NN (SC, arch A)": (0.304, -4.687), "GPDNN (SC, arch C)": (0.276, -2.151)},
}
#: Bradshaw §8.3: C&W L2 on 1000 MNIST test images.
BRADSHAW_CW = {"n": 1000, "failed_gpdnn": 381, "extra_perturbation": 0.529}


def transfer_plots(estimates: list[dict[str, Any]], folder: Path) -> list[str]:
    """One heatmap per ``transfer`` estimate; paths relative to the report folder."""
    written = []
    for c in estimates:
        r = c["record"]
        if r.get("estimator") != "transfer":
            continue
        res = r["result"]["transfer"]
        labels = {**SZEGEDY_NAMES, **BRADSHAW_NAMES}
        path = plot_transfer(res, folder / f"transfer_{safe(r['suite'])}_{safe(r['label'])}.png",
                             title=f"{r['suite']}: {r['label']} — {res['spec']['name']} ({res['backend']}), error %",
                             row_labels={k: v for k, v in labels.items() if k in res["columns"]})
        written.append(f"plots/{path.name}")
    return written


def transfer_markdown(suite: Suite | None, estimates: list[dict[str, Any]], plots: list[str],
                      done: Sequence[dict[str, Any]] = ()) -> list[str]:
    """The transfer, Table 1 and GPDNN robustness sections of ``report.md`` for one suite."""
    lines: list[str] = []
    for c in estimates:
        r = c["record"]
        if r.get("estimator") != "transfer":
            continue
        res, table1 = r["result"]["transfer"], r["result"]["table1"]
        bradshaw = any(m in BRADSHAW_NAMES for m in res["columns"])
        if any("train_error" in row for row in table1):
            lines += _table1(res, table1)
        lines += _bradshaw_transfer(res) if bradshaw else _szegedy_transfer(res)
        own = [p for p in plots if Path(p).name == f"transfer_{safe(r['suite'])}_{safe(r['label'])}.png"]
        lines += embed(own) + [""]
    lines += robustness_markdown(list(done))
    lines += domain_shift_markdown(suite, estimates)
    return lines


def domain_shift_markdown(suite: Suite | None, estimates: list[dict[str, Any]]) -> list[str]:
    """Bradshaw's domain-shift table from the ``domain_shift`` cells, or why it is missing."""
    cells = [c for c in estimates if c["record"].get("estimator") == "domain_shift"]
    listed = [e for e in (suite.estimators if suite is not None else []) if e.name == "domain_shift"]
    if not cells and not listed:
        return []
    lines = ["## Domain shift (Bradshaw et al. 2017, §8.3)", ""]
    if not cells:
        sets = sorted({s for e in listed for s in e.params.get("test_sets", list(TEST_SETS))})
        return lines + [f"Not run: {not_supplied_message(sets, None)}.", ""]
    for c in cells:
        table = c["record"]["result"]["table"]
        models = list(next(iter(table.values())))
        lines += ["Models trained on the suite's MNIST data; each cell: accuracy / mean log-likelihood of the true "
                  "class, ours (paper). log 0.1 = −2.30 is \"don't know\". Row `mnist`: our test split.", "",
                  "| test set | n | " + " | ".join(f"{m} ({BRADSHAW_NAMES.get(m, '–')})" for m in models) + " |",
                  "|---|---|" + "---|" * len(models)]
        for set_name, row in table.items():
            cells_text = []
            for m in models:
                paper = BRADSHAW_DOMAIN_SHIFT.get(set_name, {}).get(BRADSHAW_NAMES.get(m, ""))
                ours = f"{row[m]['accuracy']:.3f} / {row[m]['log_likelihood']:.3f}"
                cells_text.append(ours + (f" ({paper[0]:.3f} / {paper[1]:.3f})" if paper else " (–)"))
            n = next(iter(row.values()))["n"]
            lines.append(f"| {set_name} | {n} | " + " | ".join(cells_text) + " |")
        lines.append("")
    return lines


def _pct(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table1(res: dict[str, Any], table1: list[dict[str, Any]]) -> list[str]:
    lines = ["## Error and average minimal distortion (Szegedy et al. 2014, Table 1)", "",
             f"Each model's own {res['spec']['name']} examples ({res['backend']}) on the suite's n = {res['n']} "
             "inputs; distortion √(Σ(x′−x)²/n) with n = 784 pixels in [0, 1], averaged over the successful "
             "examples of correctly classified inputs. Errors on the whole training and test splits.", "",
             "| model | paper model | train error (ours / paper) | test error (ours / paper) | "
             "av. min. distortion (ours / paper) | attack success |", "|---|---|---|---|---|---|"]
    for row in table1:
        paper_name = SZEGEDY_NAMES.get(row["model"]) or BRADSHAW_NAMES.get(row["model"], "–")
        paper = SZEGEDY_TABLE1.get(paper_name, (None, None, None))
        lines.append(f"| {row['model']} | {paper_name} | {_pct(row.get('train_error'))} / {_pct(paper[0])} | "
                     f"{_pct(row.get('test_error'))} / {_pct(paper[1])} | {_num(row['distortion'])} / "
                     f"{_num(paper[2])} | {_pct(row['success_rate'])} of {row['n_attacked']} |")
    return lines + [""]


def _szegedy_transfer(res: dict[str, Any]) -> list[str]:
    cols = res["columns"]
    lines = ["## Cross-model transfer (Szegedy et al. 2014, Table 2)", "",
             "Rows: the model the examples were crafted on (its successful examples of inputs it classifies "
             "correctly; the diagonal is 100% by construction), then Gaussian noise clip(x + σ·N(0, I)). Columns: "
             "the error those inputs induce on each model, among the inputs that model classifies correctly when "
             "clean. Each cell: ours (paper). Last column: the average distortion, ours (paper; the paper's noise "
             "rows list σ, ours measure the clipped noise).", "",
             "| crafted on | " + " | ".join(f"{c} ({SZEGEDY_NAMES.get(c, '–')})" for c in cols)
             + " | av. distortion |", "|---|" + "---|" * len(cols) + "---|"]
    for i, row in enumerate(res["rows"]):
        paper_row = SZEGEDY_TABLE2.get(SZEGEDY_NAMES.get(row, row))
        cells = []
        for j, col in enumerate(cols):
            ours = res["error"][i][j]
            paper = None
            if paper_row is not None and SZEGEDY_NAMES.get(col) in SZEGEDY_COLUMNS:
                paper = paper_row[0][SZEGEDY_COLUMNS.index(SZEGEDY_NAMES[col])] / 100
            cells.append(f"{_pct(ours)} ({_pct(paper)})")
        dist = f"{_num(res['distortion'][i])} ({_num(paper_row[1]) if paper_row else '–'})"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {dist} |")
    return lines + [""]


def _bradshaw_transfer(res: dict[str, Any]) -> list[str]:
    cols = res["columns"]
    lines = ["## Transfer between the NN and the GPDNN (Bradshaw et al. 2017, §8.3, MNIST)", "",
             "Each cell: error / mean log-likelihood of the true class, ours (paper). Row `none`: the clean inputs "
             "(all of them). Attack rows: the source's successful examples of inputs it classifies correctly, "
             "evaluated on the inputs each column model classifies correctly when clean; noise rows likewise.", "",
             "| crafted on | " + " | ".join(f"{c} ({BRADSHAW_NAMES.get(c, '–')})" for c in cols)
             + " | av. distortion | attack success |", "|---|" + "---|" * len(cols) + "---|---|"]

    def cell(ours_err, ours_ll, paper) -> str:
        text = f"{_num(ours_err)} / {_num(ours_ll)}"
        return text + (f" ({paper[0]:.3f} / {paper[1]:.3f})" if paper else " (–)")

    lines.append("| none (clean) | " + " | ".join(
        cell(res["clean_error"][j], res["clean_log_likelihood"][j],
             BRADSHAW_MNIST.get(("none", BRADSHAW_NAMES.get(col)))) for j, col in enumerate(cols)) + " | 0 | – |")
    for i, row in enumerate(res["rows"]):
        cells = [cell(res["error"][i][j], res["log_likelihood"][i][j],
                      BRADSHAW_MNIST.get((BRADSHAW_NAMES.get(row), BRADSHAW_NAMES.get(col))))
                 for j, col in enumerate(cols)]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {_num(res['distortion'][i])} | "
                     f"{_pct(res['success_rate'][i])} |")
    return lines + [""]


def robustness_markdown(done: list[dict[str, Any]]) -> list[str]:
    """C&W failures and perturbation sizes per model (Bradshaw §8.3: 381 of 1000 attacks failed on the GPDNN).

    Reads the suite's ``cw`` attack cells on models that stand for Bradshaw's (``BRADSHAW_NAMES``). A failure is an
    input the model classifies correctly whose attack did not succeed. The perturbation comparison is paired: the
    inputs on which the attack succeeded against every model of the same backend (the paper's "0.529 greater" is
    ambiguous between an absolute and a relative difference, so both are shown).
    """
    cells = [c for c in done if c["record"]["attack"] == "cw" and c["record"]["model"] in BRADSHAW_NAMES
             and c["record"].get("threat", "none") == "none" and c.get("samples")]
    if not cells:
        return []
    lines = ["## C&W L2 against the NN and the GPDNN (Bradshaw et al. 2017, §8.3)", "",
             f"Paper (MNIST, {BRADSHAW_CW['n']} test images): {BRADSHAW_CW['failed_gpdnn']} attacks failed against "
             f"the GPDNN; its successful attacks needed \"{BRADSHAW_CW['extra_perturbation']} greater perturbation\". "
             "Ours: a failed attack is a correctly classified input the attack did not break; an input already "
             "misclassified when clean is neither a failure nor a success (the paper does not say whether its 1000 "
             "images were all classified correctly).",
             "", "| model | backend | setting | correctly classified | failed attacks | failed (paper) | "
             "mean L2 of successes | paired mean L2 | paired: minus NN | paired: ratio to NN |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = defaultdict(list)
    for c in cells:
        r = c["record"]
        groups[(r["backend"], tuple(sorted(r["setting"].items())))].append(c)
    for (backend, setting), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        per_model = {}
        for c in members:
            s = c["samples"]
            label, pred_clean = np.asarray(s["label"]), np.asarray(s["pred_clean"])
            success, l2 = np.asarray(s["success"], bool), np.asarray(s["l2"], float)
            correct = pred_clean == label
            per_model[c["record"]["model"]] = {"index": np.asarray(s["index"]), "correct": correct,
                                               "ok": correct & success, "l2": l2}
        index_sets = [tuple(v["index"]) for v in per_model.values()]
        paired = np.all([v["ok"] for v in per_model.values()], axis=0) if len(set(index_sets)) == 1 else None
        nn = next((m for m in per_model if "GPDNN" not in BRADSHAW_NAMES[m]), None)
        base = per_model[nn]["l2"][paired].mean() if nn and paired is not None and paired.any() else None
        text = ", ".join(f"{k}={v}" for k, v in setting) or "defaults"
        for model, v in sorted(per_model.items()):
            failed = int((v["correct"] & ~v["ok"]).sum())
            ok_l2 = v["l2"][v["ok"]].mean() if v["ok"].any() else None
            pair_l2 = v["l2"][paired].mean() if paired is not None and paired.any() else None
            paper = (f"{BRADSHAW_CW['failed_gpdnn']} of {BRADSHAW_CW['n']}" if "GPDNN" in BRADSHAW_NAMES[model]
                     else "–")
            minus = _num(pair_l2 - base) if pair_l2 is not None and base is not None else "–"
            ratio = f"{pair_l2 / base:.3f}" if pair_l2 is not None and base else "–"
            lines.append(f"| {model} | {backend} | {text} | {int(v['correct'].sum())} of {len(v['correct'])} | "
                         f"{failed} | {paper} | {_num(ok_l2)} | {_num(pair_l2)} | {minus} | {ratio} |")
    return lines + [""]


def _markdown(report: SuiteReport) -> list[str]:
    return transfer_markdown(report.suite, report.estimates, report.plots, report.done)


def _plots(data: ReportData, folder: Path) -> list[str]:
    return transfer_plots(data.estimates, folder)


TRANSFER = SECTIONS.add(Section("transfer", markdown=_markdown, plots=_plots), rank=60)
