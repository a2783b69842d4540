"""The jobs of one MCKD run, built from its config and validated inputs: which rows each student learns from, its
seed, its name and directory. The flow decides the order; this decides what each node is."""

from __future__ import annotations

from pathlib import Path

from .config import RunConfig, StudentConfig, baseline_stages
from .data import ParquetRef
from .jobs import AnnotateJob, RelabelJob, StudentJob, StudentRef
from .partition import cross_assignment
from .steps import Inputs, gold_labels


class RunPlan:
    def __init__(self, cfg: RunConfig, data: Inputs):
        self.cfg, self.data = cfg, data
        # Gold-aware students (student.train_on_labeled) also learn from L's gold rows, less the dev rows they select
        # on.
        self.gold = data.labeled_train if cfg.student.train_on_labeled else None

    def path(self, *parts: str) -> str:
        return str(self.cfg.run_dir.joinpath(*parts))

    @property
    def teacher_cache(self) -> str:
        """The per-row teacher cache, shared by every run of the runs root (a re-run asks only new rows)."""
        return str(self.cfg.run_dir.parent / ".teacher-cache.sqlite")

    def teacher_sets(self) -> dict[str, ParquetRef]:
        """What the teacher labels: U, T when given (its own score), the dev rows where stages.first_labels: auto
        compares its labels with the SFT student's."""
        sets = {"unlabeled": self.data.unlabeled, "test": self.data.test}
        if self.compares_first_labels:
            sets["dev"] = self.data.dev
        return {which: rows for which, rows in sets.items() if rows is not None}

    def annotate(self, examples: ParquetRef, which: str) -> AnnotateJob:
        """The teacher labeling `examples` ("unlabeled", "test" or "dev"), with its demos from L's training rows (or
        data.demos): a dev row in a prompt would flatter every distilled candidate's dev score against SFT's, which
        never saw it."""
        out_dir = self.path("teacher") if which == "unlabeled" else self.path("teacher", which)
        return AnnotateJob(
            examples=examples,
            demos=self.data.teacher_demos,
            teacher=self.cfg.teacher,
            task=self.cfg.data.format_ref,
            seed=self.cfg.seed,
            out_dir=out_dir,
            cache_path=self.teacher_cache,
            what=which,
        )

    @property
    def sft_trains_first(self) -> bool:
        """The SFT-on-L student is needed before the stages: distilled students start from it (student.init: sft), or
        Y_0 is its labels of U (stages.first_labels: sft)."""
        return self.cfg.student.init == "sft" or self.cfg.stages.first_labels == "sft" or self.compares_first_labels

    @property
    def compares_first_labels(self) -> bool:
        """stages.first_labels: auto has a choice to make: dev rows the SFT student did not train on, and stages to
        distill through (one stage is vanilla KD, which learns from the teacher's labels); else it keeps the
        teacher's."""
        auto = self.cfg.stages.first_labels == "auto" and self.cfg.stages.num_stages >= 2
        return auto and self.data.dev_held_out

    def stage_students(
        self, stage: int, labels: ParquetRef, assignment: ParquetRef, init: StudentRef | None
    ) -> list[tuple[StudentJob, int]]:
        """Stage `stage`'s students: student k trains on every part but k and relabels part k; (job, part k)."""
        jobs = []
        for k, (train_parts, held_out) in enumerate(cross_assignment(self.cfg.stages.partitions)):
            name = f"stage-{stage}/student-{k}"
            job = self._student(
                name,
                labels,
                self.cfg.seed + 100 * stage + k,
                self.path(name),
                init,
                assignment=assignment,
                parts=train_parts,
            )
            jobs.append((job, held_out))
        return jobs

    def relabel(self, job: StudentJob, part: int, stage: int) -> RelabelJob:
        """`job`'s trained student labeling its held-out `part` of the labels it learned from."""
        return job.relabel(part, stage, self.path(f"stage-{stage}", f"partition-{part}"))

    def final_relabel(self, job: StudentJob) -> RelabelJob:
        """The final student labeling every row of U, with each output's mean token log-probability."""
        return job.relabel(None, self.cfg.stages.num_stages, self.path("final", "labels"), logprobs=True)

    def first_labels_by_sft(self, teacher_labels: ParquetRef) -> RelabelJob:
        """The SFT student's labels of every row of U (stages.first_labels: sft)."""
        return RelabelJob(
            labels=teacher_labels,
            source="baseline/sft",
            stage=0,
            settings=self._sft_settings(),
            task=self.cfg.data.format_ref,
            out_dir=self.path("sft-labels"),
        )

    def distilled(self, name: str, labels: ParquetRef, stages: int, init: StudentRef | None) -> StudentJob:
        """A student on every row of `labels`, with the seed an `stages`-stage run's final student gets: the final
        student itself ("final"), or a baseline (`mckd-2` is the final student of the same config with 2 stages;
        vanilla-kd learns from Y_0, the teacher's labels)."""
        name, out_dir = (
            ("final/student", self.path("final", "student"))
            if name == "final"
            else (f"baseline/{name}", self.path("baselines", name))
        )
        return self._student(name, labels, self.cfg.seed + 100 * stages, out_dir, init)

    def _sft_settings(self) -> StudentConfig:
        """student settings for the SFT students and their labels: gold_share shapes distilled students only, so it
        is left out of their keys (a run with it reuses the SFT students of a run without)."""
        return self.cfg.student.model_copy(update={"gold_share": None})

    def supervised(self, name: str) -> StudentJob:
        """`sft` on L less the dev rows, `sft-n` on data.sft_n_labeled less them; it selects epochs on dev only where
        dev rows are held out of its training data."""
        rows = self.data.labeled_train if name == "sft" else self.data.sft_n
        settings = self._sft_settings().model_copy(
            update={"select_on_dev": self.data.dev_held_out, "min_valid_rows": 1}
        )
        return StudentJob(
            name=f"baseline/{name}",
            task=self.cfg.data.format_ref,
            student=settings,
            seed=self.cfg.seed,
            labels=gold_labels(rows, self.path("baselines")),
            dev=self.data.dev,
            out_dir=self.path("baselines", name),
        )

    def baseline(self, name: str, label_history: list[ParquetRef], init: StudentRef | None) -> StudentJob:
        """A comparison student: supervised (sft, sft-n), or distilled from Y_{s-1} like an s-stage final student."""
        stages = baseline_stages(name)
        if stages is None:
            return self.supervised(name)
        return self.distilled(name, label_history[stages - 1], stages, init)

    def _student(
        self, name: str, labels: ParquetRef, seed: int, out_dir: str | Path, init: StudentRef | None, **part
    ) -> StudentJob:
        return StudentJob(
            name=name,
            task=self.cfg.data.format_ref,
            student=self.cfg.student,
            seed=seed,
            labels=labels,
            dev=self.data.dev,
            out_dir=str(out_dir),
            gold=self.gold,
            init=init,
            **part,
        )


def choose_first_labels(teacher_dev_f1: float | None, sft_dev_f1: float | None, one_stage: bool = False) -> dict:
    """stages.first_labels: auto: Y_0 from the SFT student where it labels the dev rows better than the teacher, else
    from the teacher (ties, or SFT not comparable: it trained on the dev rows). report.json keeps the choice."""
    dev = {"teacher": teacher_dev_f1, "sft": sft_dev_f1}
    if one_stage:
        return {"chosen": "teacher", "dev": dev, "why": "one stage is vanilla KD: the teacher's labels"}
    if sft_dev_f1 is None or teacher_dev_f1 is None:
        return {
            "chosen": "teacher",
            "dev": dev,
            "why": "the SFT student could not be scored on dev rows it did not "
            "train on (no dev rows held out): the teacher's labels, as in the paper",
        }
    chosen = "sft" if sft_dev_f1 > teacher_dev_f1 else "teacher"
    return {"chosen": chosen, "dev": dev, "why": f"dev F1: sft {sft_dev_f1:.1f}, teacher {teacher_dev_f1:.1f}"}
