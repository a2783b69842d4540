"""report.json (a contract other tools read: extend, don't rename), report.md and f1_by_stage.png."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, NamedTuple

from .config import RunConfig, baseline_stages
from .scoring import comparisons, dev_margins
from .teacher.annotation import total_tokens

if TYPE_CHECKING:
    import pandas as pd

    from .jobs import StudentRef
    from .steps import Inputs


def summarize_test(metrics: dict | None) -> dict | None:
    """The test metrics report.json keeps: the scores and `ci95` of `f1`, not the per-row statistics."""
    if metrics is None:
        return None
    keys = ("f1", "exact_match", "precision", "recall", "invalid", "f1_micro", "f1_kim", "ci95")
    return {k: metrics[k] for k in keys if k in metrics}


def stage_f1(stage: dict) -> float | None:
    """A stage's test F1: the mean over its students (None when they were not evaluated)."""
    scores = [s["test"]["f1"] for s in stage["students"] if s.get("test")]
    return mean(scores) if scores else None


class Row(NamedTuple):
    name: str
    f1: float | None  # test F1
    exact_match: float | None
    labels_f1: float | None  # F1 of its labels of U
    ci95: list[float] | None  # 95% CI of the test F1


def table_rows(report: dict) -> list[Row]:
    """The per-stage table: the teacher, the stages' students, then the comparison in the paper's order: SFT on L,
    vanilla KD, MCKD-s for growing s (the final student last), SFT-N.

    `labels_f1` is a diagnostic, only filled when U carries gold targets (benchmarks). A stage row is the mean of its
    students and has no CI of its own (each student's is in report.json and in the figure).
    """
    rows = [
        Row(
            "teacher (few-shot)",
            *_f1_em(report["teacher"].get("test")),
            report["teacher"].get("pseudolabel_f1"),
            _ci(report["teacher"].get("test")),
        )
    ]
    for stage in report["stages"]:
        ems = [s["test"]["exact_match"] for s in stage["students"] if s.get("test")]
        rows.append(
            Row(
                f"stage {stage['stage']} students",
                stage_f1(stage),
                mean(ems) if ems else None,
                stage.get("pseudolabel_f1"),
                None,
            )
        )
    num_stages = report["config"]["stages"]["num_stages"]
    final = f"mckd-{num_stages}" if num_stages > 1 else "vanilla-kd"
    baselines = report.get("baselines", {})
    compared = {name: base.get("test") for name, base in baselines.items()}
    compared[final] = report["final_student"].get("test")
    shipped = (report.get("deliverable") or {}).get("name")
    for name in sorted(compared, key=_comparison_order):
        suffix = " — final student" if name == final and name not in baselines else ""
        if shipped == name or (shipped == "final" and suffix):
            suffix += " — deliverable"
        rows.append(
            Row(_comparison_title(name, report["counts"]) + suffix, *_f1_em(compared[name]), None, _ci(compared[name]))
        )
    return rows


def _comparison_order(name: str) -> float:
    """SFT on L first, then distillation by its number of stages, the supervised upper bound last."""
    stages = baseline_stages(name)
    if stages is not None:
        return stages
    return 0 if name == "sft" else float("inf")


def _comparison_title(name: str, counts: dict) -> str:
    return {
        "sft": f"SFT on L ({counts.get('labeled_train', counts['labeled'])} gold)",
        "sft-n": f"SFT-N ({counts.get('sft_n', '?')} gold, upper bound)",
        "vanilla-kd": "vanilla KD (MCKD-1)",
    }.get(name, name.upper())


def degradation_warnings(report: dict, ratio: float = 0.5) -> list[str]:
    """Where a stage's students (or the final student) select on less than `ratio` x the dev F1 of the stage before.

    Dev F1 is measured on labeled data, so this works without any gold for U. A sharp drop means the stages are
    losing what the teacher's labels taught: measured on ATIS with ~20 rows per student, the students learned to
    copy the sentence without slot brackets, and each stage's labels held fewer slots (BENCHMARKS.md, quality).
    """
    chain = [(f"stage {s['stage']} students", _mean_dev_f1(s["students"])) for s in report["stages"]]
    chain.append(("final student", report["final_student"].get("dev_f1")))
    return [
        f"{name}: dev F1 {now:.1f} is less than {ratio:.0%} of the {before_name}' {before:.1f}; the stages are "
        "degrading the labels (typical when a partition holds too few rows for a student to learn the output "
        "format, or when the teacher's labels are too poor to learn from): use more unlabeled rows, more student "
        "epochs or fewer stages, a stronger teacher or prompt (teacher.num_demos, demo_selection: bm25), and "
        "compare with the vanilla-kd baseline"
        for (before_name, before), (name, now) in zip(chain, chain[1:])
        if before and now is not None and now < ratio * before
    ]


