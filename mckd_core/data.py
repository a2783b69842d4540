"""Data schema, loading and content-addressed Parquet artifacts (ParquetRef)."""

from __future__ import annotations

import hashlib
import os
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


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """Load Parquet / JSONL / JSON / CSV or a saved `datasets` directory; errors name the file and a fix."""
    p = Path(path)
    if not p.exists():
        raise MckdInputError(f"{what}: file not found: {p} (check data.{what} in the config)")
    try:
        if p.is_dir():
            import datasets

            loaded = datasets.load_from_disk(str(p))
            if isinstance(loaded, datasets.DatasetDict):
                raise MckdInputError(f"{what}: {p} is a DatasetDict with splits {list(loaded)}; point at one split's folder")
            return loaded.to_pandas()
        suffix = p.suffix.lower()
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(p, lines=True, dtype=False)
        if suffix == ".json":
            return pd.read_json(p, dtype=False)
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except MckdInputError:
        raise
    except Exception as exc:  # unreadable file: say which and why
        raise MckdInputError(f"{what}: cannot read {p}: {type(exc).__name__}: {exc}") from None
    raise MckdInputError(f"{what}: unsupported file type {p.suffix!r} for {p}; use .parquet, .jsonl, .json, .csv or a datasets dir")


def normalize_examples(df: pd.DataFrame, what: str, need_target: bool, limit: int | None = None) -> pd.DataFrame:
    """Check the (id, input, target) schema; add content-hash ids when missing. Extra columns are kept."""
    if len(df) == 0:
        raise MckdInputError(f"{what}: the set is empty; give at least one row")
    if "input" not in df.columns:
        raise MckdInputError(f"{what}: missing column 'input' (found: {', '.join(map(str, df.columns)) or 'none'}); rename your text column to 'input'")
    if need_target and "target" not in df.columns:
        raise MckdInputError(f"{what}: missing column 'target' (found: {', '.join(map(str, df.columns))}); gold sets need a 'target' column")
    df = df.copy()
    bad_input = df["input"].isna() | (df["input"].astype(str).str.strip() == "")
    if bad_input.any():
        row = int(bad_input.to_numpy().nonzero()[0][0])
        raise MckdInputError(f"{what}: row {row}: field 'input' is empty; remove the row or fill it in")
    df["input"] = df["input"].astype(str)
    if "id" not in df.columns:
        df.insert(0, "id", df["input"].map(content_id))
    df["id"] = df["id"].astype(str)
    dupes = df["id"][df["id"].duplicated()]
    if len(dupes):
        raise MckdInputError(f"{what}: duplicate id {dupes.iloc[0]!r} ({len(dupes)} duplicate row(s)); ids must be unique (drop duplicate inputs or give explicit ids)")
    if "target" not in df.columns:
        df["target"] = None
    elif need_target and df["target"].isna().any():
        row = int(df["target"].isna().to_numpy().nonzero()[0][0])
        raise MckdInputError(f"{what}: row {row} (id {df['id'].iloc[row]!r}): field 'target' is empty in a gold set")
    df["target"] = df["target"].where(df["target"].notna(), None)
    if limit is not None:
        df = df.iloc[:limit]
    return df.reset_index(drop=True)


def check_targets(df: pd.DataFrame, what: str, fmt) -> None:
    """Every gold target must be valid for the task format."""
    for row, (rid, inp, tgt) in enumerate(zip(df["id"], df["input"], df["target"])):
        if tgt is None:
            continue
        error = fmt.target_error(inp, tgt)
        if error:
            raise MckdInputError(f"{what}: row {row} (id {rid!r}): field 'target' is not a valid {fmt.name} target: {error}")


def check_disjoint(sets: dict[str, pd.DataFrame]) -> None:
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = set(sets[a]["id"]) & set(sets[b]["id"])
            if shared:
                example = sorted(shared)[0]
                raise MckdInputError(f"ids overlap between {a} and {b} ({len(shared)} shared, e.g. {example!r}); the sets must be disjoint")


def label_frame(examples: pd.DataFrame, labels: list, raws: list, valids: list, errors: list, source: str, stage: int) -> pd.DataFrame:
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


def sample_sets(pool: pd.DataFrame, test: pd.DataFrame, n_labeled: int, n_unlabeled: int, n_test: int, seed: int,
                max_words: int | None = None, dev: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Seeded, disjoint L / U / T samples (plus the dev set when given); U keeps its gold targets for diagnostics."""
    pool = within_words(pool, max_words).sample(frac=1.0, random_state=seed)
    # Distinct inputs, so L and U never share a sentence under different ids.
    pool = pool.drop_duplicates("input")
    if len(pool) < n_labeled + n_unlabeled:
        raise MckdInputError(f"only {len(pool)} pool sentences for {n_labeled} labeled + {n_unlabeled} unlabeled; lower the counts")
    test = within_words(test, max_words)
    sets = {
        "labeled": pool.iloc[:n_labeled],
        "unlabeled": pool.iloc[n_labeled:n_labeled + n_unlabeled],
        "test": test.sample(n=min(n_test, len(test)), random_state=seed),
    }
    if dev is not None:
        sets["dev"] = within_words(dev, max_words)
    return {name: df.reset_index(drop=True) for name, df in sets.items()}


def write_sets(sets: dict[str, pd.DataFrame], out_dir: str | Path) -> dict[str, str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in sets.items():
        paths[name] = str(out / f"{name}.parquet")
        df.to_parquet(paths[name], index=False)
    return paths
