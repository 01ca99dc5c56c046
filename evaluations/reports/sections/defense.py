"""Report sections for defended suites: oblivious next to adaptive, clean cost, detector ROC, graybox matrix.

Every table that shows a defended accuracy shows it under each threat the suite ran, side by side, so the
favourable (oblivious) number never appears without the adaptive one.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.defenses.magnet import graybox_random_row

from advbridge.evaluations.core.formatting import fmt, safe, setting_key, setting_text
from advbridge.evaluations.reports.cells import stored_misclassified
from advbridge.evaluations.reports.section import SECTIONS, ReportData, Section, SuiteReport
from advbridge.evaluations.suites.suite import Suite


def _pct(value: Any) -> str:
    return fmt(value, pct=True)


def _systems(done: list[dict[str, Any]]) -> list[str]:
    names = []
    for c in done:
        for key in c["record"]["metrics"]:
            if key.startswith("accuracy_with_defense["):
                name = key[len("accuracy_with_defense["):-1]
                if name not in names:
                    names.append(name)
    return names


def defense_markdown(suite: Suite, done: list[dict[str, Any]], plots: list[str]) -> list[str]:
    """The defense sections of ``report.md``."""
    systems = _systems(done)
    if not systems:
        return []
    ran = {c["record"]["threat"] for c in done}  # per-attack threat overrides included
    threats = [t for t in suite.threats if t in ran] + sorted(ran - set(suite.threats) - {"none"})
    lines = ["## Defenses", "",
             "Accuracy with defense is MagNet's metric (§1.4) under the one definition of success: an adversarial "
             "input counts as handled when a detector rejects it or the classifier is right after reforming, and "
             "its clean input is one the system's classifier gets right after reforming (an input already "
             "misclassified when clean counts as wrong, whatever the detectors do; *already misclassified* in the "
             "clean table). Detector-only and reformer-only accuracies apply the same rule with the bare and the "
             "reformed classifier. Attack success (the *attack success* columns) is over the inputs the attacked "
             "model classifies correctly when clean. *oblivious*: the attack was computed on the bare "
             "classifier (the papers' blackbox setting). *adaptive*: computed white-box through the reformer "
             "(the detectors are not in the attacker's loss, so this is a lower bound on what an adaptive attacker "
             "achieves). *adaptive:<system>*: white-box through that system's own classifier and reformer; through "
             "Invert-and-Classify's projection the gradient is the straight-through (BPDA) estimate unless the suite "
             "says `gradient = \"unrolled\"`. No-defense accuracy is the bare classifier's on the same adversarial inputs; attack success "
             "is judged on the model the attack targeted. Where the attack rarely succeeds, a high accuracy with "
             "defense says nothing about the defense.", ""]
    for cfg in suite.defenses:
        if cfg.get("description"):
            lines.append(f"- `{cfg['name']}`: {cfg['description']}")
        elif "randomize" in cfg:
            lines.append(f"- `{cfg['name']}`: one of {cfg['randomize']} drawn per query of "
                         f"{cfg.get('query_size') or 'one cell'} input(s)")
        else:
            dets = ", ".join(f"{d['kind']}({d['ae']}" + (f", p={d['p']}" if 'p' in d else "")
                             + (f", T={d['temperature']}" if 'temperature' in d else "") + ")"
                             for d in cfg.get("detectors", []))
            classifier = f"; classifier {cfg['classifier']}" if cfg.get("classifier", "base") != "base" else ""
            lines.append(f"- `{cfg['name']}`: detectors {dets or 'none'}; reformer {cfg.get('reformer', 'none')}"
                         f"{classifier}")
    lines.append("")
    lines += _clean_table(done, systems)
    named = {d["name"] for d in suite.defenses}
    pure = [t for t in threats if t in ("oblivious", "adaptive") or t.partition(":")[2] in named]
    if pure:
        detecting = [d["name"] for d in suite.defenses if d.get("detectors") or "randomize" in d]
        lines += _threat_table(done, systems, pure, [s for s in systems if s in detecting or s not in named])
    graybox = [t for t in threats if t.startswith("adaptive:") and t not in pure]
    if graybox:
        lines += _graybox_tables(suite, done, graybox)
    lines += _roc_table(done)
    own = [p for p in plots if p.startswith("plots/roc_") or p.startswith("plots/defense_")]
    own = [p for p in own if f"_{safe(suite.name)}_" in p]
    if own:
        lines += ["Defense plots:", ""] + [f"![{p}]({p})" for p in own] + [""]
    return lines


def _clean_table(done: list[dict[str, Any]], systems: list[str]) -> list[str]:
    lines = ["### Clean inputs", "", "| model | system | n | clean accuracy (bare) | clean accuracy with defense | "
             "false-positive rate | already misclassified (after reforming) |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for c in sorted(done, key=lambda c: -c["record"]["n"]):
        r = c["record"]
        for name in systems:
            key = (r["model"], name)
            if key in seen or f"false_positive_rate[{name}]" not in r["metrics"]:
                continue
            seen.add(key)
            m = r["metrics"]
            lines.append(f"| {r['model']} | {name} | {r['n']} | {_pct(m.get('clean_accuracy'))} | "
                         f"{_pct(m[f'clean_accuracy_with_defense[{name}]'])} | {_pct(m[f'false_positive_rate[{name}]'])} | "
                         f"{fmt(m.get(f'already_misclassified[{name}]'))} |")
    return lines + [""]


def _threat_table(done: list[dict[str, Any]], systems: list[str], threats: list[str],
                  detecting: list[str]) -> list[str]:
    """Per attack setting: success and accuracy without and with each system, per threat (``detecting``: the
    systems with detectors, which get detection-rate columns)."""
    rows: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for c in done:
        r = c["record"]
        if r["threat"] in threats:
            rows[(r["model"], r["label"], r["norm"], setting_text(r["setting"]), r["backend"])][r["threat"]] = r
    head = ["model", "attack", "setting", "backend"]
    for t in threats:
        head += [f"attack success ({t})", f"no defense ({t})"]
    for name in systems:
        head += [f"{name}: with defense ({t})" for t in threats]
        head += [f"{name}: detected ({t})" for t in threats] if name in detecting else []
    lines = ["### Attacks against the defended systems", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    order = sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                 setting_key(next(iter(kv[1].values()))["setting"]), kv[0][4]))
    for (model, label, norm, setting, backend), by_threat in order:
        cells = [model, f"{label} ({norm})", setting, backend]
        for t in threats:  # an attack that fails leaves "with defense" at 100% without testing the defense
            metrics = by_threat[t]["metrics"] if t in by_threat else None
            cells += [_pct(metrics.get("success_rate")) if metrics else "not run",
                      _pct(metrics.get("adversarial_accuracy")) if metrics else "not run"]
        for name in systems:
            for metric in ("accuracy_with_defense", "detection_rate")[:2 if name in detecting else 1]:
                cells += [_pct(by_threat[t]["metrics"].get(f"{metric}[{name}]")) if t in by_threat else "not run"
                          for t in threats]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _graybox_tables(suite: Suite, done: list[dict[str, Any]], threats: list[str]) -> list[str]:
    """Defend × attack matrix of accuracy with defense, the Random row as column means, and measured rows."""
    fixed = [d["name"] for d in suite.defenses
             if "randomize" not in d and str(d.get("reformer", "none")).startswith("D")]
    randomized = [d["name"] for d in suite.defenses if "randomize" in d]
    lines = []
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for c in done:
        r = c["record"]
        if r["threat"] in threats:
            groups[(r["model"], r["label"], r["norm"], setting_text(r["setting"]), r["backend"])][r["threat"]] = r
    for (model, label, norm, setting, backend), by_threat in sorted(groups.items()):
        cols = [t for t in threats if t in by_threat]
        matrix = np.array([[by_threat[t]["metrics"].get(f"accuracy_with_defense[{name}]", np.nan) for t in cols]
                           for name in fixed], dtype=float)
        lines += [f"### Graybox: {model}, {label} ({norm}) {setting}, {backend}", "",
                  "Rows: the system that defends (the one built on a diverse autoencoder); columns: the autoencoder "
                  f"the attack was computed through (white-box {label} against classifier ∘ reformer). Values: "
                  "accuracy with defense.", "",
                  "| defend \\ attack | " + " | ".join(t.partition(":")[2] for t in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for name, row in zip(fixed, matrix, strict=True):
            lines.append(f"| {name} | " + " | ".join(_pct(v) for v in row) + " |")
        if matrix.shape[0] == matrix.shape[1] and not np.isnan(matrix).any():
            lines.append("| Random (column mean) | " + " | ".join(_pct(v) for v in graybox_random_row(matrix)) + " |")
        for name in randomized:
            lines.append(f"| {name} (measured) | " + " | ".join(
                _pct(by_threat[t]["metrics"].get(f"accuracy_with_defense[{name}]")) for t in cols) + " |")
        lines.append("")
    return lines


def _detector_scores(done: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per (model, system/detector, label, norm, threat): clean scores, successful-attack scores, threshold."""
    pooled: dict[tuple, dict[str, Any]] = {}
    for c in done:
        r, s = c["record"], c["samples"]
        success = np.asarray(s["success"], bool) & ~stored_misclassified(r, s)
        for key in s:
            if not key.startswith("scores["):
                continue
            det = key[len("scores["):-1]
            entry = pooled.setdefault((r["model"], det, r["label"], r["norm"], r["threat"]),
                                      {"clean": {}, "adv": [], "threshold": s[f"threshold[{det}]"]})
            entry["clean"][tuple(s["index"])] = np.asarray(s[f"clean_scores[{det}]"], float)
            entry["adv"].append(np.asarray(s[key], float)[success])
    for entry in pooled.values():
        entry["clean"] = np.concatenate(list(entry["clean"].values()))
        entry["adv"] = np.concatenate(entry["adv"]) if entry["adv"] else np.zeros(0)
    return pooled


