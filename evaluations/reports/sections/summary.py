"""The head of a suite's report: title, description, data, cell counts, the definition of success, stale cells and
the models' test accuracies."""

from __future__ import annotations

from advbridge.bridge.result import DEFINITIONS

from advbridge.evaluations.reports.section import SECTIONS, Section, SuiteReport, data_note


#: ``model_info["weights"]`` (where the zoo found the model) as the summary words it.
WEIGHTS_SOURCE = {"shipped": "shipped weights", "cache": "trained locally", "trained": "trained locally"}


def summary_markdown(report: SuiteReport) -> list[str]:
    """The suite's title and the facts every table below relies on."""
    suite, done, estimates = report.suite, report.done, report.estimates
    lines = [f"# Suite `{report.name}`", ""]
    if suite is not None:
        if suite.description:
            lines += [suite.description, ""]
        dataset = suite.data["dataset"]
        lines += [f"- Data: `{dataset}` {suite.data['split']} split, n = {suite.data['n']} per cell "
                  f"(seeded slice, seed {suite.data['seed']}{', correctly classified only' if suite.data['correct_only'] else ''})"
                  + (" — quick run" + (" (caps: " + ", ".join(f"{k} ≤ {v}" for k, v in suite.caps.items()) + ")"
                                        if suite.caps else "") if suite.quick else "") + ".",
                  f"- Data difference: {data_note(suite, 'as stated by the suite')}."]
    total_time = sum(c["record"]["time_s"] for c in done)
    lines += [f"- Cells: {len(done)} finished, {len(report.failed)} failed; attack time {total_time:.1f} s in all."
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
                source = WEIGHTS_SOURCE.get(info.get("weights", ""), "weights of unrecorded origin")
                lines.append(f"- `{model}`: test accuracy {100 * info['test_accuracy']:.2f}% (zoo, {source}).")
        lines.append("")
    return lines


SUMMARY = SECTIONS.add(Section("summary", markdown=summary_markdown), rank=10)
