"""Format plugins: found by entry point or import string in every process, listed by `mckd formats`, validated by
the run config, hashed for cache keys."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.config import RunConfig, parse_config
from mckd_core.errors import MckdInputError
from mckd_core.formats import format_names, format_source_hash, get_format

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mckd-format-example"

#: A plugin module: a format class (for the entry point) and an instance (for the import string).
PLUGIN = '''
from mckd_core.formats import Checked
from mckd_core.formats.text import TextFormat


class UpperFormat(TextFormat):
    """Answers in capitals; token-bag F1 like text."""

    name = "upper"

    def check(self, input, output):
        line = output.strip().splitlines()[0].strip() if output.strip() else ""
        return Checked(line, True) if line.isupper() else Checked(None, False, error="not in capitals")

    def target_error(self, input, target):
        return None if target.isupper() else "not in capitals"


UPPER = UpperFormat()
'''


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """`upperfmt` on sys.path, installed as a distribution whose entry point `upper` names the class."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "upperfmt.py").write_text(PLUGIN)
    dist = site / "upperfmt-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: upperfmt\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mckd.formats]\nupper = upperfmt:UpperFormat\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("upperfmt", None)


def test_an_installed_packages_entry_point_names_a_format(plugin_package):
    fmt = get_format("upper")
    assert type(fmt).__name__ == "UpperFormat"  # the entry point named the class: mckd made the instance
    assert fmt.check("x", "DOG").valid and not fmt.check("x", "dog").valid
    assert "upper" in format_names()


def test_an_import_string_names_a_format_on_the_python_path(plugin_package):
    fmt = get_format("upperfmt:UPPER")
    assert fmt.name == "upper" and fmt.target_error("x", "dog") == "not in capitals"


def test_an_unknown_format_is_one_line_naming_built_in_and_installed_ones(plugin_package):
    with pytest.raises(MckdInputError) as info:
        get_format("pos-tagging")
    message = str(info.value)
    assert "\n" not in message
    assert "built-in: constituency, json, slots, text" in message and "upper" in message
    assert "module:attribute" in message


def test_an_import_string_that_does_not_import_says_which_module(plugin_package):
    with pytest.raises(MckdInputError, match="cannot import module 'nomodule'"):
        get_format("nomodule:FMT")
    with pytest.raises(MckdInputError, match="has no attribute 'NOPE'"):
        get_format("upperfmt:NOPE")
    with pytest.raises(MckdInputError, match="is not a task format: calling it"):
        get_format("json:dumps")  # importable and callable, but no factory
    with pytest.raises(MckdInputError, match="is not a task format: it lacks name, instruction, check"):
        get_format("upperfmt:__doc__")


def test_mckd_formats_lists_built_in_and_installed_formats_with_a_line_each(plugin_package):
    result = CliRunner().invoke(app, ["formats"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 3}
    assert {"constituency", "json", "slots", "text", "upper"} <= set(lines)
    assert "[fromloc.city_name boston]" in lines["slots"]  # a description with brackets is printed, not eaten
    assert "entry point upperfmt:UpperFormat" in lines["upper"]
    assert "Answers in capitals" in lines["upper"]  # a plugin without `description`: its docstring's first line


def test_a_config_dict_names_a_plugin_by_import_string_and_by_entry_point(plugin_package):
    raw = {"data": {"task": "upperfmt:UPPER", "labeled": "l.jsonl", "unlabeled": "u.jsonl"}}
    assert RunConfig.model_validate(raw).data.format_ref == "upperfmt:UPPER"
    assert parse_config({"data": {**raw["data"], "task": "upper"}}).data.task == "upper"


def test_mckd_run_accepts_a_plugin_format_set_on_the_command_line(plugin_package, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"runs_root: {tmp_path}/runs\ndata:\n  labeled: {tmp_path}/nope.jsonl\n  unlabeled: {tmp_path}/u.jsonl\n"
    )
    result = CliRunner().invoke(app, ["run", str(cfg), "--set", "data.task=upperfmt:UPPER"])
    assert result.exit_code == 2
    # The config was accepted; what stops the run is the (missing) data, before any model loads.
    assert "labeled:filenotfound" in "".join(result.output.split()) and "task" not in result.output
    result = CliRunner().invoke(app, ["run", str(cfg), "--set", "data.task=upperfmt:NOPE"])
    assert result.exit_code == 2 and "data.task" in result.output
    assert "module'upperfmt'hasnoattribute'NOPE'" in "".join(result.output.split())  # the console wraps long lines


def test_a_formats_source_hash_follows_its_code(plugin_package):
    before = format_source_hash("upperfmt:UPPER")
    assert before == format_source_hash("upper")  # the same module behind both names
    module = plugin_package / "upperfmt.py"
    module.write_text(module.read_text().replace('"not in capitals"', '"lower case"'))
    assert format_source_hash("upperfmt:UPPER") != before
    assert len({format_source_hash(name) for name in ("slots", "constituency", "text", "json")}) == 4


def test_a_schema_bound_format_hashes_like_its_format():
    bound = json.dumps({"format": "json", "schema": {"type": "object"}})
    assert format_source_hash(bound) == format_source_hash("json")


def test_a_student_in_a_cpu_slot_finds_an_import_string_format_itself(tiny_models, tmp_path):
    """The example plugin, named by import string, in a fresh process whose CPU-slot worker trains, selects on dev
    and scores with it: the parent never imports the plugin, the worker looks it up on its own."""
    code = textwrap.dedent(f"""
        import json, sys
        import pandas as pd
        from mckd_core.config import StudentConfig
        from mckd_core.data import write_parquet
        from mckd_core.gpus import Slot, run_in_slot
        from mckd_core.jobs import StudentRef
        from mckd_core.steps import evaluate_student
        from mckd_core.student import TrainSpec, train_isolated

        pairs = {{"cat": "dog", "sun": "moon", "red": "blue", "hot": "cold", "up": "down", "big": "small"}}
        spec = TrainSpec(model={tiny_models["llama"]!r}, out_dir={str(tmp_path / "student")!r},
                         task="mckd_format_example:KV", train_inputs=list(pairs),
                         train_targets=[f"out={{v}}" for v in pairs.values()], dev_inputs=list(pairs)[:3],
                         dev_targets=[f"out={{v}}" for v in list(pairs.values())[:3]],
                         student=StudentConfig(epochs=2, batch_size=3, learning_rate=3e-3, max_target_tokens=8))
        slot = Slot(cores=(0,))
        metrics = train_isolated(spec, slot)
        rows = {{"id": ["a", "b"], "input": ["cat", "sun"], "target": ["out=dog", "out=moon"]}}
        test = write_parquet(pd.DataFrame(rows),
                             {str(tmp_path / "data")!r}, "test")
        scored = run_in_slot(slot, evaluate_student, StudentRef(dir=spec.out_dir, metrics=metrics), test,
                             StudentConfig(model="x", max_target_tokens=8), spec.task)
        print(json.dumps({{"parent_imported": "mckd_format_example" in sys.modules, "task": metrics["task"],
                          "history": metrics["history"], "scored": sorted(scored)}}))
    """)
    env = {**__import__("os").environ, "PYTHONPATH": f"{EXAMPLE}:{REPO}"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["parent_imported"] is False
    assert result["task"] == "mckd_format_example:KV"  # the model card names the format for `mckd predict`
    assert all("dev_f1" in epoch for epoch in result["history"])  # dev selection scored with the plugin's metric
    assert {"f1", "exact_match", "invalid", "ci95", "rows"} <= set(result["scored"])  # its row_stats gave the CI
