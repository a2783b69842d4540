"""Data schema, loading and content-addressed Parquet artifacts (ParquetRef)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from .errors import MckdInputError

EXAMPLE_COLUMNS = ["id", "input", "target"]
LABEL_COLUMNS = ["label", "raw", "valid", "error", "source", "stage"]


class ParquetRef(BaseModel):
    """An immutable Parquet artifact: nodes pass these (content hash + row count), never DataFrames."""

    path: str
    sha256: str
    rows: int

    @classmethod
    def of(cls, path: str | Path) -> ParquetRef:
        """The ref of an existing Parquet file, e.g. one of a finished run's artifacts read back for analysis."""
        return cls(path=str(path), sha256=file_sha256(path), rows=pq.read_metadata(path).num_rows)

    def read(self) -> pd.DataFrame:
        return pd.read_parquet(self.path)

    def exists(self) -> bool:
        return Path(self.path).is_file() and file_sha256(self.path) == self.sha256


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet(df: pd.DataFrame, directory: str | Path, stem: str) -> ParquetRef:
    """Write `df` atomically to `<directory>/<stem>-<hash12>.parquet` (content-addressed, immutable)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{stem}-", suffix=".tmp")
    os.close(fd)
    try:
        # No timestamps in the file, so the same rows always give the same bytes and the same name.
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary files
        sha = file_sha256(tmp)
        final = directory / f"{stem}-{sha[:12]}.parquet"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ParquetRef(path=str(final), sha256=sha, rows=len(df))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def content_id(text: str) -> str:
    """Stable id for a row whose source has none."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def input_id(text: str) -> str:
    """The id of a row without one: the content hash of its one-line input (`one_line`), so the same sentence gets
    the same id however its source broke its lines."""
    return content_id(one_line(text))


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """Load Parquet / JSONL / JSON / CSV or a saved `datasets` directory; errors name the file and a fix."""
    p = Path(path)
    if not p.exists():
        where = what if what.startswith("--") else f"data.{what} in the config"  # a CLI option, or a config key
        raise MckdInputError(f"{what}: file not found: {p} (check {where})")
    try:
        if p.is_dir():
            import datasets

            loaded = datasets.load_from_disk(str(p))
            if isinstance(loaded, datasets.DatasetDict):
                raise MckdInputError(
                    f"{what}: {p} is a DatasetDict with splits {list(loaded)}; point at one split's folder"
                )
            return loaded.to_pandas()
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(p, what)
        if suffix == ".json":
            return pd.read_json(p, dtype=False)
        if suffix in (".csv", ".tsv"):
            return _read_csv(p, what, "\t" if suffix == ".tsv" else ",")
    except MckdInputError:
        raise
    except Exception as exc:  # unreadable file: say which and why
        first_line = (str(exc).strip().splitlines() or [""])[0]  # pandas' messages may end in a line break
        raise MckdInputError(f"{what}: cannot read {p}: {type(exc).__name__}: {first_line}") from None
    raise MckdInputError(
        f"{what}: unsupported file type {p.suffix!r} for {p}; use .parquet, .jsonl, .json, .csv or a datasets dir"
    )


def _read_jsonl(p: Path, what: str) -> pd.DataFrame:
    """One JSON object per line, parsed line by line so a bad line is named (pandas names only a byte position)."""
    rows = []
    with open(p, encoding="utf-8-sig") as fh:  # -sig: a byte-order mark some editors write is not JSON
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # blank lines (a trailing one, most often) hold no row
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MckdInputError(
                    f"{what}: {p} line {number}: invalid JSON ({exc.msg} at column {exc.colno}); "
                    "fix or remove that line"
                ) from None
            if not isinstance(row, dict):
                raise MckdInputError(
                    f"{what}: {p} line {number}: a JSON {type(row).__name__}, not an object; "
                    'each line must be one row like {"input": "..."}'
                )
            rows.append(row)
    return pd.DataFrame(rows)


# pandas' C parser counts CSV records (the header is record 1, a quoted field may span lines) in these messages.
_CSV_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_CSV_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


def _read_csv(p: Path, what: str, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        if fields := _CSV_FIELDS.search(str(exc)):
            expected, record, found = fields.groups()
            raise MckdInputError(
                f"{what}: {p} line {_record_line(p, int(record), sep)}: {found} fields where the header has "
                f"{expected}; quote fields that contain {sep!r}"
            ) from None
        if quote := _CSV_OPEN_QUOTE.search(str(exc)):
            raise MckdInputError(
                f"{what}: {p} line {_record_line(p, int(quote.group(1)) + 1, sep)}: a quoted field starts "
                'here and is never closed; close it (a quote inside a field is written "")'
            ) from None
        raise


def _record_line(p: Path, record: int, sep: str) -> int:
    """The file line where CSV record `record` (1-based, the header is 1) starts."""
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=sep)
        for _ in range(record - 1):
            next(reader, None)
        return reader.line_num + 1


