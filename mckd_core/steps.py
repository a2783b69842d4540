"""The MCKD pipeline's node logic, one function per DAG node, free of Prefect.

`tasks/` wraps each function in a Prefect task; `benchmarks/` calls them directly to measure what
orchestration costs. Every node reads ParquetRefs and writes new ones, one output row per input row.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from .config import RunConfig, StudentConfig, TeacherConfig, run_format
from .data import (
    ParquetRef,
    assert_conserved,
    canonical_targets,
    check_disjoint,
    check_targets,
    label_frame,
    normalize_examples,
    read_table,
    write_parquet,
)
from .errors import MckdInputError
from .formats import get_format
from .jobs import AnnotateJob, RelabelJob, StudentJob, StudentRef
from .lengths import check_lengths
from .models import check_model_ref
from .partition import partition_ids
from .prompting import Demo, Prompt
from .scoring import score_predictions
from .student import TrainSpec, cpu_threads, predict, train
from .teacher import GenParams, ProgressFn, ResponseCache, TransformersTeacher, annotate, local_model_key
from .teacher.annotation import requests


class Inputs(BaseModel):
    labeled: ParquetRef  # all of L: the teacher's demos
    unlabeled: ParquetRef
    dev: ParquetRef  # selection and the deliverable guard: data.dev, else the held-out slice of L, else L itself
    labeled_train: ParquetRef  # L less the held-out dev rows: what SFT and gold-aware students train on
    dev_source: str  # where `dev` comes from, for the report
    # The teacher's demo pool: data.demos, else labeled_train (never a dev row). Optional only so that an Inputs
    # built by hand (benchmarks) need not name it.
    demos: ParquetRef | None = None
    test: ParquetRef | None = None
    sft_n: ParquetRef | None = None  # less the dev rows where dev is held out
    overlong: dict = {}  # report.json's `overlong`: rows longer than the student / teacher sees (lengths.check_lengths)
    warnings: list[str] = []  # for the run's log and report.json

    @property
    def dev_held_out(self) -> bool:
        """Whether the dev rows are kept out of every training set (data.dev or a held-out slice), rather than being
        L."""
        return self.dev != self.labeled

    @property
    def teacher_demos(self) -> ParquetRef:
        return self.demos or self.labeled_train


def prepare_inputs(cfg: RunConfig) -> Inputs:
    """Load and validate every input (before any model loads) and write them as ParquetRefs."""
    fmt = run_format(cfg.data)
    d = cfg.data
    sets = {
        "labeled": normalize_examples(
            read_table(d.labeled, "labeled"), "labeled", need_target=True, limit=d.max_labeled
        ),
        "unlabeled": normalize_examples(
            read_table(d.unlabeled, "unlabeled"), "unlabeled", need_target=False, limit=d.max_unlabeled
        ),
    }
    if d.test:
        sets["test"] = normalize_examples(read_table(d.test, "test"), "test", need_target=True, limit=d.max_test)
    if d.dev:
        sets["dev"] = normalize_examples(read_table(d.dev, "dev"), "dev", need_target=True)
    if d.demos:
        sets["demos"] = normalize_examples(read_table(d.demos, "demos"), "demos", need_target=True)
    if d.sft_n_labeled:
        sets["sft_n"] = normalize_examples(
            read_table(d.sft_n_labeled, "sft_n_labeled"), "sft_n_labeled", need_target=True
        )
    files = {"labeled": d.labeled, "test": d.test, "dev": d.dev, "sft_n": d.sft_n_labeled, "demos": d.demos}
    for name in ("labeled", "test", "dev", "sft_n", "demos"):
        if name in sets:
            check_targets(sets[name], name, fmt, files[name])
    sets = {name: canonical_targets(df, fmt) for name, df in sets.items()}
    check_disjoint({k: v for k, v in sets.items() if k in ("labeled", "unlabeled", "test")})
    if "sft_n" in sets and "test" in sets:
        # The upper bound may share examples with L and U (all gold from the training pool), never with T.
        check_disjoint({"sft_n_labeled": sets["sft_n"], "test": sets["test"]})
    if "demos" in sets:  # the teacher would be shown the answer of a row it labels
        check_disjoint({k: v for k, v in sets.items() if k in ("demos", "unlabeled", "test")})
    sets, dev_source = _with_dev_rows(cfg, sets)
    demos = len(sets.get("demos", sets.get("labeled_train", sets["labeled"])))  # never a dev row
    if "demos" in sets and demos < cfg.teacher.num_demos:
        raise MckdInputError(
            f"demos ({d.demos}): {demos} rows but teacher.num_demos={cfg.teacher.num_demos}; give more demo rows "
            "or lower teacher.num_demos"
        )
    if demos < cfg.teacher.num_demos:
        held = len(sets["labeled"]) - demos
        raise MckdInputError(
            f"labeled: {len(sets['labeled'])} rows"
            + (f", {held} of them held out as dev rows (data.dev_holdout), leave {demos}" if held else "")
            + f" but teacher.num_demos={cfg.teacher.num_demos}; add labeled rows or lower teacher.num_demos"
        )
    if len(sets["unlabeled"]) < cfg.stages.partitions:
        raise MckdInputError(
            f"unlabeled: {len(sets['unlabeled'])} rows cannot fill stages.partitions={cfg.stages.partitions} parts"
        )
    if cfg.teacher.backend != "vllm-server" or not cfg.teacher.base_url:  # a managed server loads it here too
        check_model_ref(cfg.teacher.model, "teacher.model")
    check_model_ref(cfg.student.model, "student.model")
    overlong, warnings = check_lengths(cfg, sets)
    out = cfg.run_dir / "data"
    refs = {name: write_parquet(df, out, name) for name, df in sets.items()}
    refs.setdefault("dev", refs["labeled"])
    refs.setdefault("labeled_train", refs["labeled"])
    refs.setdefault("demos", refs["labeled_train"])
    return Inputs(**refs, dev_source=dev_source, overlong=overlong, warnings=warnings)


def _with_dev_rows(cfg: RunConfig, sets: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], str]:
    """The dev rows no candidate trains on: data.dev, else a seeded slice of L (`labeled_train` is the rest) that
    avoids data.demos' rows, else none held out (data.dev_holdout: 0, dev = L). Where dev is held out, sft-n's rows
    that are dev rows are left out, and no dev row may be a demo."""
    demo_ids = set(sets["demos"]["id"]) if "demos" in sets else set()
    if "dev" in sets:
        _check_dev_unseen(cfg, sets)
        dev, source = sets["dev"], f"data.dev ({len(sets['dev'])} rows)"
        if shared := demo_ids & set(dev["id"]):
            raise MckdInputError(
                f"demos ({cfg.data.demos}): {len(shared)} id(s) also in dev (e.g. {sorted(shared)[0]!r}); a dev row "
                "in a teacher prompt flatters the teacher's dev score; remove them from one of the two files"
            )
    else:
        labeled = sets["labeled"]
        n = _holdout_size(cfg, len(labeled))
        if n == 0:
            return sets, f"the labeled set L ({len(labeled)} rows, none held out)"
        # Dev rows come from the rows of L that are not demos; without data.demos, the same draw as ever.
        pool = np.flatnonzero(~labeled["id"].isin(demo_ids).to_numpy())
        if len(pool) < n:
            raise MckdInputError(
                f"demos ({cfg.data.demos}): {len(labeled) - len(pool)} of L's {len(labeled)} rows are demos, leaving "
                f"{len(pool)} to hold out {n} dev rows from (a demo is never a dev row); give data.dev, lower "
                "data.dev_holdout, or use demos that leave more of L"
            )
        held = pool[np.random.default_rng(cfg.seed).permutation(len(pool))[:n]]
        dev = labeled.iloc[np.sort(held)].reset_index(drop=True)
        sets = {**sets, "dev": dev, "labeled_train": labeled.drop(labeled.index[held]).reset_index(drop=True)}
        source = f"{n} row{'s' * (n > 1)} held out of L (data.dev_holdout)"
    if "sft_n" in sets:  # the upper bound's gold may include L, and with it the dev rows
        sets = {**sets, "sft_n": sets["sft_n"][~sets["sft_n"]["id"].isin(set(dev["id"]))].reset_index(drop=True)}
    return sets, source


def _holdout_size(cfg: RunConfig, rows: int) -> int:
    """How many rows of L become dev rows (data.dev_holdout; null: a fifth)."""
    n = rows // 5 if cfg.data.dev_holdout is None else cfg.data.dev_holdout
    if cfg.student.train_on_labeled and n == 0:
        raise MckdInputError(
            f"labeled: {rows} rows are too few to hold out a fifth as the dev rows student.train_on_labeled "
            "(on by default) needs; give data.dev, set data.dev_holdout to a number of rows, or set "
            "student.train_on_labeled: false"
        )
    if n >= rows:
        raise MckdInputError(
            f"labeled: data.dev_holdout={n} holds out all {rows} rows of L as dev and leaves none to train "
            "on; lower data.dev_holdout or give data.dev"
        )
    return n


def _check_dev_unseen(cfg: RunConfig, sets: dict[str, pd.DataFrame]) -> None:
    """data.dev shares no row with the test set nor with a set some student trains on (U; L with sft or gold-aware
    students): a student never selects on a row it trained on, and no decision reads T."""
    trained_on_l = (
        cfg.student.train_on_labeled
        or cfg.student.init == "sft"
        or cfg.stages.first_labels != "teacher"  # sft and auto train the SFT student first
        or "sft" in cfg.baselines
    )
    for name in ("unlabeled", "labeled" if trained_on_l else "", "test"):
        shared = set(sets["dev"]["id"]) & set(sets[name]["id"]) if name in sets else set()
        if shared:
            why = "no decision may read the test set" if name == "test" else f"students train on the {name} rows"
            raise MckdInputError(
                f"dev: {len(shared)} id(s) also in {name} (e.g. {sorted(shared)[0]!r}); {why}, so they "
                "cannot be dev rows; remove them from one of the sets"
            )


# ---- teacher -------------------------------------------------------------------------------------------

# Backends holding a server, an engine or weights that mckd started or loaded (see teacher_session).
_closable_backends: list = []


@functools.lru_cache(maxsize=2)
def _teacher_backend(cfg_json: str, api_key: str | None):
    cfg = TeacherConfig.model_validate_json(cfg_json)
    if cfg.backend == "transformers":
        teacher = TransformersTeacher(
            cfg.model, cfg.revision, cfg.chat, cfg.batch_size, cfg.trust_remote_code, cfg.precision
        )
        _closable_backends.append(teacher)
        return teacher
    if cfg.backend == "vllm-server" and cfg.base_url:
        from .teacher.http import openai_teacher_from_config

        return openai_teacher_from_config(cfg, api_key)
    from .teacher.managed import ManagedServerTeacher
    from .teacher.vllm_offline import OfflineVLLMTeacher

    backend = ManagedServerTeacher(cfg) if cfg.backend == "vllm-server" else OfflineVLLMTeacher(cfg)
    _closable_backends.append(backend)
    return backend


@contextlib.contextmanager
def teacher_session():
    """The teacher phase of a run: on leaving it — done or failed — every vLLM server mckd started is stopped
    and every in-process vLLM engine and transformers teacher's weights freed (the students need the memory; a
    dead run must not leave a server holding a GPU). vLLM backends start lazily, so a fully cached teacher phase
    starts nothing."""
    try:
        yield
    finally:
        for backend in _closable_backends:
            backend.close()


def annotation_chunk(cfg: TeacherConfig) -> int:
    """Rows per backend call: responses are cached after each call, so a crash loses at most one chunk.

    One batch for transformers generation; for vLLM (a server or the offline engine), enough to keep its batches full.
    """
    return cfg.batch_size if cfg.backend == "transformers" else 4 * cfg.concurrency


def teacher_backend(cfg: TeacherConfig, api_key: str | None = None):
    """One backend per teacher config per process (loading a model for U and again for T would waste minutes).

    `api_key`: the endpoint's key when the caller resolved it (a secret store); None reads `cfg.api_key_env`.
    """
    return _teacher_backend(cfg.model_dump_json(), api_key)


def _annotation_inputs(job: AnnotateJob, fmt) -> tuple[pd.DataFrame, list[Demo], GenParams]:
    """The rows to label, the demos and the generation parameters of an annotation job."""
    cfg = job.teacher
    demo_rows = job.demos.read()
    demo_list = [Demo(i, x, y) for i, x, y in zip(demo_rows["id"], demo_rows["input"], demo_rows["target"])]
    params = GenParams(
        cfg.max_new_tokens, cfg.temperature, **(structured_constraint(fmt) if cfg.structured_outputs else {})
    )
    return job.examples.read(), demo_list, params


def teacher_requests(job: AnnotateJob) -> tuple[list[Prompt], list[str], list[Demo]]:
    """The prompts `annotate_rows` would send for `job`, their response-cache keys and the demos, without building
    the teacher (no weights load, no server starts)."""
    fmt = get_format(job.task)
    rows, demos, params = _annotation_inputs(job, fmt)
    cfg = job.teacher
    prompts, keys = requests(
        list(rows["input"]),
        demos,
        fmt,
        cache_model_key(cfg),
        k=cfg.num_demos,
        selection=cfg.demo_selection,
        seed=job.seed,
        params=params,
        chat=cfg.chat,
    )
    return prompts, keys, demos


def cache_model_key(cfg: TeacherConfig) -> str:
    """The teacher's identity in the response cache (each backend's `model_key`), without building the backend."""
    if cfg.backend == "vllm-server":
        from .teacher.http import server_model_key

        return server_model_key(cfg)
    return local_model_key(cfg.model, cfg.revision)


def annotate_rows(job: AnnotateJob, progress=None, api_key: str | None = None) -> tuple[ParquetRef, dict]:
    """Teacher pseudolabels Y0 for every row of `job.examples` (per-row cached); `api_key` as in `teacher_backend`."""
    cfg, fmt = job.teacher, get_format(job.task)
    rows, demo_list, params = _annotation_inputs(job, fmt)
    cache = ResponseCache(job.cache_path)
    started = time.time()
    try:
        labels, stats = annotate(
            rows,
            demo_list,
            fmt,
            teacher_backend(cfg, api_key),
            cache,
            k=cfg.num_demos,
            selection=cfg.demo_selection,
            seed=job.seed,
            params=params,
            chat=cfg.chat,
            progress=progress,
            chunk_size=annotation_chunk(cfg),
        )
    finally:
        cache.close()
    ref = write_parquet(labels, job.out_dir, "labels")
    assert_conserved(rows, labels, "annotate")
    return ref, {
        "requested": stats.requested,
        "cached": stats.cached,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "metered": stats.metered,
        "tokens": stats.tokens(),
        "seconds": time.time() - started,
        "valid": int(labels["valid"].sum()),
        "invalid": int((~labels["valid"]).sum()),
        "repaired": int((labels["error"] == "repaired").sum()),
    }


def structured_constraint(fmt) -> dict:
    """The GenParams constraint of a format for structured outputs: its JSON Schema, else its regex, else none."""
    schema = getattr(fmt, "json_schema", None)
    if isinstance(schema, dict):
        import json

        return {"json_schema": json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)}
    regex = getattr(fmt, "regex", None)
    return {"regex": regex} if isinstance(regex, str) else {}


# ---- partition / students ----------------------------------------------------------------------------


def make_partition(unlabeled: ParquetRef, k: int, seed: int, out_dir: str | Path) -> ParquetRef:
    return write_parquet(partition_ids(list(unlabeled.read()["id"]), k, seed), out_dir, "partition")


def training_rows(
    labels: ParquetRef,
    assignment: ParquetRef | None,
    parts: list[int] | None,
    min_valid: int,
    what: str,
    gold: ParquetRef | None = None,
    gold_share: float | None = None,
) -> pd.DataFrame:
    """The valid pseudolabeled rows of the given parts (all parts when `assignment` is None), after the gold rows of
    `gold` when given (gold-aware students: a gold row keeps its target; it is never relabeled), repeated until they
    make at least `gold_share` of the rows (student.gold_share)."""
    df = labels.read()
    if assignment is not None:
        part = assignment.read().set_index("id")["part"]
        df = df[df["id"].map(part).isin(parts)]
    valid = df[df["valid"] & df["label"].notna()]
    if len(valid) < min_valid:
        sources = ", ".join(sorted(set(df["source"]))) or "none"
        raise MckdInputError(
            f"{what}: only {len(valid)} valid labels of {len(df)} rows (student.min_valid_rows={min_valid}); "
            f"the outputs of {sources} are mostly invalid — check that model, its prompt/demos or epochs, or lower "
            "the floor"
        )
    if gold is None:
        return valid
    rows = _gold_frame(gold.read())
    return pd.concat([rows] * gold_repeats(len(rows), len(valid), gold_share) + [valid], ignore_index=True)


def gold_repeats(gold: int, pseudo: int, share: float | None) -> int:
    """How many times each of `gold` rows goes into a student's rows beside `pseudo` pseudolabeled ones, so that
    they make at least `share` of them (once when `share` is None)."""
    if share is None or gold == 0:
        return 1
    exact = Fraction(str(share))  # the share as written: float rounding would add a repeat where it is met exactly
    return max(1, math.ceil(exact * pseudo / ((1 - exact) * gold)))


def train_student(job: StudentJob, attempt: int = 1, progress: ProgressFn | None = None) -> StudentRef:
    """Train the job's student here, in this process; attempt n > 1 backs off the micro-batch (OOM retries). A student
    never selects on a row it trained on."""
    cfg = job.student
    train_df = training_rows(
        job.labels, job.assignment, job.parts, cfg.min_valid_rows, job.name, job.gold, cfg.gold_share
    )
    dev_all = job.dev.read()
    seen = set(train_df["id"]) & set(dev_all["id"])
    if seen and cfg.select_on_dev:
        raise MckdInputError(
            f"{job.name}: trains on {len(seen)} of its {len(dev_all)} dev rows (e.g. {sorted(seen)[0]!r}) and "
            "would select its epoch on them; give a data.dev disjoint from its training rows"
        )
    dev_df = dev_all.iloc[: cfg.max_dev]
    gold = 0 if job.gold is None else job.gold.rows
    init = job.init
    spec = TrainSpec(
        model=init.dir if init else cfg.model,
        revision=None if init else cfg.revision,
        out_dir=job.out_dir,
        task=job.task,
        train_inputs=list(train_df["input"]),
        train_targets=list(train_df["label"]),
        dev_inputs=list(dev_df["input"]),
        dev_targets=list(dev_df["target"]),
        student=cfg,
        seed=job.seed,
        attempt=attempt,
        # For the deliverable guard: the dev rows it selected on (its dev_f1 is its score on them) and those it trained
        # on.
        record={
            "gold_rows": gold,
            "gold_repeats": int((train_df["source"] == "gold").sum()) // gold if gold else 0,
            "dev_rows": len(dev_df) if cfg.select_on_dev else 0,
            "dev_overlap": len(seen),
            **({"init": init.dir, "init_weights_sha256": init.metrics.get("weights_sha256")} if init else {}),
        },
    )
    return StudentRef(dir=job.out_dir, metrics=train(spec, progress))


def relabel(student: StudentRef, job: RelabelJob, progress: ProgressFn | None = None) -> ParquetRef:
    """The student's labels for the rows of `job.part` (all rows when `job.assignment` is None); with `job.logprobs`,
    a `logprob` column holds each output's mean token log-probability (how sure the student is: `mckd suggest`)."""
    fmt, cfg = get_format(job.task), job.settings
    df = job.labels.read()
    if job.assignment is not None:
        df = df[df["id"].map(job.assignment.read().set_index("id")["part"]) == job.part]
    examples = df[[c for c in df.columns if c not in ("label", "raw", "valid", "error", "source", "stage", "logprob")]]
    logprobs: list[float] | None = [] if job.logprobs else None
    with cpu_threads(cfg.cpu_threads):  # like training: the labels do not depend on the slot's core count
        raws = predict(
            student.dir,
            list(examples["input"]),
            cfg.eval_batch_size,
            cfg.max_target_tokens,
            cfg.precision,
            progress,
            logprobs=logprobs,
        )
    checked = [fmt.check(x, r) for x, r in zip(examples["input"], raws)]
    out = label_frame(
        examples,
        [c.label for c in checked],
        raws,
        [c.valid for c in checked],
        [c.error if not c.valid else ("repaired" if c.repaired else None) for c in checked],
        job.source,
        job.stage,
    )
    if logprobs is not None:
        out["logprob"] = logprobs
    assert_conserved(examples, out, job.source)
    return write_parquet(out, job.out_dir, "relabels")


