"""scripts/gpu_check.py (issue #16): its CPU path runs every check function, so the device kit cannot rot."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
CHECKS = {"train_throughput", "cpu_ratio", "oom_backoff", "isolation", "device_slots", "vllm_engine"}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slot_helpers_read_both_slot_kinds():
    gc = _load()
    assert gc.cuda_id("cpu") is None and gc.cuda_id("1") == "1" and gc.in_process("cpu") and not gc.in_process("0")

    class Slot:  # mckd_core.gpus.Slot's shape
        def __init__(self, cuda=None, cores=None):
            self.cuda, self.in_process = cuda, cuda is None and cores is None

    assert gc.cuda_id(Slot("2")) == "2" and gc.cuda_id(Slot(cores=(0,))) is None
    assert gc.in_process(Slot()) and not gc.in_process(Slot(cores=(0,)))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_cpu_path_passes_and_writes_one_json_object(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "DO_NOT_TRACK": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "3", "--batch-size", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is the JSON object alone
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == result
    assert result["device_requested"] == "cpu" and result["environment"]["cuda"] is False
    assert result["student"]["shape"] == "tiny" and result["failed"] == []
    checks = result["checks"]
    assert set(checks) == CHECKS
    for name, check in checks.items():
        assert check["passed"] in (True, False, None) and isinstance(check["check_seconds"], float), name
    throughput = checks["train_throughput"]
    from mckd_core.student import native_bf16_cpu

    # precision auto: bf16 autocast on a CPU exactly where it multiplies bf16 natively
    assert throughput["passed"] is True and throughput["device"] == "cpu" and throughput["bf16"] is native_bf16_cpu()
    assert throughput["steps"] == 3 and throughput["steady_tokens_per_s"] > 0
    assert checks["isolation"]["passed"] is True and "IndexError" in checks["isolation"]["detail"]
    assert checks["device_slots"]["passed"] is True and len(checks["device_slots"]["runs"]) == 2
    for name in ("cpu_ratio", "oom_backoff", "vllm_engine"):  # need CUDA or what cannot travel
        assert checks[name]["passed"] is None and checks[name]["reason"].startswith("skipped"), name
    # the back-off loop still ran: an oversized micro-batch without a real OOM completes at attempt 1
    assert checks["oom_backoff"]["completed"] is True
    assert checks["oom_backoff"]["attempts"] == [{"attempt": 1, "micro_batch": 32, "grad_accum": 1}]


def test_the_kit_needs_nothing_the_device_image_lacks():
    """The device image has torch, transformers and numpy only: what the kit imports must not need pydantic or
    Prefect."""
    code = (
        "import sys; sys.modules['pydantic'] = None; sys.modules['prefect'] = None\n"
        "import mckd_core.student, mckd_core.failures, mckd_core.gpus\n"
        "from mckd_core.formats import get_format; get_format('text')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
