"""Score a trained student directory on a gold test set (deployment `mckd-evaluate`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from mckd_core.config import load_schema
from mckd_core.data import canonical_targets, check_targets, normalize_examples, read_table
from mckd_core.errors import MckdInputError
from mckd_core.formats import format_ref, get_format
from mckd_core.scoring import score_predictions
from mckd_core.student import predict

METRIC_KEYS = ("f1", "f1_kim", "precision", "recall", "exact_match", "invalid")


@flow(name="mckd-evaluate", log_prints=True)
def evaluate_flow(
    model_dir: str,
    test: str,
    task: str,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    schema: dict | str | None = None,
) -> dict:
    """Predict `test` (Parquet/JSONL/CSV with `input` and gold `target`) with the student in `model_dir`
    and score it with the task format's metrics (percent); `schema`: a JSON Schema (inline or a file) for task json.
    Publishes the markdown artifact `mckd-evaluate`."""
    logger = get_run_logger()
    ref = format_ref(task, load_schema(schema, "schema"))
    fmt = get_format(ref)  # an unknown task fails here, naming the known ones
    if not (Path(model_dir) / "config.json").is_file():
        raise MckdInputError(
            f"model_dir: {model_dir} is not a saved student (no config.json); point at e.g. <run dir>/final/student"
        )
    df = canonical_targets(normalize_examples(read_table(test, "test"), "test", need_target=True), fmt)
    check_targets(df, "test", fmt, test)
    started = time.perf_counter()
    preds = predict(model_dir, list(df["input"]), batch_size=batch_size, max_new_tokens=max_new_tokens)
    seconds = time.perf_counter() - started
    metrics = score_predictions(df, preds, ref)  # reads gold columns such as constituency's `pos`; adds `ci95`
    metrics.pop("rows", None)  # per-row statistics: for comparisons, not for a flow result
    logger.info(
        "%s on %s (%d rows): F1 %.1f, exact match %.1f, %.1fs",
        model_dir,
        test,
        len(df),
        metrics["f1"],
        metrics["exact_match"],
        seconds,
    )
    create_markdown_artifact(
        key="mckd-evaluate",
        markdown=_markdown(model_dir, test, task, df, preds, metrics, seconds),
        description=f"{task} metrics of {Path(model_dir).name} on {Path(test).name}",
    )
    return metrics


def _markdown(model_dir: str, test: str, task: str, df, preds: list, metrics: dict, seconds: float) -> str:
    rows = [f"| {key} | {metrics[key]:.1f} |" for key in METRIC_KEYS if isinstance(metrics.get(key), (int, float))]
    lines = [
        f"# Evaluation: `{model_dir}`",
        "",
        f"Test set `{test}` ({len(df)} rows), task `{task}`, {seconds:.1f}s.",
        "",
        "| metric | value (%) |",
        "|---|---|",
        *rows,
        "",
    ]
    misses = [(x, y, p) for x, y, p in zip(df["input"], df["target"], preds) if (p or "").strip() != str(y).strip()][:5]
    if misses:
        lines += ["First mismatches:", "", "| input | gold | predicted |", "|---|---|---|"]
        lines += [f"| {_cell(x)} | {_cell(y)} | {_cell(p)} |" for x, y, p in misses]
    extra = {k: v for k, v in metrics.items() if k not in METRIC_KEYS}
    if extra:
        lines += ["", "Other metrics: `" + json.dumps(extra, default=str)[:2000] + "`"]
    return "\n".join(lines) + "\n"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:200]
