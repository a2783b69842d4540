"""The same student job gives the same weights wherever and whenever it trains on a CPU (issue #26 item 7f).

Measured with this file's model (hidden size 256: the tiny test models' matrices are too small for torch to split a
sum across threads): the weights followed the torch thread count only (1 vs 2 threads: different weights), never the
slot's cores, a job trained before in the same worker, or in-process vs worker at the same count. A slot worker's
count came from its share of the cores, or from all of them where the launching script had imported torch before
the worker set OMP_NUM_THREADS. Training now runs with `student.cpu_threads` whatever runs it.
"""

from __future__ import annotations

import pandas as pd
import pytest
from tiny_models import make_tiny_llama
from toy_data import PAIRS

from mckd_core.config import StudentConfig
from mckd_core.data import write_parquet
from mckd_core.gpus import Slot, available_cores, run_in_slot
from mckd_core.jobs import StudentJob
from mckd_core.steps import gold_labels, train_student


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("wide-llama"), hidden_size=256)


def test_the_same_sft_student_gets_the_same_weights_in_any_slot_after_any_job(tmp_path, wide_llama):
    inputs = [f"{a} {b}" for a in PAIRS for b in PAIRS][:48]
    labeled = pd.DataFrame(
        {
            "id": [f"l{i}" for i in range(48)],
            "input": inputs,
            "target": [" ".join(PAIRS[w] for w in x.split()) for x in inputs],
        }
    )
    gold = gold_labels(write_parquet(labeled.iloc[4:], tmp_path / "data", "labeled"), tmp_path / "data")
    dev = write_parquet(labeled.iloc[:4], tmp_path / "data", "dev")
    cfg = StudentConfig(
        model=wide_llama, epochs=2, batch_size=4, learning_rate=3e-3, max_target_tokens=16, max_dev=4, isolate="never"
    )

    def sft(slot: Slot, name: str, seed: int = 0) -> str:
        job = StudentJob(
            name=name, task="text", student=cfg, seed=seed, labels=gold, dev=dev, out_dir=str(tmp_path / name)
        )
        student = run_in_slot(slot, train_student, job)  # where the train-student task runs it
        return student.metrics["weights_sha256"]

    cores = tuple(available_cores()[:2])
    one_core = sft(Slot(cores=cores[:1]), "one-core")  # a fresh worker on one core
    sft(Slot(cores=cores), "another-job", seed=7)  # a long-lived worker on every core, after another student
    all_cores = sft(Slot(cores=cores), "all-cores")
    in_process = sft(Slot(), "in-process")  # the flow's own process (stages.cpu_students: 1)
    assert one_core == all_cores == in_process
