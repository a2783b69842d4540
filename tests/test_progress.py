"""Progress of long nodes reaches the Prefect API from the process that does the work (a CPU slot's worker)."""

from __future__ import annotations

import threading
import time

import pandas as pd
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType
from prefect.client.schemas.sorting import ArtifactSort
from toy_data import PAIRS

from mckd_core.config import StudentConfig
from mckd_core.data import label_frame, write_parquet
from mckd_core.gpus import SlotPlan
from mckd_core.jobs import StudentJob
from mckd_core.progress import FileProgress, forward_file_progress


def test_a_child_processes_progress_file_is_forwarded_once_per_change(tmp_path):
    path, seen = str(tmp_path / "progress"), []
    report = FileProgress(path, min_interval_s=0)
    assert forward_file_progress(path, lambda *step: seen.append(step), None) is None  # nothing written yet
    report(3, 10)
    last = forward_file_progress(path, lambda *step: seen.append(step), None)
    last = forward_file_progress(path, lambda *step: seen.append(step), last)  # unchanged: not again
    report(10, 10)
    forward_file_progress(path, lambda *step: seen.append(step), last)
    assert seen == [(3, 10), (10, 10)]


def _progress_values(description: str) -> list[float]:
    # Newest first: the session's API holds every earlier test's progress artifacts, more than one page of them,
    # and unsorted this one could fall off the page (CI saw none at all).
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=20,
        )
    return [float(a.data) for a in artifacts if a.description == description]


def test_a_student_trained_in_a_cpu_slot_process_advances_its_progress_artifact_before_it_finishes(
    tiny_models, tmp_path
):
    from tasks.train_student import train_student_task

    # 64 rows, one per step, 24 epochs: ~10 s of training on an idle 2-core machine, so that at one artifact update
    # a second the watcher sees several values before the end (4 epochs took 2.4 s and it saw none).
    words = list(PAIRS) * 8
    rows = pd.DataFrame({"id": [f"u{i}" for i in range(len(words))], "input": words, "target": [None] * len(words)})
    labels = label_frame(
        rows,
        [PAIRS[w] for w in words],
        [PAIRS[w] for w in words],
        [True] * len(words),
        [None] * len(words),
        "teacher",
        0,
    )
    dev = pd.DataFrame({"id": ["d0", "d1"], "input": ["cat", "sun"], "target": ["dog", "moon"]})
    job = StudentJob(
        name="progress/student",
        task="text",
        student=StudentConfig(model=tiny_models["t5"], epochs=24, batch_size=1, max_target_tokens=8, max_dev=2),
        seed=0,
        labels=write_parquet(labels, tmp_path, "labels"),
        dev=write_parquet(dev, tmp_path, "dev"),
        out_dir=str(tmp_path / "student"),
    )
    seen: list[float] = []
    done = threading.Event()

    def watch():  # what the UI shows while the student trains
        while not done.is_set():
            seen.extend(_progress_values("Training progress/student"))
            time.sleep(0.2)

    @flow
    def one_student():
        # One CPU share of one core: the student trains in that slot's worker process, not in this one.
        return train_student_task.with_options(refresh_cache=True)(job, SlotPlan(students=1, threads=1))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ref = one_student()
    finally:
        done.set()
        watcher.join()
    assert ref.metrics["train_rows"] == 64
    moving = sorted({value for value in seen if 0 < value < 100})
    assert len(moving) >= 2, seen  # it advanced more than once while training, not only at its end
    assert _progress_values("Training progress/student")[-1] == 100.0
