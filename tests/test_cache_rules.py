"""Re-runs reuse exactly what is still valid (issue #26): keys follow content and code, not where a run lives; a
deleted run dir is recomputed, the teacher's rows coming back from its SQLite cache."""

from __future__ import annotations

import importlib
import shutil
import sys

from tests_support import final_states
from toy_data import toy_config

from flows import mckd_flow
from mckd_core.config import parse_config

# One stage (vanilla KD) and an sft baseline: every kind of node (annotate, partition, train, evaluate, score) runs.
SMALL = {"stages": {"num_stages": 1, "partitions": 2}, "student": {"epochs": 2}, "baselines": ["sft"]}


def _run(tmp_path, tiny_models, runs_root, name="toy", **overrides):
    cfg = parse_config(
        toy_config(tmp_path, tiny_models, runs_root=str(runs_root), run_name=name, **{**SMALL, **overrides})
    )
    state = mckd_flow(cfg, return_state=True)
    return state.result(), final_states(state)


def _not_cached(states: dict) -> dict:
    return {node: s for node, s in states.items() if node != "report" and set(s) != {"Cached"}}


def test_moving_the_runs_root_or_renaming_the_run_keeps_every_node_cached(tmp_path, tiny_models):
    first, _ = _run(tmp_path, tiny_models, tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")  # the whole runs root moves: its cache records with it
    moved, states = _run(tmp_path, tiny_models, tmp_path / "b")
    assert _not_cached(states) == {}, states
    assert moved["final_student"]["dir"] == str(tmp_path / "b" / "toy" / "final" / "student")  # found in its new place
    assert moved["final_student"]["test"] == first["final_student"]["test"]

    shutil.move(tmp_path / "b" / "toy", tmp_path / "b" / "renamed")
    renamed, states = _run(tmp_path, tiny_models, tmp_path / "b", name="renamed")
    assert _not_cached(states) == {}, states
    assert renamed["final_student"]["dir"] == str(tmp_path / "b" / "renamed" / "final" / "student")


def test_a_deleted_run_dir_is_recomputed_with_the_teachers_rows_from_its_cache(tmp_path, tiny_models, caplog):
    _run(tmp_path, tiny_models, tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / "toy")  # the run's files go; .prefect-results and the teacher cache stay
    caplog.clear()
    report, states = _run(tmp_path, tiny_models, tmp_path / "runs")
    assert set(states["annotate"]) == {"Completed"} and set(states["train-student"]) == {"Completed"}, states
    teacher_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher on ")]
    assert teacher_lines and all("(0 sent," in line for line in teacher_lines), teacher_lines
    assert (tmp_path / "runs" / "toy" / "final" / "student" / "metrics.json").is_file()
    assert report["counts"]["teacher_valid"] + report["counts"]["teacher_invalid"] == report["counts"]["unlabeled"]


PLUGIN = """
from mckd_core.formats import register_format
from mckd_core.formats.text import TextFormat


class EditedText(TextFormat):
    name = "edited-text"

    def metrics(self, inputs, golds, preds):
        return {**super().metrics(inputs, golds, preds), "version": VERSION}


VERSION = VERSION_VALUE
register_format(EditedText())
"""


def test_an_edited_format_metric_rescores_and_retrains_nothing_that_does_not_use_it(tmp_path, tiny_models, monkeypatch):
    """Students that do not select on dev never run the metric: a new metric re-scores, every student stays."""
    plugin = tmp_path / "plugin" / "edited_text_format.py"
    plugin.parent.mkdir()
    plugin.write_text(PLUGIN.replace("VERSION_VALUE", "1"))
    monkeypatch.syspath_prepend(str(plugin.parent))
    from mckd_core.formats import base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only
    importlib.import_module("edited_text_format")
    # In this process (cpu_students: 1), where the format registered itself.
    overrides = {
        "data": {"task": "edited-text"},
        "student": {"epochs": 2, "select_on_dev": False},
        "stages": {"num_stages": 1, "partitions": 2, "cpu_students": 1},
        "baselines": [],  # sft selects on dev, so the metric picks its epoch: it would rightly train again
    }
    first, _ = _run(tmp_path, tiny_models, tmp_path / "runs", **overrides)
    assert first["final_student"]["test"]["f1"] is not None

    plugin.write_text(PLUGIN.replace("VERSION_VALUE", "2"))  # the metric's code changes
    importlib.reload(sys.modules["edited_text_format"])
    _, states = _run(tmp_path, tiny_models, tmp_path / "runs", **overrides)
    assert set(states["train-student"]) == {"Cached"} and set(states["partition"]) == {"Cached"}, states
    assert "Completed" in states["evaluate-student"], states  # scored again with the new metric


def test_a_pruned_run_still_predicts_and_a_re_run_retrains_only_the_pruned_students(tmp_path, tiny_models):
    from mckd_core.prune import prune

    first, _ = _run(tmp_path, tiny_models, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "toy"
    pruned = prune(run_dir)
    assert pruned.students and pruned.bytes > 0
    assert (run_dir / "deliverable" / "config.json").is_file() and list((run_dir / "deliverable").glob("*.safetensors"))

    again, states = _run(tmp_path, tiny_models, tmp_path / "runs")
    # Every pruned student trains again (the cache checks weights on disk); the deliverable's comes from the cache.
    assert states["train-student"].count("Completed") == len(pruned.students), states
    assert states["train-student"].count("Cached") == len(states["train-student"]) - len(pruned.students)
    assert set(states["annotate"]) == {"Cached"}
    assert again["deliverable"]["name"] == first["deliverable"]["name"]
    assert prune(run_dir, dry_run=True).bytes == pruned.bytes  # the re-run wrote them back
