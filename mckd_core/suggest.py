"""Which rows of U to label next: ranked by the run's own disagreement, kept diverse, written for an annotator.

A finished run labeled every row of U several times: the teacher (Y_0), each stage's students (Y_1 .. Y_{S-1}) and
the final student, with how sure it is (report.json `files`). Rows whose labels keep changing, rows the teacher wrote
invalid or had to repair, and rows the final student is unsure of are where a gold label teaches the most. The
labeled rows come back with `read_labeled` (a Label Studio export, JSONL or CSV) and join L (`merge_labeled`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .data import normalize_examples, normalized_input, read_table
from .errors import MckdInputError
from .formats import get_format

#: Token Jaccard similarity at or above which two inputs count as near-duplicates.
NEAR_DUPLICATE = 0.8
#: The Label Studio control names the written labeling config and tasks use.
LS_FROM, LS_TO = "label", "text"


@dataclass
class RunLabels:
    """What `suggest` reads of a finished run: its task format, L and T (never suggested), and U's labelings."""

    task: str
    run_name: str
    labeled: pd.DataFrame
    test: pd.DataFrame | None
    labelings: dict[str, pd.DataFrame]  # name ("teacher", "stage-1", ..., "final") -> label rows of U, in run order
    demos: Path | None = None  # the teacher's demo pool (files.demos; None for a run from before data.demos)


@dataclass
class Suggestion:
    id: str
    input: str
    label: str | None  # the current best label: the pre-annotation
    label_from: str | None  # which labeling it comes from
    score: float
    why: str
    parts: dict = field(default_factory=dict)  # the score's terms


def load_run(run_dir: str | Path) -> RunLabels:
    """A finished run's sets and labelings of U, from the paths its report.json `files` names."""
    run_dir = Path(run_dir)
    path = run_dir / "report.json"
    if not path.is_file():
        raise MckdInputError(f"{path} not found; give a finished mckd run dir (it holds report.json)")
    report = json.loads(path.read_text())
    files = report.get("files") or {}
    if not files.get("labels_of_unlabeled"):
        raise MckdInputError(
            f"{path}: no `files` entry (a run from before `mckd suggest`); run `mckd run` on the same config again "
            "(cached steps are reused) to write it"
        )

    def table(where: str, what: str) -> pd.DataFrame:
        p = run_dir / where  # relative paths are the run dir's; an absolute one stays as it is
        if not p.is_file():
            raise MckdInputError(f"{path}: files.{what}: {p} not found; was the run dir moved or cleaned? re-run it")
        return pd.read_parquet(p)

    labelings = {name: table(p, f"labels_of_unlabeled.{name}") for name, p in files["labels_of_unlabeled"].items()}
    return RunLabels(
        task=_format_ref(report["config"]["data"], path),
        run_name=report["config"].get("run_name", run_dir.name),
        labeled=table(files["labeled"], "labeled"),
        test=table(files["test"], "test") if files.get("test") else None,
        labelings=labelings,
        demos=(run_dir / files["demos"]).resolve() if files.get("demos") else None,
    )


def _format_ref(data: dict, report: Path) -> str:
    """The run's task format (with its data.schema), as its config names it."""
    from pydantic import ValidationError

    from .config import DataConfig

    try:
        return DataConfig.model_validate(data).format_ref
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MckdInputError(
            f"{report}: config.data.{'.'.join(map(str, first['loc']))}: {first['msg']}; the run's task format cannot "
            "be loaded here (a moved schema file or a plugin not installed)"
        ) from None


def rank(run: RunLabels, exclude: list[pd.DataFrame] = ()) -> list[Suggestion]:
    """Every row of U not in L, T or `exclude` (by id or normalised input), highest score first (ties: U's order).

    score = label changes across the labelings in run order (each change counts 1 - the format's F1 of one label
    against the other, so a partial change counts less) + 1 where the teacher's output was invalid, 0.5 where it was
    repaired + (1 - the final student's mean token probability) where it says how sure it was."""
    fmt = get_format(run.task)
    names = list(run.labelings)
    frames = {name: df.set_index("id") for name, df in run.labelings.items()}
    base = run.labelings[names[0]]
    taken = [run.labeled] + ([run.test] if run.test is not None else []) + list(exclude)
    taken_ids = {str(i) for df in taken for i in df["id"]}
    taken_inputs = {normalized_input(x) for df in taken for x in df["input"]}
    out = []
    for rid, text in zip(base["id"], base["input"]):
        if str(rid) in taken_ids or normalized_input(text) in taken_inputs:
            continue
        rows = {name: frames[name].loc[rid] for name in names if rid in frames[name].index}
        out.append(_score_row(fmt, str(rid), text, rows))
    order = sorted(range(len(out)), key=lambda k: -out[k].score)  # stable: ties keep U's order
    return [out[k] for k in order]