def _roc_table(done: list[dict[str, Any]]) -> list[str]:
    pooled = _detector_scores(done)
    if not pooled:
        return []
    lines = ["### Detectors: TPR at the chosen FPR", "",
             "Scores of successful adversarial examples (positives: successes on correctly classified inputs) "
             "against the clean inputs of the same cells "
             "(negatives), pooled over settings and backends; the operating point is the threshold fitted on the "
             "validation split. AUC by the rank statistic.", "",
             "| model | system/detector | attack | threat | positives | FPR at threshold | TPR at threshold | AUC |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, det, label, norm, threat), e in sorted(pooled.items()):
        if len(e["adv"]) == 0:
            continue
        fpr = float((e["clean"] >= e["threshold"]).mean())
        tpr = float((e["adv"] >= e["threshold"]).mean())
        lines.append(f"| {model} | {det} | {label} ({norm}) | {threat} | {len(e['adv'])} | {_pct(fpr)} | "
                     f"{_pct(tpr)} | {_auc(e['clean'], e['adv']):.3f} |")
    return lines + [""]


def _auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def defense_plots(done: list[dict[str, Any]], folder: Path) -> list[str]:
    """ROC curves per detector, and accuracy-with-defense curves over a one-parameter grid (e.g. κ or ε)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    suite_of = {c["record"]["model"]: c["record"]["suite"] for c in done}
    by_figure: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for (model, det, label, norm, threat), e in _detector_scores(done).items():
        by_figure[(suite_of[model], model, label, norm, threat)][det] = e
    for (suite, model, label, norm, threat), dets in sorted(by_figure.items()):
        fig, ax = plt.subplots(figsize=(4.8, 4.0))
        for det, e in sorted(dets.items()):
            if len(e["adv"]) == 0:
                continue
            grid = np.unique(np.concatenate([e["clean"], e["adv"], [np.inf]]))[::-1]
            fpr = [(e["clean"] >= t).mean() for t in grid]
            tpr = [(e["adv"] >= t).mean() for t in grid]
            line, = ax.plot(fpr, tpr, label=f"{det} (AUC {_auc(e['clean'], e['adv']):.2f})")
            ax.plot([(e["clean"] >= e["threshold"]).mean()], [(e["adv"] >= e["threshold"]).mean()], "o",
                    color=line.get_color())
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("false-positive rate (clean)")
        ax.set_ylabel("true-positive rate (successful attacks)")
        ax.set_title(f"{model}: {label} ({norm}), {threat}\n(dots: the fitted thresholds)", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"roc_{safe(suite)}_{safe(model)}_{safe(label)}_{norm}_{safe(threat)}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")
    written += _defense_curves(done, folder, plt)
    return written


def _defense_curves(done: list[dict[str, Any]], folder: Path, plt: Any) -> list[str]:
    """Accuracy with defense against the one numeric grid parameter of an attack (e.g. κ), per system and threat."""
    curves: dict[tuple, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for c in done:
        r = c["record"]
        numeric = {k: v for k, v in r["setting"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if r["threat"] == "none" or len(numeric) != 1:
            continue
        (param, value), = numeric.items()
        key = (r["suite"], r["model"], r["label"], r["norm"], param, r["backend"])
        curves[key][f"no defense ({r['threat']})"].append((float(value), r["metrics"]["adversarial_accuracy"]))
        for metric, v in r["metrics"].items():
            if metric.startswith("accuracy_with_defense["):
                curves[key][f"{metric[len('accuracy_with_defense['):-1]} ({r['threat']})"].append((float(value), v))
    written = []
    for (suite, model, label, norm, param, backend), lines in sorted(curves.items()):
        if max(len({p[0] for p in points}) for points in lines.values()) < 2:
            continue  # a single grid point is a table entry, not a curve
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        for name, points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    linestyle="--" if "adaptive" in name else "-", label=name)
        ax.set_xlabel(param)
        ax.set_ylabel("accuracy with defense (MagNet metric)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.set_title(f"{model}: {label} ({norm}), {backend}", fontsize=9)
        fig.tight_layout()
        name = f"defense_{safe(suite)}_{safe(model)}_{safe(label)}_{norm}_{safe(param)}_{backend}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")
    return written


def _markdown(report: SuiteReport) -> list[str]:
    suite = report.suite
    return defense_markdown(suite, report.done, report.plots) if suite is not None and suite.defenses else []


def _plots(data: ReportData, folder: Path) -> list[str]:
    return defense_plots(data.done, folder)


DEFENSES = SECTIONS.add(Section("defenses", markdown=_markdown, plots=_plots), rank=30)
