"""Scheduled re-distillation: when new unlabeled data lands in a folder, run MCKD again on the grown set.

The unlabeled set of a re-distillation is `data.unlabeled` (the seed set; set it to `watch_dir` itself to use
the folder only) plus every `.parquet` / `.jsonl` file in `watch_dir`, deduplicated by `id` (content-hash ids
where a file has none). The combined set is written (content-addressed) to `<run dir>/incoming/`. Its ids are
compared with those of the last successful re-distillation (`<run dir>/redistill-state.json`, written only
after a run succeeds): nothing new → return at once; new rows → the MCKD flow runs as a subflow on the
combined set. The per-row teacher cache sends only the new rows to the teacher; students retrain.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.mckd import mckd_flow
from mckd_core.config import RunConfig
from mckd_core.data import ParquetRef, content_id, normalize_examples, read_table, write_parquet
from mckd_core.errors import MckdInputError

WATCHED_SUFFIXES = (".parquet", ".jsonl")
STATE_FILE = "redistill-state.json"


@flow(name="mckd-redistill", log_prints=True)
def redistill_flow(config: RunConfig, watch_dir: str) -> dict:
    """Re-run MCKD on `data.unlabeled` + the files in `watch_dir` when they hold rows the last run did not see."""
    logger = get_run_logger()
    run_dir = config.run_dir
    combined, sources = collect_unlabeled(config, watch_dir)
    if combined is None:
        logger.info("no new data: no rows in %s yet", watch_dir)
        return {
            "status": "no new data",
            "new_rows": 0,
            "unlabeled_rows": 0,
            "sources": sources,
            "watch_dir": str(watch_dir),
        }
    state_path = run_dir / STATE_FILE
    previous = load_state(state_path)
    seen = previous_ids(previous, logger)
    ids = set(combined.read()["id"])
    new_ids = ids - seen
    summary = {
        "unlabeled_rows": combined.rows,
        "unlabeled": combined.path,
        "sources": sources,
        "watch_dir": str(watch_dir),
        "last_success": previous.get("finished_at") if previous else None,
    }
    if not new_ids:
        logger.info(
            "no new data: %d unlabeled rows in %s, all used by the last successful run (%s)",
            combined.rows,
            watch_dir,
            summary["last_success"] or "none",
        )
        return {"status": "no new data", "new_rows": 0, **summary}
    logger.info(
        "%d new unlabeled rows (%d in all, %d seen before): distilling", len(new_ids), combined.rows, len(ids & seen)
    )
    data = config.data.model_copy(update={"unlabeled": combined.path, "max_unlabeled": None})
    if config.data.max_unlabeled is not None:
        logger.warning(
            "data.max_unlabeled=%d is ignored by re-distillation (new rows must reach the teacher)",
            config.data.max_unlabeled,
        )
    report = mckd_flow(config.model_copy(update={"data": data}))
    save_state(
        state_path,
        {
            "unlabeled": combined.model_dump(),
            "rows": combined.rows,
            "new_rows": len(new_ids),
            "flow_run_id": str(flow_run.id) if flow_run.id else None,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return {**report, "status": "distilled", "new_rows": len(new_ids), **summary}


def watched_files(watch_dir: str | Path) -> list[Path]:
    """The data files of the folder, in name order (hidden and temporary files are skipped)."""
    folder = Path(watch_dir)
    if not folder.is_dir():
        raise MckdInputError(f"watch_dir: {folder} is not a directory; create it and drop .parquet/.jsonl files there")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in WATCHED_SUFFIXES and not p.name.startswith((".", "_", "~"))
    )


def collect_unlabeled(config: RunConfig, watch_dir: str | Path) -> tuple[ParquetRef | None, list[str]]:
    """data.unlabeled + every watched file → one deduplicated, validated Parquet under `<run dir>/incoming/`
    (None when there is no row at all yet)."""
    sources: list[Path] = []
    seed = Path(config.data.unlabeled)
    if seed.resolve() != Path(watch_dir).resolve():
        sources.append(seed)
    sources += watched_files(watch_dir)
    frames = []
    for path in sources:
        df = read_table(path, f"unlabeled ({path.name})")
        if len(df) == 0:
            continue
        if "input" not in df.columns:
            raise MckdInputError(f"{path}: missing column 'input' (found: {', '.join(map(str, df.columns))})")
        if "id" not in df.columns:
            df.insert(0, "id", df["input"].astype(str).map(content_id))
        df["id"] = df["id"].astype(str)
        frames.append(df)
    if not frames:
        return None, [str(p) for p in sources]
    combined = pd.concat(frames, ignore_index=True).drop_duplicates("id", keep="first")
    combined = normalize_examples(combined, "unlabeled (re-distillation)", need_target=False)
    ref = write_parquet(combined, config.run_dir / "incoming", "unlabeled")
    return ref, [str(p) for p in sources]


def load_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def previous_ids(state: dict | None, logger) -> set[str]:
    """The ids of the unlabeled set the last successful run used (empty: never ran, or its file is gone)."""
    if not state:
        return set()
    ref = ParquetRef.model_validate(state["unlabeled"])
    if not Path(ref.path).is_file():
        logger.warning("the last run's unlabeled set %s is gone; treating every row as new", ref.path)
        return set()
    return set(pd.read_parquet(ref.path, columns=["id"])["id"].astype(str))


def save_state(path: Path, state: dict) -> None:
    """Atomic write: a crash never leaves a half-written state (a missing state only means 'distill again')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)
