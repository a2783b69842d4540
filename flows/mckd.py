"""The MCKD flow: teacher → partition → S-1 cross-relabel stages → final student → baselines → guard → report."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from prefect import flow, get_run_logger

from mckd_core.config import RunConfig
from mckd_core.data import ParquetRef
from mckd_core.estimate import estimate_teacher
from mckd_core.gpus import plan_cpu_slots
from mckd_core.jobs import StudentJob, StudentRef
from mckd_core.partition import stage_seed
from mckd_core.plan import RunPlan, choose_first_labels
from mckd_core.report import (
    DevScores,
    RunResults,
    build_report,
    choose_deliverable,
    dev_scores,
    student_entry,
    tokens_line,
)
from mckd_core.steps import Inputs, changed_fraction, prepare_inputs, teacher_session
from mckd_core.teacher.annotation import all_from_cache
from tasks.annotate import annotate_task
from tasks.common import with_storage
from tasks.evaluate import evaluate_student_task, score_labels_task
from tasks.partition import partition_task
from tasks.relabel import merge_labels_task, relabel_task
from tasks.report import publish_stage_table, report_task
from tasks.train_student import train_student_task

from .train_student import dispatch_student_task


class RunTasks:
    """The tasks of one run, bound to its result storage and its device slots."""

    def __init__(self, cfg: RunConfig):
        self.cfg, root = cfg, cfg.runs_root
        self.slots = plan_cpu_slots(cfg.stages.cpu_students, cfg.stages.cpu_threads, cfg.stages.partitions)
        self.annotate = with_storage(annotate_task, root)
        self.partition = with_storage(partition_task, root)
        self.train = with_storage(train_student_task, root)
        self.relabel = with_storage(relabel_task, root)
        self.merge = with_storage(merge_labels_task, root)
        self.evaluate = with_storage(evaluate_student_task, root)
        self.score = with_storage(score_labels_task, root)

    def f1(self, labels: ParquetRef) -> float | None:
        """F1 of label rows against U's gold (only where U carries gold: benchmarks); a diagnostic, never a decision."""
        metrics = self.score(labels, self.cfg.data.format_ref)
        return None if metrics is None else metrics["f1"]

    def test(self, student, test: ParquetRef | None):
        """A student's test scoring, submitted (None without a test set)."""
        return (
            self.evaluate.submit(student, test, self.cfg.student, self.cfg.data.format_ref, self.slots)
            if test
            else None
        )


@flow(name="mckd-stage", flow_run_name="stage-{stage}")
def stage_flow(
    config: RunConfig,
    stage: int,
    labels: ParquetRef,
    assignment: ParquetRef,
    data: Inputs,
    init: StudentRef | None = None,
) -> tuple[ParquetRef, dict]:
    """One intermediate stage: student k trains on every part but k (plus L's gold rows when gold-aware; from `init`'s
    weights, when given), then relabels part k (all k concurrently); Y_s is the union of the relabels."""
    tasks, plan, cfg = RunTasks(config), RunPlan(config, data), config.stages
    jobs = plan.stage_students(stage, labels, assignment, init)
    students = [
        _train(tasks, job, cfg.gpus[k % len(cfg.gpus)] if cfg.gpus else None) for k, (job, _) in enumerate(jobs)
    ]
    relabels = [
        tasks.relabel.submit(student, plan.relabel(job, part, stage), tasks.slots)
        for student, (job, part) in zip(students, jobs)
    ]
    trained = [student.result() for student in students]  # raises a student's own error, not a downstream one
    new_labels = tasks.merge(
        labels, [r.result() for r in relabels], plan.path(f"stage-{stage}"), cfg.keep_previous_on_invalid
    )
    tests = [tasks.test(student, data.test) if cfg.evaluate_students else None for student in students]
    entries = [student_entry(k, s.metrics, t.result() if t else None) for k, (s, t) in enumerate(zip(trained, tests))]
    publish_stage_table(stage, entries)
    return new_labels, {
        "stage": stage,
        "students": entries,
        "pseudolabel_f1": tasks.f1(new_labels),
        "changed_fraction": changed_fraction(labels, new_labels),
    }


