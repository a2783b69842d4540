"""Test session setup: isolated Prefect home + one ephemeral Prefect API for the whole session, no network."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_home = tempfile.mkdtemp(prefix="mckd-prefect-home-")
os.environ.setdefault("PREFECT_HOME", _home)
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(Path(_home) / "storage"))
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")  # the faults tests read task logs from the API
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402

pytest_plugins = ["vllm_fixture", "prefect_server"]


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from tiny_models import make_tiny_llama, make_tiny_t5
    from toy_data import PAIRS

    from mckd_core.config import StudentConfig
    from mckd_core.student import TrainSpec, train

    root = tmp_path_factory.mktemp("tiny-models")
    models = {"t5": make_tiny_t5(root / "t5"), "llama": make_tiny_llama(root / "llama")}
    # A teacher that knows the toy mapping a little: a random one writes nothing valid.
    train(
        TrainSpec(
            model=models["llama"],
            out_dir=str(root / "teacher"),
            task="text",
            train_inputs=list(PAIRS),
            train_targets=list(PAIRS.values()),
            student=StudentConfig(epochs=30, batch_size=4, learning_rate=3e-3, select_on_dev=False),
        )
    )
    models["teacher"] = str(root / "teacher")
    return models