def _score_row(fmt, rid: str, text: str, rows: dict[str, pd.Series]) -> Suggestion:
    labels = [(name, row["label"] if _valid(row) else None) for name, row in rows.items()]
    seen = [(name, label) for name, label in labels if label is not None]
    changes, changed_at = 0.0, []
    for (_, a), (name, b) in zip(seen, seen[1:]):
        distance = _distance(fmt, text, a, b)
        if distance > 0:
            changes += distance
            changed_at.append(name)
    distinct = len({label for _, label in seen})
    why, parts = [], {"changes": round(changes, 4), "distinct": distinct}
    if changed_at:
        why.append(
            f"its label changed {len(changed_at)} time{'s' * (len(changed_at) > 1)} ({distinct} distinct labels; "
            f"at {', '.join(changed_at)})"
        )
    teacher = rows.get("teacher")
    teacher_term = 0.0
    if teacher is not None and not _valid(teacher):
        teacher_term = 1.0
        why.append(f"the teacher's output was invalid ({teacher.get('error') or 'no label'})")
    elif teacher is not None and teacher.get("error") == "repaired":
        teacher_term = 0.5
        why.append("the teacher's output had to be repaired")
    parts["teacher"] = teacher_term
    final = rows.get("final")
    unsure = 0.0
    if final is not None and "logprob" in final.index and _number(final["logprob"]) is not None:
        probability = math.exp(_number(final["logprob"]))
        unsure = 1.0 - probability
        parts["final_token_probability"] = round(probability, 4)
        why.append(f"the final student's mean token probability is {probability:.2f}")
    invalid = [name for name, label in labels if label is None and name != "teacher"]
    if invalid:
        why.append(f"no valid label from {', '.join(invalid)}")
    best = next(((name, label) for name, label in reversed(labels) if label is not None), (None, None))
    score = changes + teacher_term + unsure
    return Suggestion(
        rid, text, best[1], best[0], round(score, 4), "; ".join(why) or "its labels agree throughout", parts
    )


def _valid(row: pd.Series) -> bool:
    label = row.get("label")
    return bool(row.get("valid")) and isinstance(label, str)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _distance(fmt, text: str, a: str, b: str) -> float:
    """How far label `b` is from label `a`: 1 - the format's F1 of b against a (0 for equal labels; 1 where the
    metric cannot read them)."""
    if a == b:
        return 0.0
    try:
        f1 = fmt.metrics([text], [a], [b])["f1"]
    except Exception:  # a plugin metric that cannot score this pair: a plain change
        return 1.0
    return max(0.0, min(1.0, 1.0 - f1 / 100.0))