@flow(name="mckd-distill", log_prints=True)
def mckd_flow(config: RunConfig) -> dict:
    """Multistage Collaborative Knowledge Distillation (Zhao et al., ACL 2024) for one RunConfig."""
    timings, clock, cfg = {}, time.perf_counter(), config
    data = _checked_inputs(cfg)  # 0. every input validated, the teacher's prompts counted, before any model loads
    plan, tasks = RunPlan(cfg, data), RunTasks(cfg)

    # 1. Teacher: few-shot labels of U (and T, dev). A vLLM server mckd starts stops with this block, also on failure.
    with _timed(timings, "teacher"), teacher_session():
        teacher, tokens = _annotate_sets(tasks, plan)
    teacher_labels = teacher["unlabeled"]

    # 2. Partition U into K disjoint parts (fixed across stages unless redrawn).
    assignment = tasks.partition(data.unlabeled, cfg.stages.partitions, cfg.seed, plan.path("data"))

    # The SFT-on-L student first, where distilled students start from it or Y_0 is its labels (also the sft baseline).
    sft = tasks.train(plan.supervised("sft"), tasks.slots) if plan.sft_trains_first else None
    init = sft if cfg.student.init == "sft" else None
    labels, _ = y0 = _first_labels(tasks, plan, sft, teacher)  # Y_0, and why it is the teacher's or SFT's

    # 3. Intermediate stages s = 1 .. S-1: cross-train and relabel.
    stages, history = [], [teacher_labels]  # the labels of U after each stage; vanilla KD learns from the teacher's
    for stage in range(1, cfg.stages.num_stages):
        with _timed(timings, f"stage-{stage}"):
            if cfg.stages.redraw_partitions:
                seed = stage_seed(cfg.seed, stage, True)
                assignment = tasks.partition(data.unlabeled, cfg.stages.partitions, seed, plan.path("data"))
            labels, entry = stage_flow(cfg, stage, labels, assignment, data, init)
        stages.append(entry)
        history.append(labels)

    # 4. Final stage: one student on all of U with Y_{S-1}; the baselines need nothing from it and train alongside.
    with _timed(timings, "final"):
        final, final_labels = _final_student(tasks, plan, labels, init)
        baselines = {
            name: tasks.train.submit(plan.baseline(name, history, init), tasks.slots) for name in cfg.baselines
        }
        tests = {name: tasks.test(student, data.test) for name, student in {"final": final, **baselines}.items()}
        candidates = {"final": final.result(), **{name: student.result() for name, student in baselines.items()}}

    # 5. Deliverable guard: on dev rows no candidate trained on, the final student ships unless one beats it clearly.
    with _timed(timings, "evaluate"):
        deliverable = _guard(tasks, data, candidates)
        tests = {name: test.result() if test else None for name, test in tests.items()}

    # 6. Report: the scores on T (read for no decision above), the labels' quality, timings, warnings.
    timings["total"] = time.perf_counter() - clock
    results = RunResults(
        **_teacher_results(tasks, teacher_labels, teacher.get("test"), y0),
        stages=stages,
        final=candidates["final"],
        final_test=tests["final"],
        baselines={name: (candidates[name], tests[name]) for name in baselines},
        deliverable=deliverable,
        timings=timings,
        files=_label_files(cfg.run_dir, data, history, y0[0], final_labels.result()),
        teacher_tokens=tokens,
    )
    report = build_report(cfg, data, results)
    report_task(report, str(cfg.run_dir), results.tests)
    return report


def _label_files(
    run_dir: Path, data: Inputs, history: list[ParquetRef], first: ParquetRef, final_labels: ParquetRef
) -> dict:
    """report.json's `files`: where the run's sets are and U's labelings in order (the teacher's, the SFT student's
    where Y_0 is its, each stage's Y_s, the final student's). Files are content-named, so a run dir re-run with
    another config holds several of each; these are this run's. Paths inside the run dir are relative to it, so a
    moved runs root keeps them."""

    def where(ref: ParquetRef) -> str:
        path, root = Path(ref.path).resolve(), run_dir.resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    sets = {
        "labeled": data.labeled,
        "unlabeled": data.unlabeled,
        "test": data.test,
        "dev": data.dev,
        "demos": data.teacher_demos,  # the next run's data.demos after merge-labels keeps this run's prompts
    }
    labelings = {"teacher": history[0], **({"sft": first} if first is not history[0] else {})}
    labelings |= {f"stage-{s}": ref for s, ref in enumerate(history[1:], start=1)} | {"final": final_labels}
    return {
        **{name: where(ref) for name, ref in sets.items() if ref is not None},
        "labels_of_unlabeled": {name: where(ref) for name, ref in labelings.items()},
    }


def _checked_inputs(cfg: RunConfig) -> Inputs:
    """The run's inputs, validated; over-long rows and the teacher's estimate said now, before hours of work, and the
    run stopped here when the estimate is over teacher.max_prompt_tokens."""
    logger, data = get_run_logger(), prepare_inputs(cfg)
    for warning in data.warnings:
        logger.warning(warning)
    estimate = estimate_teacher(cfg, data)
    logger.info(estimate.line())
    estimate.check_budget(cfg.teacher.max_prompt_tokens)
    return data


def _final_student(tasks: RunTasks, plan: RunPlan, labels: ParquetRef, init: StudentRef | None) -> tuple:
    """The final student on all of U with Y_{S-1}, submitted, and its own labels of U with how sure it is of each
    (what `mckd suggest` ranks rows by, beside the stages' labels)."""
    job = plan.distilled("final", labels, tasks.cfg.stages.num_stages, init)
    final = tasks.train.submit(job, tasks.slots)
    return final, tasks.relabel.submit(final, plan.final_relabel(job), tasks.slots)


