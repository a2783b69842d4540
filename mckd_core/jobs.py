"""The units of work that cross the layers whole: flows build them, tasks run them where a slot says, the core
executes them. A job's fields are everything that decides its result, plus where it writes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .config import StudentConfig, TeacherConfig
from .data import ParquetRef


class StudentRef(BaseModel):
    """A trained student: its saved dir and the metrics.json written with it."""

    dir: str
    metrics: dict


class TeacherLabels(BaseModel):
    """The teacher's label rows of one set, with what asking for them cost (`annotation.token_entry`: the rows sent,
    those served from the response cache, and their tokens)."""

    labels: ParquetRef
    tokens: dict


class _Job(BaseModel):
    # Jobs travel as task inputs, cache keys and deployment parameters: unknown fields are mistakes.
    model_config = ConfigDict(extra="forbid", frozen=True)


class StudentJob(_Job):
    """Train one student: on the valid labels of `parts` of `labels` (every row when `assignment` is None), plus the
    gold rows of `gold`, starting from `init`'s weights (else `student.model`), selecting its epoch on `dev`."""

    name: str  # in logs, the UI and errors: "stage-1/student-0", "final/student", "baseline/sft"
    task: str
    student: StudentConfig
    seed: int
    labels: ParquetRef
    dev: ParquetRef
    out_dir: str
    assignment: ParquetRef | None = None
    parts: list[int] | None = None
    gold: ParquetRef | None = None
    init: StudentRef | None = None

    def relabel(self, part: int | None, stage: int, out_dir: str | Path, logprobs: bool = False) -> RelabelJob:
        """The job of this student labeling its held-out `part` of the same labels (every row: `part` None)."""
        return RelabelJob(
            labels=self.labels,
            assignment=self.assignment if part is not None else None,
            part=part,
            stage=stage,
            source=self.name,
            settings=self.student,
            task=self.task,
            out_dir=str(out_dir),
            logprobs=logprobs,
        )


class RelabelJob(_Job):
    """A trained student's labels for the rows of `part` of `labels` (every row when `assignment` is None), as label
    rows of `source` at `stage`; `settings` says how it generates (batch size, target length, precision). The student
    travels beside the job: a node can be handed the job before its student has finished training."""

    labels: ParquetRef
    source: str
    stage: int
    settings: StudentConfig
    task: str
    out_dir: str
    assignment: ParquetRef | None = None
    part: int | None = None
    logprobs: bool = False  # also each output's mean token log-probability (the final student's labels of U)


class AnnotateJob(_Job):
    """The teacher's few-shot labels for every row of `examples`, with demos drawn from `demos`."""

    examples: ParquetRef
    demos: ParquetRef
    teacher: TeacherConfig
    task: str
    seed: int
    out_dir: str
    cache_path: str  # the per-row response cache (SQLite) shared by the runs of a runs root
    what: str = "unlabeled"  # which set, for logs and progress