# Line breaks (what str.splitlines splits on) and tabs, with the spaces around them.
_BREAKS = re.compile(r"\s*[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]\s*")


def one_line(text: str) -> str:
    """`text` with every run of line breaks / tabs turned into one space, stripped.

    Teacher and student prompts give the input one line (`Input: <x>`, then `Output:`) and answers are taken from
    the first line generated, so a line break inside an input or a target would move where the output starts.
    """
    return _BREAKS.sub(" ", text).strip()


def normalize_examples(df: pd.DataFrame, what: str, need_target: bool, limit: int | None = None) -> pd.DataFrame:
    """Check the (id, input, target) schema, put every input and target on one line (`one_line`), add content-hash
    ids of the inputs when missing. Extra columns are kept."""
    if len(df) == 0:
        raise MckdInputError(f"{what}: the set is empty; give at least one row")
    if "input" not in df.columns:
        raise MckdInputError(
            f"{what}: missing column 'input' (found: {', '.join(map(str, df.columns)) or 'none'}); rename your text "
            "column to 'input'"
        )
    if need_target and "target" not in df.columns:
        raise MckdInputError(
            f"{what}: missing column 'target' (found: {', '.join(map(str, df.columns))}); gold sets need a 'target' "
            "column"
        )
    df = df.copy()
    bad_input = df["input"].isna() | (df["input"].astype(str).str.strip() == "")
    if bad_input.any():
        row = int(bad_input.to_numpy().nonzero()[0][0])
        raise MckdInputError(f"{what}: row {row}: field 'input' is empty; remove the row or fill it in")
    df["input"] = df["input"].astype(str).map(one_line)
    if "id" not in df.columns:
        df.insert(0, "id", df["input"].map(input_id))
    df["id"] = df["id"].astype(str)
    dupes = df["id"][df["id"].duplicated()]
    if len(dupes):
        raise MckdInputError(
            f"{what}: duplicate id {dupes.iloc[0]!r} ({len(dupes)} duplicate row(s)); ids must be unique (drop "
            "duplicate inputs or give explicit ids)"
        )
    if "target" not in df.columns:
        df["target"] = None
    elif need_target and df["target"].isna().any():
        row = int(df["target"].isna().to_numpy().nonzero()[0][0])
        raise MckdInputError(f"{what}: row {row} (id {df['id'].iloc[row]!r}): field 'target' is empty in a gold set")
    df["target"] = (
        df["target"].where(df["target"].notna(), None).map(lambda t: one_line(t) if isinstance(t, str) else t)
    )
    if limit is not None:
        df = df.iloc[:limit]
    return df.reset_index(drop=True)


def check_targets(df: pd.DataFrame, what: str, fmt, file: str | Path | None = None) -> None:
    """Every gold target must be valid for the task format; the error names the set (and its `file`), row and id."""
    where = f"{what} ({file})" if file else what
    for row, (rid, inp, tgt) in enumerate(zip(df["id"], df["input"], df["target"])):
        if tgt is None:
            continue
        error = fmt.target_error(inp, tgt)
        if error:
            raise MckdInputError(
                f"{where}: row {row} (id {rid!r}): field 'target' is not a valid {fmt.name} target: {error}"
            )


def canonical_targets(df: pd.DataFrame, fmt) -> pd.DataFrame:
    """The rows with their targets in the format's canonical form (`canonical_target`, e.g. json's sorted compact
    object), the form students train on and the teacher sees in its demos; targets it cannot read stay as written."""
    canonical = getattr(fmt, "canonical_target", None)
    if canonical is None or df["target"].isna().all():
        return df

    def one(target):
        if target is None or (not isinstance(target, str) and pd.isna(target)):
            return None
        try:
            return canonical(target)
        except (ValueError, TypeError):  # unchecked targets (U's diagnostics) that are not valid: left as they are
            return target

    return df.assign(target=[one(t) for t in df["target"]])


def check_disjoint(sets: dict[str, pd.DataFrame]) -> None:
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = set(sets[a]["id"]) & set(sets[b]["id"])
            if shared:
                example = sorted(shared)[0]
                raise MckdInputError(
                    f"ids overlap between {a} and {b} ({len(shared)} shared, e.g. {example!r}); the sets must be "
                    "disjoint"
                )


