"""The `mckd` CLI: clean one-line errors for bad input, eval/report/data commands."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_bad_config_is_one_error_line_exit_2(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data:\n  labeled: l.jsonl\n  unlabeled: u.jsonl\nstages:\n  partitions: 1\n")
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert "stages.partitions" in result.output and "greater than or equal to 2" in result.output


def test_missing_data_file_fails_before_any_model_loads(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"runs_root: {tmp_path}/runs\ndata:\n  labeled: {tmp_path}/nope.jsonl\n  unlabeled: {tmp_path}/u.jsonl\n"
    )
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert "labeled: file not found" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["..", ".", ".hidden"])
def test_run_name_outside_the_runs_root_is_refused(tmp_path, name):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"runs_root: {tmp_path}/runs\ndata:\n  labeled: {tmp_path}/l.jsonl\n  unlabeled: {tmp_path}/u.jsonl\n"
    )
    result = runner.invoke(app, ["run", str(cfg), "--set", f"run_name={name}"])
    assert result.exit_code == 2
    assert _unwrapped(f"run_name: Value error, {name!r} is not a folder name") in _unwrapped(result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # nothing written beside or inside the runs root


def test_malformed_jsonl_names_the_file_and_line(tmp_path):
    (tmp_path / "l.jsonl").write_text(
        '{"input": "from boston", "target": "from boston"}\n{"input": "to denver", "target": nul}\n'
    )
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"runs_root: {tmp_path}/runs\ndata:\n  task: text\n  labeled: {tmp_path}/l.jsonl\n  unlabeled: "
        f"{tmp_path}/u.jsonl\n"
    )
    result = runner.invoke(app, ["run", str(cfg)])
    assert result.exit_code == 2
    assert _unwrapped(
        f"labeled: {tmp_path}/l.jsonl line 2: invalid JSON (Expecting value at column 34); fix or remove that line"
    ) in _unwrapped(result.output)


def _unwrapped(text: str) -> str:
    """`text` without whitespace: the error console wraps long lines (mid-path, too) at its width."""
    return "".join(text.split())


def test_eval_prints_json_metrics(tmp_path):
    gold = pd.DataFrame(
        {
            "id": ["1", "2"],
            "input": ["from boston", "to dallas"],
            "target": ["from [fromloc.city_name boston]", "to [toloc.city_name dallas]"],
        }
    )
    pred = pd.DataFrame({"id": ["2", "1"], "label": ["to [toloc.city_name dallas]", "from boston"]})
    gold.to_json(tmp_path / "gold.jsonl", orient="records", lines=True)
    pred.to_json(tmp_path / "pred.jsonl", orient="records", lines=True)
    result = runner.invoke(
        app, ["eval", "--task", "slots", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["precision"] == 100.0 and metrics["recall"] == 50.0 and metrics["exact_match"] == 50.0


def test_eval_names_missing_predictions(tmp_path):
    pd.DataFrame({"id": ["1"], "input": ["a"], "target": ["a"]}).to_json(
        tmp_path / "g.jsonl", orient="records", lines=True
    )
    pd.DataFrame({"id": ["9"], "label": ["a"]}).to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    result = runner.invoke(
        app, ["eval", "--task", "text", "--gold", str(tmp_path / "g.jsonl"), "--pred", str(tmp_path / "p.jsonl")]
    )
    assert result.exit_code == 2 and "1 gold ids have no prediction" in result.output


def test_data_atis_writes_disjoint_sets(tmp_path):
    result = runner.invoke(
        app, ["data", "atis", "--out", str(tmp_path), "--labeled", "5", "--unlabeled", "7", "--test", "3"]
    )
    assert result.exit_code == 0, result.output
    sets = {n: pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("labeled", "unlabeled", "test")}
    assert [len(sets[n]) for n in ("labeled", "unlabeled", "test")] == [5, 7, 3]
    assert set(sets["labeled"]["input"]).isdisjoint(sets["unlabeled"]["input"])


def test_report_of_missing_run_dir(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "report.json" in result.output


def test_data_craft_samples_disjoint_sets(tmp_path):
    import os
    from pathlib import Path

    import pytest

    craft = Path(os.environ.get("MCKD_CRAFT_DIR", Path(__file__).resolve().parents[2] / "shared/data/craft"))
    if not (craft / "structural-annotation").is_dir():
        pytest.skip(f"CRAFT not found at {craft} (set MCKD_CRAFT_DIR)")
    result = runner.invoke(
        app,
        [
            "data",
            "craft",
            "--source",
            str(craft),
            "--out",
            str(tmp_path),
            "--labeled",
            "10",
            "--unlabeled",
            "20",
            "--test",
            "5",
            "--max-words",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    sets = {n: pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("labeled", "unlabeled", "test", "dev")}
    assert [len(sets[n]) for n in ("labeled", "unlabeled", "test")] == [10, 20, 5]
    assert (sets["dev"]["n_words"] <= 12).all() and set(sets["labeled"]["id"]).isdisjoint(sets["unlabeled"]["id"])


def test_predict_takes_a_run_dir_and_uses_its_deliverable(tmp_path, tiny_models):
    """`mckd predict RUN_DIR` labels with the student `RUN_DIR/deliverable` points to; a model dir still works."""
    import shutil

    from mckd_core.report import point_to_deliverable

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_models["t5"], run_dir / "baselines" / "sft")
    (run_dir / "report.json").write_text("{}")
    point_to_deliverable(run_dir, run_dir / "baselines" / "sft")
    pd.DataFrame({"input": ["cat"]}).to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    for target in (run_dir, run_dir / "baselines" / "sft"):
        result = runner.invoke(app, ["predict", str(target), "--input", str(tmp_path / "new.jsonl"), "--task", "text"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.splitlines()[-1])["input"] == "cat"
        assert (f"using{run_dir / 'deliverable'}" in _unwrapped(result.output)) == (target == run_dir)
    result = runner.invoke(app, ["predict", str(tmp_path), "--input", str(tmp_path / "new.jsonl")])
    assert result.exit_code == 2 and "isneitheratrainedmodeldir" in _unwrapped(result.output)


def test_predict_generates_up_to_the_runs_max_target_tokens(tmp_path, tiny_models, monkeypatch):
    """Long targets (constituency trees) are not cut at 128 tokens: the run's student.max_target_tokens applies."""
    import shutil

    from mckd_core import student

    asked = []
    monkeypatch.setattr(
        student,
        "predict",
        lambda model_dir, inputs, batch_size, max_new_tokens: asked.append(max_new_tokens) or ["x"] * len(inputs),
    )
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_models["t5"], run_dir / "final" / "student")
    (run_dir / "report.json").write_text(json.dumps({"config": {"student": {"max_target_tokens": 300}}}))
    pd.DataFrame({"input": ["cat"]}).to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    for target in (run_dir, run_dir / "final" / "student"):
        assert runner.invoke(app, ["predict", str(target), "--input", str(tmp_path / "new.jsonl")]).exit_code == 0
    (run_dir / "final" / "student" / "metrics.json").write_text(json.dumps({"task": "text", "max_target_tokens": 512}))
    runner.invoke(app, ["predict", str(run_dir), "--input", str(tmp_path / "new.jsonl")])
    runner.invoke(app, ["predict", str(run_dir), "--input", str(tmp_path / "new.jsonl"), "--max-new-tokens", "40"])
    assert asked == [300, 300, 512, 40]