def _simplicity(name: str) -> float:
    """Dev ties go to the simpler model: the final student's lead, then SFT, SFT-N, then by number of stages."""
    first = {"final": -1, "sft": 0, "sft-n": 0.5}
    return first[name] if name in first else baseline_stages(name)


#: Fewer dev rows than this cannot show a candidate beyond noise: a bootstrap over 1-5 rows has (almost) no width.
MIN_GUARD_ROWS = 10
#: The guard's family-wise one-sided level: an equal candidate ships at most this often, however many compete
#: (Bonferroni: each of m candidates needs p <= GUARD_ALPHA / m). The level a 95% CI above 0 meant for one.
GUARD_ALPHA = 0.025


def beyond_noise(cmp: dict, compared: int) -> bool:
    """Whether `cmp` (a candidate minus the final student on the dev rows, one of `compared` candidates) shows a lead
    beyond noise: its one-sided randomization p at most GUARD_ALPHA / compared; a margin recorded without `p` (before
    2026-12-03) by its paired bootstrap 95% CI above 0, the rule of then."""
    if "p" in cmp:
        return cmp["p"] <= GUARD_ALPHA / max(compared, 1)
    return cmp["ci95"][0] > 0


def choose_deliverable(
    dev: dict[str, float],
    dirs: dict[str, str],
    dev_source: str,
    excluded: dict[str, str] | None = None,
    vs_final: dict[str, dict] | None = None,
    dev_rows: int | None = None,
) -> dict:
    """The deliverable guard (report.json `deliverable`) over candidates scored on the same dev rows, none of which any
    of them trained on (`dev`: {name: F1}; the final student is "final").

    The final student ships unless a candidate beats it beyond noise: `vs_final` {name: {"diff", "ci95", "p"}} is each
    candidate minus the final student on the dev rows (scoring.dev_margins), and a candidate competes only if its
    one-sided paired randomization p is at most GUARD_ALPHA / m, m the number of candidates compared (Bonferroni), so
    candidates no better than the final student ship at most GUARD_ALPHA of the time in all (simulated in
    benchmarks/guard_sim.py); the dev-best of those that compete ships, ties going to the simpler model. Picking the
    plain dev-best, or a per-candidate bootstrap CI above 0, on 10-20 dev rows traded the final student away on noise
    (BENCHMARKS.md 'Deliverable guard').
    Without a final student to compare with (it trained on the dev rows), the dev-best ships. `excluded`: candidates
    that could not be compared there, with the reason. With fewer than MIN_GUARD_ROWS `dev_rows` no candidate can be
    shown beyond noise, so the final student ships.
    """
    excluded, vs_final = excluded or {}, vs_final or {}
    too_few = dev_rows is not None and dev_rows < MIN_GUARD_ROWS
    if not dev:
        return {
            "name": "final",
            "dir": dirs["final"],
            "dev": {},
            "dev_source": dev_source,
            "excluded": excluded,
            "vs_final": {},
            "why": "no candidate could be scored on dev rows it did not train on: the final student, as in the paper",
        }
    scores = ", ".join(
        f"{name} {dev[name]:.1f}" for name in sorted(dev, key=lambda name: (-dev[name], _simplicity(name)))
    )
    if "final" in dev:
        compared = [name for name in vs_final if name in dev]
        better = [] if too_few else [name for name in compared if beyond_noise(vs_final[name], len(compared))]
        best = min(better, key=lambda name: (-dev[name], _simplicity(name))) if better else "final"
        test = _guard_test(vs_final, len(compared))
        why = (
            f"{best} beats the final student beyond noise on {dev_source} ({test}); dev F1: {scores}"
            if better
            else f"no candidate beats the final student beyond noise on {dev_source} ({test}): the paper's final "
            f"student ships; dev F1: {scores}"
        )
        if too_few:
            why += f" (only {dev_rows} dev rows: at least {MIN_GUARD_ROWS} are needed to ship another candidate)"
    else:
        best = min(dev, key=lambda name: (-dev[name], _simplicity(name)))
        why = f"best dev F1 on {dev_source} (the final student could not be compared there): {scores}"
    if excluded:
        why += "; not compared: " + "; ".join(f"{name} ({reason})" for name, reason in excluded.items())
    return {
        "name": best,
        "dir": dirs[best],
        "why": why,
        "dev": dict(dev),
        "dev_source": dev_source,
        "excluded": excluded,
        "vs_final": dict(vs_final),
        "dev_rows": dev_rows,
    }