def merge_labels(
    previous: ParquetRef, relabels: list[ParquetRef], out_dir: str | Path, keep_previous_on_invalid: bool = True
) -> ParquetRef:
    """Y_s: the union of the students' relabels, in the row order of Y_{s-1}.

    Where a student's output is invalid but the previous label was valid, the previous label is kept
    (its source/stage say where it came from), so one weak student cannot empty the next stage.
    """
    prev = previous.read()
    merged = pd.concat([r.read() for r in relabels]).set_index("id").loc[prev["id"]].reset_index()
    assert_conserved(prev, merged, "merge")
    if keep_previous_on_invalid:
        fallback = (~merged["valid"].to_numpy()) & prev["valid"].to_numpy()
        notes = "kept previous label; student output invalid: " + merged.loc[fallback, "error"].fillna("").astype(str)
        for column in ("label", "raw", "valid", "error", "source", "stage"):
            merged.loc[fallback, column] = prev.loc[fallback, column].to_numpy()
        merged.loc[fallback, "error"] = notes.to_numpy()
    return write_parquet(merged, out_dir, "labels")


def gold_labels(examples: ParquetRef, out_dir: str | Path) -> ParquetRef:
    """Gold targets as label rows (for baselines trained on L)."""
    return write_parquet(_gold_frame(examples.read()), out_dir, "gold-labels")


