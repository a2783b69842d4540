"""The MCKD flow: teacher → partition → S-1 cross-relabel stages → final student → evaluation → report."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from mckd_core.config import RunConfig, baseline_stages
from mckd_core.data import ParquetRef
from mckd_core.gpus import plan_cpu_slots
from mckd_core.partition import cross_assignment, stage_seed
from mckd_core.report import (choose_deliverable, degradation_warnings, deliverable_warnings, final_entry, student_entry,
                               summarize_test)
from mckd_core.scoring import comparisons
from mckd_core.steps import StudentRef, changed_fraction, gold_labels, prepare_inputs, teacher_session
from tasks.annotate import annotate_task
from tasks.common import with_storage
from tasks.evaluate import evaluate_student_task, score_labels_task
from tasks.partition import partition_task
from tasks.relabel import merge_labels_task, relabel_task
from tasks.report import publish_stage_table, report_task
from tasks.train_student import train_student_task

from .train_student import dispatch_student_task


class _Nodes:
    """The tasks of one run, bound to its result storage and directories."""

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

    def dir(self, *parts: str) -> str:
        return str(self.cfg.run_dir.joinpath(*parts))


@flow(name="mckd-stage", flow_run_name="stage-{stage}")
def stage_flow(config: RunConfig, stage: int, labels: ParquetRef, assignment: ParquetRef, dev: ParquetRef,
               test: ParquetRef | None, gold: ParquetRef | None = None,
               init: StudentRef | None = None) -> tuple[ParquetRef, list[dict]]:
    """One intermediate stage: student k trains on every part but k (and on `gold`, when given; from `init`'s weights,
    when given), then relabels part k (all k concurrently)."""
    n, cfg = _Nodes(config), config
    students, relabels = [], []
    for k, (train_parts, held_out) in enumerate(cross_assignment(cfg.stages.partitions)):
        args = (labels, assignment, train_parts, dev, cfg.student, cfg.data.task, cfg.seed + 100 * stage + k,
                n.dir(f"stage-{stage}", f"student-{k}"), f"stage-{stage}/student-{k}")
        if cfg.stages.dispatch == "deployment":
            gpu = cfg.stages.gpus[k % len(cfg.stages.gpus)] if cfg.stages.gpus else None
            student = dispatch_student_task.submit(*args, gpu=gpu, runs_root=cfg.runs_root, gold=gold, init=init)
        else:
            student = n.train.submit(*args, slots=n.slots, gold=gold, init=init)
        students.append(student)
        relabels.append(n.relabel.submit(student, labels, assignment, held_out, stage, f"stage-{stage}/student-{k}",
                                         cfg.student, cfg.data.task, n.dir(f"stage-{stage}", f"partition-{held_out}"), n.slots))
    trained = [s.result() for s in students]  # raises a student's own error, not a downstream "not finished"
    new_labels = n.merge(labels, [r.result() for r in relabels], n.dir(f"stage-{stage}"), cfg.stages.keep_previous_on_invalid)
    tests = [n.evaluate.submit(s, test, cfg.student, cfg.data.task, n.slots) if test is not None and cfg.stages.evaluate_students else None
             for s in students]
    entries = [student_entry(k, s.metrics, t.result() if t else None) for k, (s, t) in enumerate(zip(trained, tests))]
    publish_stage_table(stage, entries)
    return new_labels, entries


@flow(name="mckd-distill", log_prints=True)
def mckd_flow(config: RunConfig) -> dict:
    """Multistage Collaborative Knowledge Distillation (Zhao et al., ACL 2024) for one RunConfig."""
    logger = get_run_logger()
    cfg, n = config, _Nodes(config)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # 0. Inputs, all validated before any model loads.
    data = prepare_inputs(cfg)
    for warning in data.warnings:  # over-long inputs: said now, before hours of training on cut inputs
        logger.warning(warning)
    cache_path = str(cfg.run_dir.parent / ".teacher-cache.sqlite")

    # 1. Teacher: few-shot pseudolabels Y0 for U (and the teacher's own test score). A vLLM server or engine
    #    mckd runs starts with the first uncached row and is stopped when this block ends, also on failure.
    with teacher_session():
        labels = n.annotate(data.unlabeled, data.labeled, cfg.teacher, cfg.data.task, cfg.seed, n.dir("teacher"), cache_path, "unlabeled")
        teacher_test = (n.annotate(data.test, data.labeled, cfg.teacher, cfg.data.task, cfg.seed, n.dir("teacher", "test"), cache_path, "test")
                        if data.test else None)
    teacher_labels = labels
    timings["teacher"] = _lap(clock)

    # 2. Partition U into K disjoint parts (fixed across stages unless redrawn).
    assignment = n.partition(data.unlabeled, cfg.stages.partitions, cfg.seed, n.dir("data"))

    # 3. Intermediate stages: cross-train and relabel; Y_s is the union of the relabels. Gold-aware students
    #    (student.train_on_labeled) also learn from L's gold rows, less the dev rows they select on.
    gold = data.labeled_train if cfg.student.train_on_labeled else None
    # The SFT-on-L student trains first where a distilled student starts from it (student.init: sft) or Y_0 is its
    # labels of U (stages.first_labels: sft, the teacher's label where its output is invalid); it is also the `sft`
    # baseline (the same cached node). Vanilla KD learns from the teacher's labels either way.
    sft = n.train(**_supervised(cfg, n, data, "sft"), slots=n.slots) if "sft" in (cfg.student.init, cfg.stages.first_labels) else None
    init = sft if cfg.student.init == "sft" else None
    if cfg.stages.first_labels == "sft":
        sft_labels = n.relabel(sft, labels, None, None, 0, "baseline/sft", cfg.student, cfg.data.task, n.dir("sft-labels"), n.slots)
        labels = n.merge(labels, [sft_labels], n.dir("sft-labels"), True)
    first_labels = labels
    stages, label_history = [], [teacher_labels]
    for stage in range(1, cfg.stages.num_stages):
        started = time.perf_counter()
        if cfg.stages.redraw_partitions:
            assignment = n.partition(data.unlabeled, cfg.stages.partitions, stage_seed(cfg.seed, stage, True), n.dir("data"))
        new_labels, students = stage_flow(cfg, stage, labels, assignment, data.dev, data.test, gold, init)
        stages.append({"stage": stage, "students": students, "pseudolabel_f1": _f1(n.score(new_labels, cfg.data.task)),
                       "changed_fraction": changed_fraction(labels, new_labels)})
        labels = new_labels
        label_history.append(labels)
        timings[f"stage-{stage}"] = time.perf_counter() - started

    # 4. Final stage: one student on all of U with Y_{S-1}: the deliverable model. The baselines need nothing
    #    from it, so they train alongside it (each student in a CPU slot of its own, or on a GPU).
    started = time.perf_counter()
    final = n.train.submit(**_on_all_rows(cfg, n, data, labels, cfg.seed + 100 * cfg.stages.num_stages, ("final", "student"),
                                          "final/student", gold=gold, init=init), slots=n.slots)
    baselines = _submit_baselines(cfg, n, data, label_history, gold, init)
    final_test = n.evaluate.submit(final, data.test, cfg.student, cfg.data.task, n.slots) if data.test else None
    final = final.result()
    timings["final"] = time.perf_counter() - started

    # 5. Deliverable guard: the final student and the baselines compared on dev rows none of them trained on; the
    #    final student ships unless one beats it beyond dev noise (the paper's final student stays in the table).
    started = time.perf_counter()
    candidates = {"final": final, **{name: student.result() for name, (student, _) in baselines.items()}}
    dev_f1, vs_final, dirs, not_compared = _dev_scores(cfg, n, data.dev, candidates)
    deliverable = choose_deliverable(dev_f1, dirs, data.dev_source, not_compared, vs_final, data.dev.rows)

    # 6. Evaluate on T (never used for any decision above) and report.
    final_test = final_test.result() if final_test else None
    baseline_tests = {name: test.result() for name, (_, test) in baselines.items()}
    baselines = {name: final_entry(candidates[name].dir, candidates[name].metrics, test.result())
                 for name, (_, test) in baselines.items()}
    timings["evaluate"] = time.perf_counter() - started
    teacher_counts = teacher_labels.read()
    teacher_scores = n.score(teacher_test, cfg.data.task) if teacher_test else None
    teacher_f1 = _f1(n.score(teacher_labels, cfg.data.task))
    timings["total"] = time.perf_counter() - clock
    report = {
        "config": cfg.model_dump(mode="json"),
        "counts": {"labeled": data.labeled.rows, "labeled_train": data.labeled_train.rows, "dev": data.dev.rows,
                   "unlabeled": data.unlabeled.rows, "test": data.test.rows if data.test else 0,
                   "teacher_valid": int(teacher_counts["valid"].sum()), "teacher_invalid": int((~teacher_counts["valid"]).sum()),
                   "teacher_repaired": int((teacher_counts["error"] == "repaired").sum()),
                   **({"sft_n": data.sft_n.rows} if data.sft_n else {})},
        "teacher": {"test": summarize_test(teacher_scores), "pseudolabel_f1": teacher_f1},
        "first_labels": _first_labels_entry(cfg, n, teacher_labels, first_labels, teacher_f1),
        "stages": stages,
        "final_student": final_entry(final.dir, final.metrics, final_test),
        "baselines": baselines,
        "deliverable": deliverable,
        "timings": timings,
    }
    # Final student minus teacher and minus each baseline: paired bootstrap 95% CIs on the test rows.
    tests = {"final": final_test, "teacher": teacher_scores, **baseline_tests}
    report["comparisons"] = comparisons(tests, cfg.data.task)
    report["overlong"] = data.overlong
    report["warnings"] = data.warnings + degradation_warnings(report) + deliverable_warnings(report)
    for warning in report["warnings"]:
        logger.warning(warning)
    report_task(report, str(cfg.run_dir), tests)
    logger.info("run dir: %s", cfg.run_dir)
    return report


def _submit_baselines(cfg: RunConfig, n: _Nodes, data, label_history: list[ParquetRef], gold: ParquetRef | None,
                      init: StudentRef | None) -> dict:
    """Comparison students, each trained like the final student on other labels and scored on T: {name: (student
    future, test future)}.

    An s-stage baseline trains on Y_{s-1} (and `gold`, from `init`, as the final student does) with the seed an s-stage
    run's final student would get, so `mckd-2` here is the final student of the same config with num_stages=2
    (vanilla-kd: Y_0, the teacher's). Supervised baselines: see `_supervised`.
    """
    futures = {}
    for name in cfg.baselines:
        stages = baseline_stages(name)
        if stages is None:
            inputs = _supervised(cfg, n, data, name)
        else:
            inputs = _on_all_rows(cfg, n, data, label_history[stages - 1], cfg.seed + 100 * stages, ("baselines", name),
                                  f"baseline/{name}", gold=gold, init=init)
        student = n.train.submit(**inputs, slots=n.slots)
        futures[name] = (student, n.evaluate.submit(student, data.test, inputs["student"], cfg.data.task, n.slots))
    return futures


def _supervised(cfg: RunConfig, n: _Nodes, data, name: str) -> dict:
    """The train-node inputs of a supervised student: `sft` on L less the dev rows, `sft-n` on sft_n less them;
    it selects epochs on dev only where dev rows are held out of its training data."""
    student_cfg = cfg.student.model_copy(update={"select_on_dev": data.dev_held_out, "min_valid_rows": 1})
    rows = data.labeled_train if name == "sft" else data.sft_n
    return _on_all_rows(cfg, n, data, gold_labels(rows, n.dir("baselines")), cfg.seed, ("baselines", name), f"baseline/{name}",
                        student=student_cfg)


def _on_all_rows(cfg: RunConfig, n: _Nodes, data, labels: ParquetRef, seed: int, out_dir: tuple[str, ...], what: str,
                 student=None, **start) -> dict:
    """The train-node inputs of a student on every row of `labels` (no partition), selecting on data.dev; `start`:
    gold rows and init weights, as the train node takes them."""
    return dict(labels=labels, assignment=None, parts=None, dev=data.dev, student=student or cfg.student,
                task_name=cfg.data.task, seed=seed, out_dir=n.dir(*out_dir), what=what, **start)


def _first_labels_entry(cfg: RunConfig, n: _Nodes, teacher_labels: ParquetRef, first_labels: ParquetRef,
                        teacher_f1: float | None) -> dict:
    """Y_0 in the report: the teacher's labels (already scored) or the SFT student's (stages.first_labels: sft)."""
    if first_labels is teacher_labels:
        return {"source": cfg.stages.first_labels, "pseudolabel_f1": teacher_f1, "changed_fraction": 0.0}
    return {"source": cfg.stages.first_labels, "pseudolabel_f1": _f1(n.score(first_labels, cfg.data.task)),
            "changed_fraction": changed_fraction(teacher_labels, first_labels)}


def _dev_scores(cfg: RunConfig, n: _Nodes, dev: ParquetRef, students: dict[str, StudentRef]) -> tuple[dict, ...]:
    """The candidates scored on every dev row (cached prediction runs), for the guard. A student that trained on dev
    rows is not compared on them. Returns ({name: F1}, {name: candidate - final, paired bootstrap on the dev rows},
    {name: dir}, {name: why not compared})."""
    excluded = {name: f"trained on {s.metrics['dev_overlap']} of the {dev.rows} dev rows"
                for name, s in students.items() if s.metrics.get("dev_overlap")}
    runs = {name: n.evaluate.submit(s, dev, cfg.student, cfg.data.task, n.slots)
            for name, s in students.items() if name not in excluded}
    scored = {name: run.result() for name, run in runs.items()}
    margins = {key.removeprefix("final - "): cmp for key, cmp in comparisons(scored, cfg.data.task).items()}
    vs_final = {name: {"diff": -cmp["diff"], "ci95": [-cmp["ci95"][1], -cmp["ci95"][0]]} for name, cmp in margins.items()}
    return ({name: result["f1"] for name, result in scored.items()}, vs_final, {name: s.dir for name, s in students.items()},
            excluded)


def _lap(start: float) -> float:
    return time.perf_counter() - start


def _f1(metrics: dict | None) -> float | None:
    return None if metrics is None else metrics["f1"]
