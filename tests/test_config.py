import pytest

from mckd_core.config import RunConfig, load_config, parse_config
from mckd_core.errors import MckdInputError


def base(**extra):
    return {"data": {"labeled": "l.parquet", "unlabeled": "u.parquet"}, **extra}


def test_defaults_are_the_papers_stages_and_the_dev_chosen_options():
    cfg = parse_config(base())
    assert (cfg.stages.num_stages, cfg.stages.partitions, cfg.stages.redraw_partitions) == (3, 2, False)
    # chosen on dev rows (BENCHMARKS.md): the teacher prompt, and students that also learn from L's gold rows
    assert (cfg.teacher.num_demos, cfg.teacher.demo_selection, cfg.student.train_on_labeled) == (8, "bm25", True)
    assert (cfg.student.epochs, cfg.student.batch_size, cfg.student.learning_rate) == (4, 4, 1e-4)


def test_every_error_is_listed_with_its_field_path():
    with pytest.raises(MckdInputError) as info:
        parse_config(
            base(stages={"partitions": 1, "num_stages": 0}, student={"epoch": 3}, teacher={"demo_selection": "knn"})
        )
    message = str(info.value)
    assert "4 errors" in message
    for field in ("stages.partitions", "stages.num_stages", "student.epoch", "teacher.demo_selection"):
        assert field in message


def test_unknown_task_is_rejected():
    with pytest.raises(
        MckdInputError, match="data.task.*unknown task format .pos-tagging.; built-in: constituency, json"
    ):
        parse_config({"data": {"labeled": "a", "unlabeled": "b", "task": "pos-tagging"}})


def test_yaml_load_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run_name: x\ndata:\n  labeled: l.jsonl\n  unlabeled: u.jsonl\nstages:\n  num_stages: 2\n")
    cfg = load_config(path, {"stages": {"partitions": 3}})
    assert (cfg.run_name, cfg.stages.num_stages, cfg.stages.partitions) == ("x", 2, 3)


def test_missing_config_file():
    with pytest.raises(MckdInputError, match="config file not found"):
        load_config("/nonexistent/run.yaml")


def test_json_schema_is_a_typed_form():
    schema = RunConfig.model_json_schema()
    assert {"data", "teacher", "student", "stages"} <= set(schema["properties"])


@pytest.mark.parametrize(
    "baselines, stages, data, message",
    [
        (["mckd-3"], 3, {"test": "t"}, "'mckd-3' needs stages.num_stages > 3"),
        (["mckd-1"], 3, {"test": "t"}, "is vanilla KD: write vanilla-kd"),
        (["vanilla-kd"], 1, {"test": "t"}, "with num_stages=1 the final student is vanilla KD"),
        (["kd"], 3, {"test": "t"}, "is not a baseline; use sft, sft-n, vanilla-kd or mckd-<s>"),
        (["sft-n"], 3, {"test": "t"}, "needs data.sft_n_labeled"),
        (["sft"], 3, {}, "needs data.test"),
    ],
)
def test_baselines_are_checked_against_the_run(baselines, stages, data, message):
    raw = {"data": {"labeled": "l", "unlabeled": "u", **data}, "stages": {"num_stages": stages}, "baselines": baselines}
    with pytest.raises(MckdInputError, match="baselines") as info:
        parse_config(raw)
    assert message in str(info.value)


def test_paper_comparison_is_a_valid_config():
    raw = {
        "data": {"labeled": "l", "unlabeled": "u", "test": "t", "sft_n_labeled": "n"},
        "stages": {"num_stages": 3},
        "baselines": ["sft", "vanilla-kd", "mckd-2", "sft-n"],
    }
    assert parse_config(raw).baselines == ["sft", "vanilla-kd", "mckd-2", "sft-n"]


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../escape", ""])
def test_run_name_is_one_folder_under_the_runs_root(name):
    with pytest.raises(MckdInputError) as info:
        parse_config(base(run_name=name))
    assert f"run_name: Value error, {name!r} is not a folder name for <runs_root>/<run_name>" in str(info.value)
    assert "not starting with '.'" in str(info.value)


def test_run_names_with_inner_dots_are_fine():
    assert parse_config(base(run_name="atis-50.v2..b")).run_name == "atis-50.v2..b"
    assert RunConfig.model_json_schema()["properties"]["run_name"]["pattern"] == r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"


def test_ui_config_dict_with_an_escaping_run_name_writes_nothing(tmp_path):
    """The UI path: Prefect validates the form's dict against RunConfig before the flow body runs."""
    from flows import mckd_flow

    raw = {
        "run_name": "..",
        "runs_root": str(tmp_path / "runs"),
        "data": {"labeled": "l.jsonl", "unlabeled": "u.jsonl"},
    }
    state = mckd_flow(raw, return_state=True)
    assert state.is_failed()
    assert "config.run_name: Value error, '..' is not a folder name for <runs_root>/<run_name>" in state.message
    assert list(tmp_path.iterdir()) == []


# ---- issue #13: gold-aware students and their dev rows --------------------------------------------------------


@pytest.mark.parametrize(
    "data, student, field, message",
    [
        (
            {"dev_holdout": 0},
            {"train_on_labeled": True},
            "student.train_on_labeled",
            "needs dev rows no student trains on: give data.dev, or leave data.dev_holdout at null",
        ),
        (
            {"dev_holdout": 0},
            {},
            "student.train_on_labeled",  # the default: the error names the way back to the paper's recipe
            "(on by default) needs dev rows no student trains on",
        ),
        (
            {"dev": "d.jsonl", "dev_holdout": 10},
            {},
            "data.dev_holdout",
            "no rows of L are held out when data.dev is given",
        ),
    ],
)
def test_gold_aware_config_errors_are_one_line_naming_the_fields(data, student, field, message):
    with pytest.raises(MckdInputError) as info:
        parse_config(base(data={"labeled": "l", "unlabeled": "u", **data}, student=student))
    header, *errors = str(info.value).splitlines()
    assert header == "invalid config (1 error):" and len(errors) == 1
    assert field in errors[0] and message in errors[0]


def test_gold_aware_students_with_their_own_dev_set_or_slice_are_valid():
    assert parse_config(base(student={"train_on_labeled": True})).data.dev_holdout is None  # a fifth of L
    assert parse_config(base(data={"labeled": "l", "unlabeled": "u", "dev": "d"}, student={"train_on_labeled": True}))
    assert parse_config(base(student={})).student.train_on_labeled  # on by default (chosen on dev, BENCHMARKS.md)
    paper = parse_config(
        base(data={"labeled": "l", "unlabeled": "u", "dev_holdout": 0}, student={"train_on_labeled": False})
    )
    assert paper.data.dev_holdout == 0 and not paper.student.train_on_labeled
