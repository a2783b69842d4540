"""Re-distillation's unlabeled set, decided on content: the source files combined into one set of distinct one-line
inputs, and compared with the set the last successful re-distillation used.

Combining (sources in order; rows of the last distilled set first, so an id keeps the sentence it had):
- a row whose one-line input an earlier row already has is a duplicate: dropped and reported;
- a row whose id the last set gave another input, but whose input the last set had under an id of its own, keeps
  that id (it is the same row; its file numbers rows differently now) and is reported;
- a row whose id an earlier row uses for another input gets the content-hash id of its input (`data.input_id`,
  what a row without an id gets) and is reported: files dropped into a folder often number their rows from 0, and
  refusing them would stop every scheduled run until someone renames them.
Comparing: a row is new when its input was not in the last set (an edited row's new text is new); an id of the last
set whose input changed is reported as edited; a row of the last set whose id and input are both gone is reported as
removed (the next distillation trains without it; removing rows alone starts none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .data import input_id, one_line
from .errors import MckdInputError

#: Rows listed per category in a result (the counts are always complete).
LISTED = 20


@dataclass
class Combined:
    frame: pd.DataFrame  # id, input, target (None) and the sources' extra columns: one row per distinct input
    origin: list[tuple[str, int]]  # (file, row) of each row of `frame`
    duplicates: list[dict] = field(default_factory=list)
    reassigned: list[dict] = field(default_factory=list)


def combine_sources(sources: list[tuple[str, pd.DataFrame]], previous: dict[str, str] | None = None) -> Combined:
    """`sources`: (file name, rows with `input` and optional `id`) in order; `previous`: id → input of the last
    set."""
    previous = previous or {}
    frames, origin = [], []
    for name, df in sources:
        df = df.copy()
        empty = df["input"].isna() | (df["input"].astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0])
            raise MckdInputError(f"{name}: row {row}: field 'input' is empty; remove the row or fill it in")
        df["input"] = df["input"].astype(str).map(one_line)
        if "id" not in df.columns:
            df.insert(0, "id", None)
        df["id"] = [
            input_id(text) if rid is None or rid != rid else str(rid)  # None / NaN: no id in that row
            for rid, text in zip(df["id"], df["input"])
        ]
        frames.append(df.reset_index(drop=True))
        origin += [(name, row) for row in range(len(df))]
    rows = pd.concat(frames, ignore_index=True)
    ids, inputs = list(rows["id"]), list(rows["input"])
    last_id = {text: rid for rid, text in previous.items()}
    wanted = [
        last_id[text] if previous.get(rid, text) != text and text in last_id else rid for rid, text in zip(ids, inputs)
    ]
    # Rows exactly as the last set had them claim their id and input first.
    order = sorted(range(len(rows)), key=lambda i: (previous.get(wanted[i]) != inputs[i], i))
    by_input: dict[str, int] = {}
    by_id: dict[str, int] = {}
    kept: dict[int, str] = {}
    combined = Combined(rows, origin)
    for i in order:
        where = {"file": origin[i][0], "row": origin[i][1], "id": ids[i]}
        if inputs[i] in by_input:
            first = by_input[inputs[i]]
            combined.duplicates.append(where | {"duplicate_of": _where(origin, kept, first)})
            continue
        new_id = wanted[i]
        if new_id != ids[i] and new_id not in by_id:
            combined.reassigned.append(where | {"new_id": new_id, "why": "the last run's id of this input"})
        elif new_id in by_id:
            taken, new_id = new_id, input_id(inputs[i])
            if new_id in by_id:
                raise MckdInputError(
                    f"{where['file']} row {where['row']}: id {taken!r} is taken by {_at(origin, by_id[taken])} and "
                    f"its content id {new_id!r} by {_at(origin, by_id[new_id])}; give the row an id of its own"
                )
            combined.reassigned.append(
                where | {"new_id": new_id, "why": "id taken", "id_taken_by": _where(origin, kept, by_id[taken])}
            )
        by_input[inputs[i]], by_id[new_id], kept[i] = i, i, new_id
    keep = sorted(kept)
    frame = rows.iloc[keep].copy()
    frame["id"] = [kept[i] for i in keep]
    combined.frame, combined.origin = frame.reset_index(drop=True), [origin[i] for i in keep]
    combined.duplicates.sort(key=lambda d: (d["file"], d["row"]))
    combined.reassigned.sort(key=lambda d: (d["file"], d["row"]))
    return combined


def changes(combined: Combined, previous: dict[str, str] | None) -> dict:
    """New, edited and removed rows of `combined` against the last set (id → input; None: nothing distilled yet)."""
    previous = previous or {}
    seen_inputs = set(previous.values())
    ids, inputs = list(combined.frame["id"]), list(combined.frame["input"])
    new = [i for i, text in enumerate(inputs) if text not in seen_inputs]
    edited = [
        {
            "file": combined.origin[i][0],
            "row": combined.origin[i][1],
            "id": ids[i],
            "was": _short(previous[ids[i]]),
            "now": _short(inputs[i]),
        }
        for i in range(len(ids))
        if ids[i] in previous and previous[ids[i]] != inputs[i]
    ]
    current_ids, current_inputs = set(ids), set(inputs)
    removed = [
        {"id": rid, "input": _short(text)}
        for rid, text in previous.items()
        if rid not in current_ids and text not in current_inputs
    ]
    return {
        "new_rows": len(new),
        "new_ids": [ids[i] for i in new],
        "edited": _listing(edited),
        "removed": _listing(removed),
        "duplicates": _listing(combined.duplicates),
        "reassigned_ids": _listing(combined.reassigned),
    }


def _listing(items: list[dict]) -> dict:
    return {"count": len(items), "rows": items[:LISTED]}


def _where(origin: list[tuple[str, int]], kept: dict[int, str], i: int) -> dict:
    return {"file": origin[i][0], "row": origin[i][1], "id": kept[i]}


def _at(origin: list[tuple[str, int]], i: int) -> str:
    return f"{origin[i][0]} row {origin[i][1]}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
