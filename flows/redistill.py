"""Scheduled re-distillation: when new unlabeled data lands in a folder, run MCKD again on the grown set.

The unlabeled set of a re-distillation is `data.unlabeled` (the seed set; set it to `watch_dir` itself to use
the folder only) plus every `.parquet` / `.jsonl` file in `watch_dir`, combined on content (`mckd_core.incoming`:
one row per distinct one-line input; a row reusing another row's id for a new input gets its content-hash id) and
written (content-addressed) to `<run dir>/incoming/`. It is compared with the set of the last successful
re-distillation (`<run dir>/redistill-state.json`, written only after a run succeeds): no input the last run did not
see → return at once; new inputs → the MCKD flow runs as a subflow on the combined set. Either way the result lists
the duplicates dropped, the ids reassigned, and the rows edited or removed since the last run. The per-row teacher
cache sends only the new rows to the teacher; students retrain.
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
from mckd_core.data import ParquetRef, normalize_examples, read_table, write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.incoming import changes, combine_sources

WATCHED_SUFFIXES = (".parquet", ".jsonl")
STATE_FILE = "redistill-state.json"


@flow(name="mckd-redistill", log_prints=True)
def redistill_flow(config: RunConfig, watch_dir: str) -> dict:
    """Re-run MCKD on `data.unlabeled` + the files in `watch_dir` when they hold rows the last run did not see."""
    logger = get_run_logger()
    run_dir = config.run_dir
    state_path = run_dir / STATE_FILE
    previous = load_state(state_path)
    last = previous_rows(previous, logger)
    combined, sources, rows = collect_unlabeled(config, watch_dir, last)
    if combined is None:
        logger.info("no new data: no rows in %s yet", watch_dir)
        return {
            "status": "no new data",
            "new_rows": 0,
            "unlabeled_rows": 0,
            "sources": sources,
            "watch_dir": str(watch_dir),
        }
    found = changes(rows, last)
    report_changes(found, logger)
    new_ids = found.pop("new_ids")
    summary = {
        "unlabeled_rows": combined.rows,
        "unlabeled": combined.path,
        "sources": sources,
        "watch_dir": str(watch_dir),
        "last_success": previous.get("finished_at") if previous else None,
        **found,
    }
    if not new_ids:
        logger.info(
            "no new data: %d unlabeled rows in %s, all used by the last successful run (%s)",
            combined.rows,
            watch_dir,
            summary["last_success"] or "none",
        )
        return {"status": "no new data", **summary}
    logger.info("%d new unlabeled rows (%d in all): distilling", len(new_ids), combined.rows)
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
    return {**report, "status": "distilled", **summary}


def report_changes(found: dict, logger) -> None:
    """One warning per kind of row that did not go in as it came (the result dict lists them)."""
    for key, what in (
        ("duplicates", "duplicate inputs dropped"),
        ("reassigned_ids", "rows whose id another row uses got their content-hash id"),
        ("edited", "rows edited since the last run"),
        ("removed", "rows of the last run removed"),
    ):
        if found[key]["count"]:
            logger.warning("%d %s, e.g. %s", found[key]["count"], what, found[key]["rows"][0])


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


def collect_unlabeled(config: RunConfig, watch_dir: str | Path, last: dict[str, str] | None = None):
    """data.unlabeled + every watched file → one validated Parquet of distinct inputs under `<run dir>/incoming/`
    (None when there is no row at all yet), the source paths, and the `Combined` rows (what was dropped or renamed).
    `last`: id → input of the last distilled set, whose rows keep their ids."""
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
        frames.append((str(path), df))
    if not frames:
        return None, [str(p) for p in sources], None
    found = combine_sources(frames, last)
    combined = normalize_examples(found.frame, "unlabeled (re-distillation)", need_target=False)
    ref = write_parquet(combined, config.run_dir / "incoming", "unlabeled")
    return ref, [str(p) for p in sources], found


def load_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def previous_rows(state: dict | None, logger) -> dict[str, str] | None:
    """id → input of the unlabeled set the last successful run used (None: never ran, or its file is gone)."""
    if not state:
        return None
    ref = ParquetRef.model_validate(state["unlabeled"])
    if not Path(ref.path).is_file():
        logger.warning("the last run's unlabeled set %s is gone; treating every row as new", ref.path)
        return None
    rows = pd.read_parquet(ref.path, columns=["id", "input"])
    return dict(zip(rows["id"].astype(str), rows["input"].astype(str)))


def save_state(path: Path, state: dict) -> None:
    """Atomic write: a crash never leaves a half-written state (a missing state only means 'distill again')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)