def _guard_test(vs_final: dict[str, dict], compared: int) -> str:
    """The test and every candidate's margin, for the guard's `why`."""
    if not vs_final:
        return "candidate - final: none scored row by row"
    if all("p" in cmp for cmp in vs_final.values()):
        margins = ", ".join(f"{name} {cmp['diff']:+.1f} p={cmp['p']:.3f}" for name, cmp in vs_final.items())
        return (
            f"candidate - final, one-sided paired randomization test, shipped only at p <= "
            f"{GUARD_ALPHA}/{compared} (Bonferroni over the {compared} candidates): {margins}"
        )
    margins = ", ".join(
        f"{name} {cmp['diff']:+.1f} {fmt_ci(cmp['ci95'], signed=True)}" for name, cmp in vs_final.items()
    )
    return f"candidate - final, paired 95% CI: {margins}"


def deliverable_warnings(report: dict) -> list[str]:
    """Where the final student scores below plain fine-tuning on L (sft) on the dev rows: say so and what to change."""
    shipped = report.get("deliverable") or {}
    dev = shipped.get("dev", {})
    if "final" not in dev or "sft" not in dev or dev["final"] >= dev["sft"]:
        return []
    gold_aware = report["config"].get("student", {}).get("train_on_labeled")
    fixes = ([] if gold_aware else ["student.train_on_labeled: true (the students learn from L's gold rows too)"]) + [
        "more unlabeled rows",
        "a stronger teacher or prompt (teacher.model, teacher.num_demos, teacher.demo_selection: bm25)",
    ]
    margins = shipped.get("vs_final") or {}
    margin = margins.get("sft")
    verdict = (
        "not resolved row by row"
        if not margin
        else "plain fine-tuning on L beats the distilled student here"
        if beyond_noise(margin, len([name for name in margins if name in dev]))
        else "within dev noise"
    )
    if margin:
        verdict += f" (sft - final {margin['diff']:+.1f} {fmt_ci(margin['ci95'], signed=True)}"
        verdict += f", p={margin['p']:.3f})" if "p" in margin else ")"
    return [
        f"final student: dev F1 {dev['final']:.1f} is below sft's {dev['sft']:.1f} on {shipped['dev_source']}: "
        f"{verdict}, so the deliverable is {shipped['name']} (`deliverable/` in the run dir). To make MCKD's student "
        "win, try " + ", ".join(fixes)
    ]


def _mean_dev_f1(students: list[dict]) -> float | None:
    scores = [s["dev_f1"] for s in students if s.get("dev_f1") is not None]
    return mean(scores) if scores else None


def _f1_em(test: dict | None) -> tuple[float | None, float | None]:
    return (test["f1"], test["exact_match"]) if test else (None, None)


