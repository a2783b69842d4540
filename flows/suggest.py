"""Which rows of U to label next, in the UI (deployment `mckd-suggest`): `mckd suggest` as a flow."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from mckd_core.suggest import as_frame, suggest, write_label_studio, write_suggestions


@flow(name="mckd-suggest", log_prints=True)
def suggest_flow(run_dir: str, n: int = 50, out: str | None = None, label_studio: str | None = None) -> list[dict]:
    """Rank a finished run's unlabeled rows by how much a gold label would help (mckd_core.suggest) and publish the
    `n` picked as the table artifact `mckd-suggest` (id, input, pre-annotation, score, why); `out` (.jsonl/.csv) and
    `label_studio` (task import JSON, its labeling config beside it) also write them to files on the worker."""
    logger = get_run_logger()
    run, picked = suggest(run_dir, n)
    rows = as_frame(picked).to_dict(orient="records")
    create_table_artifact(
        key="mckd-suggest",
        table=rows,
        description=f"The {len(rows)} rows of {run_dir}'s U to label next (best first), with the current best label",
    )
    if out:
        logger.info("suggestions: %s", write_suggestions(picked, out))
    if label_studio:
        tasks, config = write_label_studio(run, picked, label_studio)
        logger.info("Label Studio tasks: %s, labeling config: %s", tasks, config)
    logger.info("%d rows suggested of %s", len(rows), run_dir)
    return rows