def label_frame(
    examples: pd.DataFrame, labels: list, raws: list, valids: list, errors: list, source: str, stage: int
) -> pd.DataFrame:
    """Label rows: the example rows plus label/raw/valid/error/source/stage, one per input row."""
    if not (len(examples) == len(labels) == len(raws) == len(valids) == len(errors)):
        raise AssertionError("row conservation violated while building label rows")
    out = examples.copy()
    out["label"] = labels
    out["raw"] = raws
    out["valid"] = [bool(v) for v in valids]
    out["error"] = errors
    out["source"] = source
    out["stage"] = stage
    return out


def assert_conserved(inputs: pd.DataFrame | ParquetRef, outputs: pd.DataFrame | ParquetRef, node: str) -> None:
    """Row conservation: a node writes exactly one output row per input row, same ids."""
    a = inputs.read() if isinstance(inputs, ParquetRef) else inputs
    b = outputs.read() if isinstance(outputs, ParquetRef) else outputs
    if len(a) != len(b) or set(a["id"]) != set(b["id"]):
        raise AssertionError(f"{node}: row conservation violated ({len(a)} rows in, {len(b)} out)")


def within_words(df: pd.DataFrame, max_words: int | None) -> pd.DataFrame:
    """The rows whose input has at most `max_words` words (all rows when None)."""
    return df[df["input"].str.split().str.len() <= max_words] if max_words else df


def normalized_input(text: str) -> str:
    """An input as the split checks compare it: lowercase, whitespace collapsed ("Figure 1" is "figure  1")."""
    return " ".join(str(text).lower().split())


def shuffled_for_t(test: pd.DataFrame, seed: int, exclude: set[str]) -> tuple[pd.DataFrame, pd.Series]:
    """`test` in a seeded random order, and per row why T may not take it: "overlap" (its normalised input is in
    `exclude`), "duplicate" (an earlier row's normalised input) or "" (T may take it)."""
    shuffled = test.sample(frac=1.0, random_state=seed)
    keys = shuffled["input"].map(normalized_input)
    reason = pd.Series("", index=shuffled.index)
    reason[keys.duplicated()] = "duplicate"
    reason[keys.isin(exclude)] = "overlap"
    return shuffled, reason


def draw_test(test: pd.DataFrame, n_test: int, seed: int, exclude: set[str]) -> pd.DataFrame:
    """T: the first `n_test` rows of `test`'s seeded order (`shuffled_for_t`) that no set a model trains, selects or
    is prompted on shares (`exclude`: their normalised inputs) and that repeat no earlier row. A sentence both in T
    and in U or L ("Abstract", "Figure 1" in CRAFT) scores memory, not distillation. Where nothing is skipped, T is
    the rows `test.sample(n=n_test, random_state=seed)` gave before the rule."""
    shuffled, reason = shuffled_for_t(test, seed, exclude)
    return shuffled[reason == ""].iloc[:n_test]


def sample_sets(
    pool: pd.DataFrame,
    test: pd.DataFrame,
    n_labeled: int,
    n_unlabeled: int,
    n_test: int,
    seed: int,
    max_words: int | None = None,
    dev: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Seeded, disjoint L / U / T samples (plus the dev set when given); U keeps its gold targets for diagnostics.
    T shares no normalised input with L, U or the dev set, nor repeats one within itself (`draw_test`)."""
    pool = within_words(pool, max_words).sample(frac=1.0, random_state=seed)
    # Distinct inputs, so L and U never share a sentence under different ids.
    pool = pool.drop_duplicates("input")
    if len(pool) < n_labeled + n_unlabeled:
        raise MckdInputError(
            f"only {len(pool)} pool sentences for {n_labeled} labeled + {n_unlabeled} unlabeled; lower the counts"
        )
    sets = {"labeled": pool.iloc[:n_labeled], "unlabeled": pool.iloc[n_labeled : n_labeled + n_unlabeled]}
    if dev is not None:
        sets["dev"] = within_words(dev, max_words)
    seen = {normalized_input(text) for df in sets.values() for text in df["input"]}
    sets["test"] = draw_test(within_words(test, max_words), n_test, seed, seen)
    return {name: sets[name].reset_index(drop=True) for name in ("labeled", "unlabeled", "test", "dev") if name in sets}


def write_sets(sets: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in sets.items():
        paths[name] = str(out / f"{name}.parquet")
        df.to_parquet(paths[name], index=False)
    return paths