def _annotate_sets(tasks: RunTasks, plan: RunPlan) -> tuple[dict[str, ParquetRef], dict[str, dict]]:
    """The teacher's labels of each set it labels (U; T and the dev rows where asked), and what each cost this run."""
    labels, tokens = {}, {}
    for which, rows in plan.teacher_sets().items():
        state = tasks.annotate(plan.annotate(rows, which), return_state=True)
        result = state.result()
        labels[which] = result.labels
        # A node reused whole asked the teacher nothing this run: its recorded entry is what an earlier run paid.
        tokens[which] = all_from_cache(result.tokens) if state.name == "Cached" else result.tokens
    get_run_logger().info(tokens_line(tokens))
    return labels, tokens


def _train(tasks: RunTasks, job: StudentJob, gpu: str | None):
    """A stage student, submitted: in this process's slots, or as a deployment run (stages.dispatch: deployment)."""
    if tasks.cfg.stages.dispatch == "deployment":
        return dispatch_student_task.submit(job, gpu=gpu, runs_root=tasks.cfg.runs_root)
    return tasks.train.submit(job, tasks.slots)


def _first_labels(tasks: RunTasks, plan: RunPlan, sft: StudentRef | None, teacher: dict) -> tuple[ParquetRef, dict]:
    """Y_0 and its report entry's choice: the teacher's labels, or the SFT student's (the teacher's where SFT's is
    invalid) with stages.first_labels: sft, or under auto whichever of the two scores higher on the dev rows (the
    teacher's demos never include one; SFT is compared only where it did not train on them)."""
    mode, teacher_labels = tasks.cfg.stages.first_labels, teacher["unlabeled"]
    choice = {"chosen": "sft" if mode == "sft" else "teacher"}
    if mode == "auto" and plan.compares_first_labels:
        choice = choose_first_labels(tasks.f1(teacher["dev"]), tasks.test(sft, plan.data.dev).result()["f1"])
    elif mode == "auto":  # no dev rows SFT did not train on, or one stage (vanilla KD): the teacher's labels
        choice = choose_first_labels(None, None, one_stage=tasks.cfg.stages.num_stages < 2)
    if choice["chosen"] == "teacher":
        return teacher_labels, choice
    sft_labels = tasks.relabel(sft, plan.first_labels_by_sft(teacher_labels), tasks.slots)
    return tasks.merge(teacher_labels, [sft_labels], plan.path("sft-labels"), True), choice


def _teacher_results(tasks: RunTasks, labels: ParquetRef, test: ParquetRef | None, first_labels: tuple) -> dict:
    """RunResults' teacher fields: its labels of U (scored where U has gold), its test scores, Y_0."""
    f1 = tasks.f1(labels)
    return {
        "teacher_labels": labels.read(),
        "teacher_test": tasks.score(test, tasks.cfg.data.format_ref) if test else None,
        "teacher_f1": f1,
        "first_labels": _first_labels_entry(tasks, labels, f1, first_labels),
    }


def _guard(tasks: RunTasks, data: Inputs, candidates: dict[str, StudentRef]) -> dict:
    """report.json's `deliverable`: what the guard ships, from the candidates' scores on the dev rows."""
    scores = _dev_scores(tasks, data.dev, candidates)
    return choose_deliverable(scores.f1, scores.dirs, data.dev_source, scores.excluded, scores.vs_final, data.dev.rows)


def _first_labels_entry(
    tasks: RunTasks, teacher_labels: ParquetRef, teacher_f1: float | None, first_labels: tuple[ParquetRef, dict]
) -> dict:
    """Y_0 in the report: the teacher's labels (already scored) or the SFT student's, and why (auto)."""
    labels, choice = first_labels
    entry = {"source": tasks.cfg.stages.first_labels, **choice}
    if labels is teacher_labels:
        return {**entry, "pseudolabel_f1": teacher_f1, "changed_fraction": 0.0}
    return {**entry, "pseudolabel_f1": tasks.f1(labels), "changed_fraction": changed_fraction(teacher_labels, labels)}


def _dev_scores(tasks: RunTasks, dev: ParquetRef, students: dict[str, StudentRef]) -> DevScores:
    """The candidates scored on every dev row (cached prediction runs), for the guard. A student that trained on dev
    rows is not compared on them."""
    excluded = {
        name: f"trained on {s.metrics['dev_overlap']} of the {dev.rows} dev rows"
        for name, s in students.items()
        if s.metrics.get("dev_overlap")
    }
    runs = {name: tasks.test(s, dev) for name, s in students.items() if name not in excluded}
    return dev_scores(students, {name: run.result() for name, run in runs.items()}, excluded, tasks.cfg.data.format_ref)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str):
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