def _ci(test: dict | None) -> list[float] | None:
    return (test or {}).get("ci95")


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _token_table(tokens: dict | None) -> list[str]:
    """report.md's teacher tokens: per set and for the run, this run's and what the rows from the cache once cost."""
    if not tokens:
        return []
    lines = [
        "",
        "Teacher tokens (as the backend counted them; rows from the teacher cache cost this run nothing, their "
        "recorded cost is shown as such; `-`: not reported):",
        "",
        "| set | rows sent | prompt tokens | completion tokens | rows from cache | their prompt tokens "
        "| their completion tokens |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in tokens.items():
        new = (t["prompt_tokens"], t["completion_tokens"]) if t["metered"] or not t["sent"] else ("-", "-")
        old = (t["cached_prompt_tokens"], t["cached_completion_tokens"]) if t["cached_metered"] else ("-", "-")
        label = "**run**" if name == "total" else name
        lines.append(f"| {label} | {t['sent']} | {new[0]} | {new[1]} | {t['from_cache']} | {old[0]} | {old[1]} |")
    return lines


def tokens_line(tokens: dict[str, dict]) -> str:
    """The run log's one line on what the teacher cost."""
    t = total_tokens(tokens)
    line = (
        f"teacher: {t['sent']} rows sent ({t['prompt_tokens']} prompt + {t['completion_tokens']} completion tokens"
        f" counted for {t['metered']} of them), {t['from_cache']} from the cache"
    )
    if not t["from_cache"]:
        return line
    return (
        f"{line} (free this run; they cost {t['cached_prompt_tokens']} prompt + {t['cached_completion_tokens']} "
        f"completion tokens when generated, counted for {t['cached_metered']} of them)"
    )


def trained_line(name: str, metrics: dict) -> str:
    """The log line of a trained student: its figures with one decimal, as every other figure a user reads."""
    return (
        f"{name}: {metrics['train_rows']} rows ({metrics.get('gold_rows', 0)} gold{_repeated(metrics)}), kept epoch "
        f"{metrics['epochs']}, "
        f"dev F1 {_fmt(metrics.get('dev_f1'))}, {metrics['seconds']:.1f}s"
    )


def gold_repeats_of(metrics: dict) -> int:
    """How many times a student saw each gold row (student.gold_share); students trained before it was recorded saw
    each once, and a student without gold rows none."""
    return metrics.get("gold_repeats", 1 if metrics.get("gold_rows") else 0)


def _repeated(metrics: dict) -> str:
    repeats = gold_repeats_of(metrics)
    return f" x{repeats}" if repeats > 1 else ""


def fmt_ci(ci: list[float] | None, signed: bool = False) -> str:
    """`[lo, hi]` with one decimal (signed: differences), or — when there is none."""
    if not ci:
        return "—"
    spec = "+.1f" if signed else ".1f"
    return f"[{ci[0]:{spec}}, {ci[1]:{spec}}]"


def metric_note(task: str) -> str:
    """What `test F1` means for a task (constituency has two conventions; report.json `f1` is the paper's)."""
    return {
        "slots": "conlleval chunk F1 (micro)",
        "constituency": "the MCKD authors' sentence-mean span F1 (whole-sentence span included, every sentence "
        "counted; the paper's numbers); Kim et al.'s convention is `f1_kim` in report.json",
    }.get(task, f"the {task} format's F1")


def render_markdown(report: dict) -> str:
    c = report["counts"]
    lines = [
        f"# mckd report: {report['config']['run_name']}",
        "",
        f"Task **{report['config']['data']['task']}**; L={c['labeled']} labeled, U={c['unlabeled']} unlabeled, "
        f"T={c['test']} test. "
        f"Teacher pseudolabels: {c['teacher_valid']} valid ({c.get('teacher_repaired', 0)} repaired), "
        f"{c['teacher_invalid']} invalid.",
        "",
        f"Test F1: {metric_note(report['config']['data']['task'])}; 95% CI: bootstrap over the test rows.",
        "",
        "| model | test F1 | 95% CI | exact match | F1 of its labels of U |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.name} | {_fmt(r.f1)} | {fmt_ci(r.ci95)} | {_fmt(r.exact_match)} | {_fmt(r.labels_f1)} |"
        for r in table_rows(report)
    ]
    if report.get("comparisons"):
        lines += [
            "",
            "Differences in test F1 on the same test rows (paired bootstrap, 95% CI; an interval that excludes 0 "
            "is a difference this test set resolves):",
            "",
            "| comparison | F1 difference | 95% CI |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {name} | {diff['diff']:+.1f} | {fmt_ci(diff['ci95'], signed=True)} |"
            for name, diff in report["comparisons"].items()
        ]
    lines += [
        "",
        "FLOP use: the training steps' model FLOP/s as a share of the device's matmul rate, measured by each student.",
        "",
        "| stage | student | train rows | dev F1 | kept epoch | seconds | FLOP use |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for stage in report["stages"]:
        for s in stage["students"]:
            lines.append(
                f"| {stage['stage']} | {s['partition']} | {s['train_rows']} | {_fmt(s['dev_f1'])} | {s['epochs']} "
                f"| {s['seconds']:.0f} | {_utilization(s)} |"
            )
    lines += _token_table(report["teacher"].get("tokens"))
    fs = report["final_student"]
    lines += ["", f"Final student: `{fs['dir']}`", ""]
    if report.get("deliverable"):
        shipped = report["deliverable"]
        lines += [
            f"Deliverable (`deliverable/` in the run dir, `mckd predict RUN_DIR`): **{shipped['name']}** — "
            f"`{shipped['dir']}`; {shipped['why']}.",
            "",
        ]
    if report.get("warnings"):
        lines += ["## Warnings", "", *[f"- {w}" for w in report["warnings"]], ""]
    return "\n".join(lines)


def candidate_entry(report: dict, name: str) -> dict:
    """report.json's entry of a deliverable candidate: "final" (the final student) or a baseline's name."""
    return report["final_student"] if name == "final" else report["baselines"][name]


def _hub_model_id(model: str) -> str | None:
    """`model` when the Hub could resolve it (a repo id that is not a local path): the Hub rejects a card whose
    base_model is a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(model).exists():
        return None
    try:
        validate_repo_id(model)
    except HFValidationError:
        return None
    return model


def _what(report: dict, name: str) -> str:
    """How the candidate was made, for the card's first line."""
    cfg = report["config"]
    teacher = (
        f"the few-shot teacher `{cfg['teacher']['model']}` ({cfg['teacher']['num_demos']} "
        f"{cfg['teacher']['demo_selection']} demos)"
    )
    stages = cfg["stages"]["num_stages"] if name == "final" else baseline_stages(name)
    if stages is None:  # sft, sft-n: fine-tuned on gold rows only
        return f"fine-tuned on gold rows only ({_comparison_title(name, report['counts'])}, an mckd baseline)"
    return f"distilled with {stages}-stage MCKD (K={cfg['stages']['partitions']}) from {teacher}"


def card_data(report: dict, name: str = "final"):
    """The Hub's YAML metadata (huggingface_hub.ModelCardData) of candidate `name`: base_model (the student's model
    when it is a Hub id), the test F1 and exact match as model-index results, and under `mckd` what the Hub has no
    field for: the 95% CIs, the teacher, the recipe and why the deliverable guard chose it."""
    from huggingface_hub import EvalResult, ModelCardData

    cfg, entry = report["config"], candidate_entry(report, name)
    test = entry.get("test") or {}
    student_model = cfg["student"]["model"]
    task_type = "text2text-generation" if _is_seq2seq(entry["dir"]) else "text-generation"
    test_file = cfg["data"].get("test")
    results = [
        EvalResult(
            task_type=task_type,
            dataset_type=Path(test_file).stem,
            dataset_name=Path(test_file).name,
            dataset_split="test",
            metric_type=metric,
            metric_name=title,
            metric_value=round(test[metric], 1),
        )
        for metric, title in (("f1", f"test F1 ({metric_note(cfg['data']['task'])})"), ("exact_match", "exact match"))
        if test_file and test.get(metric) is not None
    ]
    shipped = report.get("deliverable") or {}
    teacher_test = report["teacher"].get("test") or {}
    return ModelCardData(
        base_model=_hub_model_id(student_model),
        library_name="transformers",
        pipeline_tag=task_type,
        tags=["mckd", "knowledge-distillation", cfg["data"]["task"]],
        model_name=f"{cfg['run_name']} ({name})",
        eval_results=results or None,
        mckd={
            "run_name": cfg["run_name"],
            "candidate": name,
            "deliverable": shipped.get("name") == name,
            "why": shipped.get("why") if shipped.get("name") == name else None,
            "student_model": student_model,
            "task": cfg["data"]["task"],
            "test": {key: test[key] for key in ("f1", "ci95", "exact_match", "invalid") if key in test},
            "dev_f1": entry.get("dev_f1"),
            "train_rows": entry["train_rows"],
            "gold_rows": entry.get("gold_rows", 0),
            "gold_repeats": gold_repeats_of(entry),
            "teacher": {
                "model": cfg["teacher"]["model"],
                "num_demos": cfg["teacher"]["num_demos"],
                "demo_selection": cfg["teacher"]["demo_selection"],
                "test": {key: teacher_test[key] for key in ("f1", "ci95") if key in teacher_test},
            },
            "recipe": {
                "num_stages": cfg["stages"]["num_stages"],
                "partitions": cfg["stages"]["partitions"],
                "first_labels": cfg["stages"]["first_labels"],
                "train_on_labeled": cfg["student"]["train_on_labeled"],
                "gold_share": cfg["student"].get("gold_share"),
                "init": cfg["student"]["init"],
            },
        },
    )


def _is_seq2seq(model_dir: str) -> bool:
    try:
        return bool(json.loads((Path(model_dir) / "config.json").read_text()).get("is_encoder_decoder"))
    except (OSError, ValueError):
        return False


def model_card(report: dict, name: str = "final") -> str:
    """README.md for candidate `name`'s student dir (the final student, or the baseline the guard shipped): the Hub's
    YAML metadata (card_data), then what it was made from, how, and how well it does."""
    from huggingface_hub import ModelCard

    cfg, c, entry = report["config"], report["counts"], candidate_entry(report, name)
    test = entry.get("test") or {}
    shipped = report.get("deliverable") or {}
    body = [
        f"# mckd student: {cfg['run_name']}" + ("" if name == "final" else f" ({name})"),
        "",
        f"A `{cfg['student']['model']}` student for the **{cfg['data']['task']}** task, {_what(report, name)}.",
        "",
        *(
            [f"The run's deliverable (`deliverable/`): {shipped['why']}.", ""]
            if shipped.get("name") == name and shipped.get("why")
            else []
        ),
        "## Data",
        f"- labeled (gold, demos + checkpoint selection): {c['labeled']} rows from `{cfg['data']['labeled']}`",
        f"- unlabeled (pseudolabeled): {c['unlabeled']} rows from `{cfg['data']['unlabeled']}`; teacher labels "
        f"{c['teacher_valid']} valid, {c['teacher_invalid']} invalid",
        f"- test: {c['test']} rows" + (f" from `{cfg['data']['test']}`" if cfg["data"].get("test") else ""),
        "",
        "## Metrics (test set)",
        f"- F1 {_fmt(test.get('f1'))} (95% CI {fmt_ci(test.get('ci95'))}), exact match "
        f"{_fmt(test.get('exact_match'))}, invalid outputs {_fmt(test.get('invalid'))}%",
        f"- teacher F1 {_fmt((report['teacher'].get('test') or {}).get('f1'))}",
        f"- training: {entry['train_rows']} rows, kept epoch {entry['epochs']}, dev F1 {_fmt(entry['dev_f1'])}, "
        f"{entry['seconds']:.0f}s, FLOP use {_utilization(entry)}",
        "",
        "## Use",
        "```bash",
        f"mckd predict {entry['dir']} --input new.jsonl --output labeled.jsonl",
        "```",
        "Weights are safetensors, loadable with `transformers` `from_pretrained` (causal students take the prompt "
        "`Input: <text>\\nOutput:`). Full run config and per-stage results: `report.json` in the run directory.",
        "",
    ]
    return str(ModelCard(f"---\n{card_data(report, name).to_yaml()}\n---\n\n" + "\n".join(body)))


class Plotted(NamedTuple):
    """What f1_by_stage.png shows (compared with the previous report's to skip an unchanged redraw)."""

    run_name: str
    bars: list  # (name, test F1, 95% CI or None, group) of every scored row, the stages' students one by one
    labels: list  # (labels, F1 of those labels of U): Y0 (teacher), Y1, ... where U has gold


def plotted(report: dict) -> Plotted:
    rows = table_rows(report)
    n_stages = len(report["stages"])
    students = [
        (f"stage {stage['stage']} student {s['partition']}", s["test"]["f1"], s["test"].get("ci95"), "stage")
        for stage in report["stages"]
        for s in stage["students"]
        if s.get("test")
    ]
    compared = [
        (r.name, r.f1, r.ci95, "final" if "final student" in r.name else "baseline") for r in rows[1 + n_stages :]
    ]
    bars = [(rows[0].name, rows[0].f1, rows[0].ci95, "teacher"), *students, *compared]
    labels = [
        ("Y0 teacher", report["teacher"].get("pseudolabel_f1")),
        *((f"Y{s['stage']} stage {s['stage']}", s.get("pseudolabel_f1")) for s in report["stages"]),
    ]
    return Plotted(
        report["config"]["run_name"],
        [list(b) for b in bars if b[1] is not None],
        [list(x) for x in labels if x[1] is not None],
    )


_COLORS = {"teacher": "#8C8C8C", "stage": "#8FB3DE", "final": "#1F4E8C", "baseline": "#DD8452"}


def plot_f1(report: dict, path: str | Path) -> None:
    """Test F1 of every row of the table with its 95% CI, and (where U has gold) the F1 of U's labels stage by stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = plotted(report)
    panels = 2 if shown.labels else 1
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=(7 + 3 * (panels - 1) + 0.3 * len(shown.bars), 4),
        squeeze=False,
        gridspec_kw={"width_ratios": [3, 1][:panels]},
    )
    ax = axes[0][0]
    x = range(len(shown.bars))
    f1s = [f1 for _, f1, _, _ in shown.bars]
    # Percentile intervals need not hold the point estimate on skewed data: clip so no error bar is negative.
    below = [f1 - ci[0] if ci else 0.0 for _, f1, ci, _ in shown.bars]
    above = [ci[1] - f1 if ci else 0.0 for _, f1, ci, _ in shown.bars]
    ax.bar(
        x,
        f1s,
        color=[_COLORS[group] for *_, group in shown.bars],
        yerr=[[max(v, 0.0) for v in below], [max(v, 0.0) for v in above]],
        capsize=3,
        ecolor="#333333",
    )
    ax.set_xticks(list(x), [name for name, *_ in shown.bars], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test F1 (bars: 95% CI)")
    ax.set_title(f"F1 by stage — {shown.run_name}", fontsize=10)
    if shown.labels:
        ax_u = axes[0][1]
        names, scores = zip(*shown.labels)
        ax_u.plot(range(len(names)), scores, marker="o", color="#55A868")
        for i, score in enumerate(scores):
            ax_u.annotate(
                f"{score:.1f}", (i, score), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
            )
        ax_u.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax_u.set_ylabel("F1 of the labels of U")
        ax_u.set_title("labels of U by stage", fontsize=10)
        ax_u.set_ylim(0, max(scores) * 1.2 or 1)  # from 0, like the bars: small changes are not magnified
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, run_dir: str | Path) -> dict:
    """Write report.json (atomically), report.md and f1_by_stage.png into the run dir; returns their paths."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    figure = run_dir / "f1_by_stage.png"
    # A cached re-run rewrites the report (its timings change) but not the scores; drawing the unchanged figure
    # again was ~1-3 s of such a re-run (matplotlib).
    text = json.dumps(report, indent=2, default=str)
    redraw = not figure.is_file() or _previous_plot(run_dir / "report.json") != plotted(json.loads(text))
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".report-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, run_dir / "report.json")
    (run_dir / "report.md").write_text(render_markdown(report))
    if redraw:
        plot_f1(report, figure)
    written = json.loads(text)  # plain JSON types: the cards' YAML holds no numpy scalars
    final_dir = Path(report["final_student"]["dir"])
    if final_dir.is_dir():
        (final_dir / "README.md").write_text(model_card(written))
    if report.get("deliverable"):
        shipped = report["deliverable"]
        point_to_deliverable(run_dir, shipped["dir"])
        if shipped["name"] != "final" and Path(shipped["dir"]).is_dir():
            (Path(shipped["dir"]) / "README.md").write_text(model_card(written, shipped["name"]))
    return {name: str(run_dir / name) for name in ("report.json", "report.md", "f1_by_stage.png")}


#: `<run_dir>/deliverable`: a relative symlink to the deliverable student's dir (the run dir can move).
DELIVERABLE = "deliverable"


def point_to_deliverable(run_dir: str | Path, student_dir: str | Path) -> Path:
    """Point `<run_dir>/deliverable` at `student_dir` (replaced atomically)."""
    link = Path(run_dir) / DELIVERABLE
    tmp = link.with_name(f".{DELIVERABLE}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(Path(student_dir).resolve(), Path(run_dir).resolve()), target_is_directory=True)
    os.replace(tmp, link)
    return link


def _previous_plot(report_json: Path) -> tuple | None:
    try:
        return plotted(json.loads(report_json.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


#: A student entry's measures of time: they differ between two runs that trained the same students.
SPEED_KEYS = ("tokens_per_s", "train_gflops_per_s", "flop_utilization")


def speed(metrics: dict) -> dict:
    """A student's throughput: tokens/s all-in and the FLOP utilization of its training steps (None for students
    whose metrics.json predates these fields)."""
    return {key: metrics.get(key) for key in SPEED_KEYS}


class DevScores(NamedTuple):
    """The deliverable guard's evidence: candidates scored on dev rows none of them trained on."""

    f1: dict[str, float]  # {candidate: dev F1}
    vs_final: dict[str, dict]  # {candidate: candidate - final, paired bootstrap on the dev rows}
    dirs: dict[str, str]  # {candidate: its student dir}
    excluded: dict[str, str]  # {candidate: why it was not compared}


def dev_scores(
    students: dict[str, StudentRef], scored: dict[str, dict], excluded: dict[str, str], task: str
) -> DevScores:
    """DevScores from each compared candidate's dev metrics (with per-row statistics)."""
    return DevScores(
        {name: result["f1"] for name, result in scored.items()},
        dev_margins(scored, task),
        {name: s.dir for name, s in students.items()},
        excluded,
    )


@dataclass
class RunResults:
    """What a finished run measured: report.json is built from it."""

    teacher_labels: pd.DataFrame  # the teacher's label rows of U (valid / invalid / repaired counts)
    teacher_test: dict | None  # the teacher's test scores, with per-row statistics
    teacher_f1: float | None  # F1 of the teacher's labels of U (only where U carries gold: benchmarks)
    first_labels: dict  # report.json `first_labels`
    stages: list[dict]
    final: StudentRef
    final_test: dict | None
    baselines: dict[str, tuple[StudentRef, dict | None]]  # {name: (student, test scores)}
    deliverable: dict
    timings: dict[str, float]
    files: dict = field(default_factory=dict)  # report.json `files`: the sets and U's labelings (flows/mckd.py)
    teacher_tokens: dict[str, dict] = field(default_factory=dict)  # {set: annotation.token_entry}

    @property
    def tests(self) -> dict[str, dict | None]:
        """Every system's full test results: the final student, the teacher, each baseline."""
        return {
            "final": self.final_test,
            "teacher": self.teacher_test,
            **{name: test for name, (_, test) in self.baselines.items()},
        }


def build_report(cfg: RunConfig, data: Inputs, run: RunResults) -> dict:
    """report.json's dict (the contract in DESIGN.md), with the final student minus the teacher and each baseline
    (paired bootstrap 95% CIs on the test rows) and every warning the run has for its user."""
    labels = run.teacher_labels
    report = {
        "config": cfg.model_dump(mode="json"),
        "counts": {
            "labeled": data.labeled.rows,
            "labeled_train": data.labeled_train.rows,
            "dev": data.dev.rows,
            "unlabeled": data.unlabeled.rows,
            "test": data.test.rows if data.test else 0,
            "teacher_valid": int(labels["valid"].sum()),
            "teacher_invalid": int((~labels["valid"]).sum()),
            "teacher_repaired": int((labels["error"] == "repaired").sum()),
            **({"sft_n": data.sft_n.rows} if data.sft_n else {}),
        },
        "teacher": {
            "test": summarize_test(run.teacher_test),
            "pseudolabel_f1": run.teacher_f1,
            **({"tokens": {**tokens, "total": total_tokens(tokens)}} if (tokens := run.teacher_tokens) else {}),
        },
        "first_labels": run.first_labels,
        "stages": run.stages,
        "final_student": final_entry(run.final.dir, run.final.metrics, run.final_test),
        "baselines": {
            name: final_entry(student.dir, student.metrics, test) for name, (student, test) in run.baselines.items()
        },
        "deliverable": run.deliverable,
        "timings": run.timings,
        "comparisons": comparisons(run.tests, cfg.data.format_ref),
        "overlong": data.overlong,
        "files": run.files,
    }
    report["warnings"] = data.warnings + degradation_warnings(report) + deliverable_warnings(report)
    return report


def student_entry(partition: int, metrics: dict, test: dict | None) -> dict:
    return {
        "partition": partition,
        "train_rows": metrics["train_rows"],
        "gold_rows": metrics.get("gold_rows", 0),
        "gold_repeats": gold_repeats_of(metrics),
        "dev_f1": metrics["dev_f1"],
        "epochs": metrics["epochs"],
        "seconds": metrics["seconds"],
        **speed(metrics),
        "test": summarize_test(test),
    }


def final_entry(student_dir: str, metrics: dict, test: dict | None) -> dict:
    return {
        "test": summarize_test(test),
        "dir": student_dir,
        "train_rows": metrics["train_rows"],
        "gold_rows": metrics.get("gold_rows", 0),
        "gold_repeats": gold_repeats_of(metrics),
        "dev_f1": metrics["dev_f1"],
        "epochs": metrics["epochs"],
        "seconds": metrics["seconds"],
        **speed(metrics),
    }


def _utilization(entry: dict) -> str:
    return "—" if entry.get("flop_utilization") is None else f"{100 * entry['flop_utilization']:.0f}%"