def _gold_frame(df: pd.DataFrame) -> pd.DataFrame:
    return label_frame(df, list(df["target"]), list(df["target"]), [True] * len(df), [None] * len(df), "gold", 0)


# ---- evaluation ----------------------------------------------------------------------------------------


def score_labels(labels: ParquetRef, task: str) -> dict | None:
    """Metrics of label rows against their gold `target`, with `ci95` and per-row `rows` (scoring.score_predictions);
    None when the rows carry no gold."""
    df = labels.read()
    gold = df["target"].notna()
    if not gold.all():
        return None
    return score_predictions(df, [label if v else None for label, v in zip(df["label"], df["valid"])], task)


def evaluate_student(
    student: StudentRef, test: ParquetRef, cfg: StudentConfig, task: str, progress: ProgressFn | None = None
) -> dict:
    """The student's test metrics, with `ci95` and per-row `rows` (scoring.score_predictions)."""
    df = test.read()
    with cpu_threads(cfg.cpu_threads):
        preds = predict(
            student.dir, list(df["input"]), cfg.eval_batch_size, cfg.max_target_tokens, cfg.precision, progress
        )
    return score_predictions(df, preds, task)


def changed_fraction(before: ParquetRef, after: ParquetRef) -> float:
    a = before.read().set_index("id")["label"]
    b = after.read().set_index("id")["label"].reindex(a.index)
    return float((a.fillna("\0") != b.fillna("\0")).mean())
