"""CPU slots: a stage's students train at once, each in its own process on its share of the cores, and learn
exactly what they learn one at a time with the same thread count."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from toy_data import PAIRS

from mckd_core import gpus
from mckd_core.config import StudentConfig
from mckd_core.gpus import Slot, SlotPlan, cpu_slots, device_slot, plan_cpu_slots, run_in_slot
from mckd_core.student import TrainSpec, train_isolated


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(gpus, "available_cores", lambda: [0, 1, 2, 3])


def test_cores_are_split_evenly_and_disjointly(four_cores):
    assert cpu_slots(SlotPlan(students=2)) == [Slot(cores=(0, 1)), Slot(cores=(2, 3))]
    assert cpu_slots(SlotPlan(students=4, threads=1)) == [Slot(cores=(i,)) for i in range(4)]
    assert cpu_slots(SlotPlan(students=1, threads=2)) == [
        Slot(cores=(0, 1))
    ]  # one at a time, in a child with 2 threads


def test_one_student_without_a_thread_count_is_the_whole_process(four_cores):
    assert cpu_slots(SlotPlan()) == [Slot()]
    assert Slot().in_process and Slot().env() == {}


def test_more_students_than_cores_wrap_around(four_cores):
    assert [s.cores for s in cpu_slots(SlotPlan(students=3, threads=2))] == [(0, 1), (2, 3), (0, 1)]


def test_default_plan_is_one_student_per_partition_up_to_the_cores(four_cores, monkeypatch):
    assert plan_cpu_slots(None, None, partitions=2) == SlotPlan(students=2)
    assert plan_cpu_slots(None, None, partitions=8) == SlotPlan(students=4)
    assert plan_cpu_slots(1, None, partitions=2) == SlotPlan(students=1)
    monkeypatch.setattr(gpus, "available_cores", lambda: [0])
    assert cpu_slots(plan_cpu_slots(None, None, partitions=2)) == [Slot()]


def test_a_share_of_the_cores_sets_the_child_threads():
    env = Slot(cores=(3, 5)).env()
    assert env["OMP_NUM_THREADS"] == "2" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert str(Slot(cores=(3, 5))) == "cpu[3,5]" and str(Slot(cuda="1")) == "cuda:1"


def _students(tiny_models, tmp_path, plan: SlotPlan, tag: str) -> list[dict]:
    """Two different students (seeds 0 and 1) trained in threads that each hold a slot, as the stage flow's tasks do."""

    def one(seed: int) -> dict:
        spec = TrainSpec(
            model=tiny_models["llama"],
            out_dir=str(tmp_path / f"{tag}-{seed}"),
            task="text",
            train_inputs=list(PAIRS),
            train_targets=list(PAIRS.values()),
            dev_inputs=list(PAIRS)[:4],
            dev_targets=list(PAIRS.values())[:4],
            seed=seed,
            student=StudentConfig(epochs=3, batch_size=4, learning_rate=3e-3, max_target_tokens=16),
        )
        with device_slot(plan) as slot:
            return train_isolated(spec, slot)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, [0, 1]))


def test_concurrent_students_learn_what_sequential_ones_do(tiny_models, tmp_path):
    together = _students(tiny_models, tmp_path, SlotPlan(students=2, threads=1), "together")
    one_by_one = _students(tiny_models, tmp_path, SlotPlan(students=1, threads=1), "sequential")
    same = ("history", "dev_f1", "epochs", "train_tokens", "weights_sha256", "threads")
    for a, b in zip(together, one_by_one):
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        assert a["threads"] == 1
    assert together[0]["weights_sha256"] != together[1]["weights_sha256"]  # two students, not one twice


def _meet(barrier: str, name: str) -> dict:
    """In a slot's process: arrive at a barrier and wait (≤ 60 s) for the other slot's task to arrive too."""
    import os
    import time
    from pathlib import Path

    Path(barrier, name).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return {
        "met": len(os.listdir(barrier)) == 2,
        "pid": os.getpid(),
        "cores": sorted(os.sched_getaffinity(0)),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def test_two_slots_run_at_once_in_their_own_processes_and_cores(tmp_path):
    """Both tasks must be inside their slots at the same moment: one at a time, the first would wait out the barrier."""
    plan = SlotPlan(students=2, threads=1)

    def task(name: str) -> dict:
        with device_slot(plan) as slot:
            return run_in_slot(slot, _meet, str(tmp_path), name)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(task, ["a", "b"])
    assert a["met"] and b["met"]
    assert a["pid"] != b["pid"] and a["threads"] == b["threads"] == "1"
    if len(gpus.available_cores()) >= 2:
        assert set(a["cores"]).isdisjoint(b["cores"])


def _alive(pid: int) -> bool:
    """Running (a zombie left for a reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


def test_a_slot_worker_exits_when_its_parent_is_killed():
    """A worker left behind would wait for work for ever, or finish a student into a run dir a resumed run writes."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    code = (
        "import os, time\nfrom mckd_core.gpus import Slot, run_in_slot\n"
        "print(run_in_slot(Slot(cores=(0,)), os.getpid), flush=True)\ntime.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True
    )
    worker = int(parent.stdout.readline())
    assert worker != parent.pid and _alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker)


def _times_out(progress=None):
    raise TimeoutError("read timed out")  # as a socket or a file lock says it, inside the job


def test_a_timeout_the_job_raises_in_its_slot_process_comes_back_as_its_error():
    """Polled for progress, a job that failed with TimeoutError must not look "still running" for ever."""
    outcome: dict = {}

    def call():
        try:
            run_in_slot(Slot(cores=(0,)), _times_out, progress=lambda done, total: None)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(120)
    assert not caller.is_alive(), "run_in_slot kept polling a job that had already failed"
    assert isinstance(outcome["error"], TimeoutError) and "read timed out" in str(outcome["error"])