def test_a_trained_student_records_its_max_target_tokens(tmp_path, tiny_models):
    from mckd_core.config import StudentConfig
    from mckd_core.student import TrainSpec, train

    metrics = train(
        TrainSpec(
            model=tiny_models["t5"],
            out_dir=str(tmp_path / "s"),
            task="text",
            train_inputs=["cat"],
            train_targets=["dog"],
            student=StudentConfig(epochs=1, max_target_tokens=24, select_on_dev=False),
        )
    )
    assert metrics["max_target_tokens"] == 24


def test_push_uploads_the_deliverable_folder_to_the_repo(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from mckd_core.report import point_to_deliverable

    student = tmp_path / "baselines" / "sft"
    student.mkdir(parents=True)
    (student / "config.json").write_text("{}")
    point_to_deliverable(tmp_path, student)
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or "u")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    monkeypatch.setenv("MY_TOKEN", "hf_x")
    result = runner.invoke(app, ["push", str(tmp_path), "--repo", "org/toy", "--private", "--token-env", "MY_TOKEN"])
    assert result.exit_code == 0, result.output
    (create, upload) = calls
    assert create == ("create", "org/toy", {"repo_type": "model", "private": True, "exist_ok": True})
    assert upload[1]["repo_id"] == "org/toy" and upload[1]["folder_path"] == student.resolve()