def tokens(text: str) -> frozenset[str]:
    return frozenset(normalized_input(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def pick(
    ranked: list[Suggestion], n: int, labeled: pd.DataFrame, threshold: float = NEAR_DUPLICATE
) -> list[Suggestion]:
    """The first `n` of `ranked` (best first) that repeat no picked row's normalised input, and whose words are not a
    near-duplicate (token Jaccard >= `threshold`) of a picked row's or an L row's."""
    known = [tokens(x) for x in labeled["input"]]
    seen_inputs: set[str] = set()
    picked = []
    for s in ranked:
        if len(picked) >= n:
            break
        key, words = normalized_input(s.input), tokens(s.input)
        if key in seen_inputs or any(jaccard(words, other) >= threshold for other in known):
            continue
        picked.append(s)
        seen_inputs.add(key)
        known.append(words)
    return picked


def suggest(run_dir: str | Path, n: int = 50, exclude: list[str | Path] = ()) -> tuple[RunLabels, list[Suggestion]]:
    """The `n` rows of the run's U a gold label would help most (`rank`, then `pick`); `exclude`: more labeled files
    whose rows are not suggested (L after a merge-labels)."""
    if n < 1:
        raise MckdInputError(f"--n {n}: ask for at least 1 row")
    run = load_run(run_dir)
    extra = [normalize_examples(read_table(p, "--exclude"), str(p), need_target=False) for p in exclude]
    labeled = pd.concat([run.labeled[["id", "input"]], *[df[["id", "input"]] for df in extra]], ignore_index=True)
    return run, pick(rank(run, extra), n, labeled)


# ---- writing suggestions --------------------------------------------------------------------------------------


def as_frame(suggestions: list[Suggestion]) -> pd.DataFrame:
    """One row per suggestion: id, input, label (the pre-annotation; edit it into the gold label), label_from, score,
    why."""
    return pd.DataFrame(
        [
            {"id": s.id, "input": s.input, "label": s.label, "label_from": s.label_from, "score": s.score, "why": s.why}
            for s in suggestions
        ],
        columns=["id", "input", "label", "label_from", "score", "why"],
    )


def write_suggestions(suggestions: list[Suggestion], out: str | Path) -> Path:
    """JSONL (.jsonl) or CSV (.csv) by the file's extension."""
    out = Path(out)
    df = as_frame(suggestions)
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".ndjson"):
        df.to_json(out, orient="records", lines=True, force_ascii=False)
    elif suffix == ".csv":
        df.to_csv(out, index=False)
    else:
        raise MckdInputError(f"--out {out}: unsupported extension {out.suffix!r}; use .jsonl or .csv")
    return out


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of the whitespace-separated words of `text`."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def _slot_result(fmt, text: str, label: str) -> list[dict]:
    from .formats.slots import chunks

    spans = word_spans(text)
    result = []
    for k, (start, end, kind) in enumerate(chunks(fmt.tags(text, label))):
        a, b = spans[start][0], spans[end - 1][1]
        result.append(
            {
                "id": f"s{k}",
                "from_name": LS_FROM,
                "to_name": LS_TO,
                "type": "labels",
                "value": {"start": a, "end": b, "text": text[a:b], "labels": [kind]},
            }
        )
    return result


def is_slots(task: str) -> bool:
    return get_format(task).name == "slots"


def label_studio_tasks(run: RunLabels, suggestions: list[Suggestion]) -> list[dict]:
    """Label Studio task import JSON: `data` (id, text, why) and `predictions` with the pre-annotation: span `labels`
    over the text for slot filling, a `textarea` holding the label text for every other format."""
    fmt, slots = get_format(run.task), is_slots(run.task)
    tasks = []
    for s in suggestions:
        if s.label is None:
            result = []
        elif slots:
            result = _slot_result(fmt, s.input, s.label)
        else:
            result = [
                {"id": "t0", "from_name": LS_FROM, "to_name": LS_TO, "type": "textarea", "value": {"text": [s.label]}}
            ]
        prediction = {"model_version": f"mckd {run.run_name} ({s.label_from or 'none'})", "score": s.score}
        tasks.append(
            {"data": {"id": s.id, LS_TO: s.input, "why": s.why}, "predictions": [prediction | {"result": result}]}
        )
    return tasks


def label_studio_config(run: RunLabels, suggestions: list[Suggestion]) -> str:
    """The labeling config (XML) the tasks' predictions fit: span labels of every slot type seen in L and the
    pre-annotations (slot filling), else a text area for the label."""
    why = '  <Header value="Why: $why"/>\n'
    if is_slots(run.task):
        fmt, kinds = get_format(run.task), set()
        labels = list(run.labeled["target"]) + [s.label for s in suggestions if s.label]
        inputs = list(run.labeled["input"]) + [s.input for s in suggestions if s.label]
        for text, label in zip(inputs, labels):
            from .formats.slots import chunks

            kinds |= {kind for _, _, kind in chunks(fmt.tags(text, label))}
        options = "\n".join(f'    <Label value="{_xml(kind)}"/>' for kind in sorted(kinds))
        return (
            f'<View>\n{why}  <Labels name="{LS_FROM}" toName="{LS_TO}">\n{options}\n  </Labels>\n'
            f'  <Text name="{LS_TO}" value="${LS_TO}"/>\n</View>\n'
        )
    return (
        f'<View>\n{why}  <Text name="{LS_TO}" value="${LS_TO}"/>\n'
        f'  <TextArea name="{LS_FROM}" toName="{LS_TO}" editable="true" maxSubmissions="1" rows="3"/>\n</View>\n'
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def write_label_studio(run: RunLabels, suggestions: list[Suggestion], out: str | Path) -> tuple[Path, Path]:
    """The task import JSON at `out` and its labeling config beside it (`<stem>.xml`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(label_studio_tasks(run, suggestions), indent=2, ensure_ascii=False))
    config = out.with_suffix(".xml")
    config.write_text(label_studio_config(run, suggestions))
    return out, config


# ---- reading labels back ------------------------------------------------------------------------------------


def read_labeled(path: str | Path, task: str) -> pd.DataFrame:
    """Labeled rows (id, input, target) from a Label Studio JSON export of the suggested tasks (each task's latest
    annotation that was not cancelled; tasks without one are left out) or from JSONL/CSV with id, input and a
    `target` (or `label`) column. Every target is checked with the format."""
    path = Path(path)
    fmt = get_format(task)
    if path.suffix.lower() == ".json" and _is_label_studio(path):
        rows = _from_label_studio(path, fmt)
    else:
        df = read_table(path, "--from")
        column = "target" if "target" in df.columns else "label" if "label" in df.columns else None
        if column is None or "id" not in df.columns or "input" not in df.columns:
            raise MckdInputError(
                f"--from {path}: need columns id, input and target (or label); found {list(df.columns)}"
            )
        rows = [
            {"id": str(i), "input": x, "target": None if _blank(t) else str(t), "row": k}
            for k, (i, x, t) in enumerate(zip(df["id"], df["input"], df[column]))
        ]
    for r in rows:
        if r["target"] is None:
            raise MckdInputError(
                f"--from {path}: row {r['row']} (id {r['id']!r}): field 'target' is empty; label it or remove the row"
            )
        error = fmt.target_error(r["input"], r["target"])
        if error:
            raise MckdInputError(
                f"--from {path}: row {r['row']} (id {r['id']!r}): field 'target' is not a valid {fmt.name} target: "
                f"{error}; correct the label"
            )
    return pd.DataFrame([{k: r[k] for k in ("id", "input", "target")} for r in rows], columns=["id", "input", "target"])


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _is_label_studio(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, list) and all(isinstance(t, dict) and "data" in t for t in data)


def _from_label_studio(path: Path, fmt) -> list[dict]:
    rows = []
    for k, task in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        data = task["data"]
        if "id" not in data or LS_TO not in data:
            raise MckdInputError(
                f"--from {path}: task {k}: its data lacks 'id' or '{LS_TO}'; export the project made from "
                "`mckd suggest --label-studio` tasks"
            )
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            continue  # not labeled yet
        text = str(data[LS_TO])
        result = done[-1].get("result") or []
        rows.append({"id": str(data["id"]), "input": text, "target": _label_of(fmt, text, result, path, k), "row": k})
    return rows


def _label_of(fmt, text: str, result: list[dict], path: Path, k: int) -> str | None:
    areas = [r for r in result if r.get("type") == "textarea"]
    if areas:
        values = areas[-1].get("value", {}).get("text") or []
        return str(values[-1]).strip() if values else None
    if fmt.name != "slots":
        return None if not result else _unreadable(path, k)
    from .formats.slots import bio_to_bracketed

    spans = word_spans(text)
    words = [text[a:b] for a, b in spans]
    tags = ["O"] * len(words)
    for r in sorted((r for r in result if r.get("type") == "labels"), key=lambda r: r["value"]["start"]):
        value = r["value"]
        inside = [w for w, (a, b) in enumerate(spans) if a < value["end"] and b > value["start"]]
        if not inside or not value.get("labels"):
            continue
        kind = value["labels"][0]
        tags[inside[0]] = f"B-{kind}"
        for w in inside[1:]:
            tags[w] = f"I-{kind}"
    return bio_to_bracketed(words, tags)


def _unreadable(path: Path, k: int) -> None:
    raise MckdInputError(
        f"--from {path}: task {k}: no textarea result holds a label; use the labeling config `mckd suggest` wrote"
    )


def merge_labeled(labeled: str | Path, new: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """L with the `new` labeled rows appended (ids kept). A new row whose id is already in L is an error, so a row is
    never labeled twice by accident."""
    old = read_table(labeled, "labeled")
    old = normalize_examples(old, str(labeled), need_target=True)
    new = normalize_examples(new, str(source), need_target=True)  # one-line inputs and targets, as every set
    new_dupes = new["id"][new["id"].duplicated()]
    if len(new_dupes):
        raise MckdInputError(f"--from {source}: id {new_dupes.iloc[0]!r} appears twice; keep one labeled row per id")
    shared = sorted(set(old["id"]) & set(new["id"]))
    if shared:
        raise MckdInputError(
            f"--from {source}: {len(shared)} id(s) already in {labeled} (e.g. {shared[0]!r}); remove those rows from "
            "the export, or relabel them in the labeled file itself"
        )
    return pd.concat([old, new], ignore_index=True)