def test_push_without_a_deliverable_is_one_error_line(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: pytest.fail("nothing to upload"))
    result = runner.invoke(app, ["push", str(tmp_path), "--repo", "org/toy"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # rich wraps the line at the console's width
    assert text.startswith("error:") and "no deliverable/ with a trained model" in text and "Traceback" not in text


def _no_generation_weights(monkeypatch):
    """Any load of a generation model's weights fails the test."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a generation model was loaded")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSeq2SeqLM):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


def _toy_yaml(tmp_path, tiny_models, **overrides) -> str:
    import yaml
    from toy_data import toy_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(toy_config(tmp_path, tiny_models, **overrides)))
    return str(path)


def test_estimate_counts_the_teachers_prompt_tokens_without_loading_a_generation_model(
    tmp_path, tiny_models, monkeypatch
):
    from mckd_core.config import load_config

    _no_generation_weights(monkeypatch)
    config = _toy_yaml(tmp_path, tiny_models)
    result = runner.invoke(app, ["run", config, "--estimate"])
    assert result.exit_code == 0, result.output
    counted = json.loads(result.output[result.output.index("{") :])
    # The toy run's teacher labels U (12 rows), T (4) and, for first_labels: auto, the held-out dev row; nothing is
    # cached yet.
    assert {name: s["to_send"] for name, s in counted["sets"].items()} == {"unlabeled": 12, "test": 4, "dev": 1}
    cfg = load_config(config)
    # Each toy prompt (two demos and the input, as text) is tens of ByT5 tokens; test_flow_tiny checks the count
    # against what the teacher then reported.
    assert 17 * 20 < counted["prompt_tokens"] < 17 * 200
    assert counted["completion_tokens_max"] == 17 * cfg.teacher.max_new_tokens
    assert "teacher estimate: 17 rows to send" in result.output
    assert not (cfg.run_dir.parent / ".teacher-cache.sqlite").exists()  # it asked nothing


def test_a_prompt_budget_below_the_estimate_stops_the_run_before_the_teacher_is_asked(
    tmp_path, tiny_models, monkeypatch
):
    _no_generation_weights(monkeypatch)
    monkeypatch.setattr("tasks.annotate.annotate_rows", lambda *a, **k: pytest.fail("the teacher was asked"))
    config = _toy_yaml(tmp_path, tiny_models)
    estimated = runner.invoke(app, ["run", config, "--estimate", "--set", "teacher.max_prompt_tokens=50"])
    assert estimated.exit_code == 0, estimated.output  # --estimate says what a run would do, and runs nothing
    assert "a run stops before the teacher: teacher.max_prompt_tokens=50: the teacher would be sent" in " ".join(
        estimated.output.split()
    )
    result = runner.invoke(app, ["run", config, "--set", "teacher.max_prompt_tokens=50"])
    assert result.exit_code == 2, result.output
    assert "teacher.max_prompt_tokens=50: the teacher would be sent" in result.output
    said = " ".join(result.output.split())
    assert "for 17 rows" in said
    # It says where the 17 rows come from, the dev rows too, and what sends fewer of each.
    assert "(12 from data.unlabeled; 4 from data.test; 1 dev rows: fewer with data.dev" in said
    assert "none with stages.first_labels: teacher)" in said
