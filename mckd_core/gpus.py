"""Device slots: where a student's work (training, relabeling, test scoring) runs.

GPUs: one slot per visible device; the task holding it runs in a spawned child that sees only that device.
CPU: `SlotPlan.students` slots, each a disjoint share of this process's cores; a task holding one runs in a
spawned child bound to those cores with as many torch threads, so a stage's students train at once instead of
fighting over one thread pool. One CPU slot without a thread count is this whole process, used in-process:
the one-at-a-time mode.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import multiprocessing
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from .progress import FileProgress, forward_file_progress

T = TypeVar("T")
ProgressFn = Callable[[int, int], None]
#: How often a parent looks at its child's progress file.
PROGRESS_POLL_S = 0.5


@dataclass(frozen=True)
class Slot:
    """A CUDA device (`cuda`), a share of the CPU cores (`cores`), or neither: this whole process."""

    cuda: str | None = None
    cores: tuple[int, ...] | None = None

    @property
    def in_process(self) -> bool:
        return self.cuda is None and self.cores is None

    def env(self) -> dict[str, str]:
        """Environment of a child running in this slot (set before it imports torch)."""
        if self.cuda is not None:
            return {"CUDA_VISIBLE_DEVICES": self.cuda}
        if self.cores is not None:
            threads = str(len(self.cores))
            # Tokenizers' own thread pool would compete with torch's for the same cores.
            return {
                "CUDA_VISIBLE_DEVICES": "",
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "TOKENIZERS_PARALLELISM": "false",
            }
        return {}

    def __str__(self) -> str:
        if self.cuda is not None:
            return f"cuda:{self.cuda}"
        return "cpu" if self.cores is None else f"cpu[{','.join(map(str, self.cores))}]"


@dataclass(frozen=True)
class SlotPlan:
    """How the CPU is shared: `students` at once, `threads` each (None: the cores split evenly).

    Ignored on GPUs (one slot per device). The default, one student and no thread count, is the whole process.
    """

    students: int = 1
    threads: int | None = None


def available_cores() -> list[int]:
    """The cores this process may run on (a container's or taskset's share, not the machine's; where the OS cannot
    say, every core)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def plan_cpu_slots(students: int | None, threads: int | None, partitions: int) -> SlotPlan:
    """The SlotPlan of a run's config: `students` None means as many as a stage has, up to one per core."""
    return SlotPlan(students=students or max(1, min(partitions, len(available_cores()))), threads=threads)


def cpu_slots(plan: SlotPlan) -> list[Slot]:
    """Disjoint core shares while students × threads fits the cores; beyond that shares wrap around (oversubscribed)."""
    if plan.students == 1 and plan.threads is None:
        return [Slot()]
    cores = available_cores()
    per = plan.threads or max(1, len(cores) // plan.students)
    return [Slot(cores=tuple(cores[(i * per + j) % len(cores)] for j in range(per))) for i in range(plan.students)]


@functools.cache  # the visible GPUs do not change within a process; every slot acquisition asks
def _cuda_slots() -> tuple[Slot, ...]:
    import torch

    if not torch.cuda.is_available():
        return ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = (
        [d.strip() for d in visible.split(",") if d.strip()]
        if visible
        else [str(i) for i in range(torch.cuda.device_count())]
    )
    return tuple(Slot(cuda=i) for i in ids)


_pools: dict[object, queue.Queue] = {}
_lock = threading.Lock()


def _pool(plan: SlotPlan) -> queue.Queue:
    """One pool per process for the GPUs; one per plan on CPU (a process normally runs one plan)."""
    with _lock:
        gpus = _cuda_slots()
        key = "cuda" if gpus else plan
        if key not in _pools:
            _pools[key] = queue.Queue()
            for slot in gpus or cpu_slots(plan):
                _pools[key].put(slot)
        return _pools[key]


@contextlib.contextmanager
def device_slot(plan: SlotPlan | None = None):
    """Hold one slot for the duration of the block (waiting for a free one); yields the Slot."""
    pool = _pool(plan or SlotPlan())
    slot = pool.get()
    try:
        yield slot
    finally:
        pool.put(slot)


def run_in_slot(
    slot: Slot, fn: Callable[..., T], *args, child: bool | None = None, progress: ProgressFn | None = None
) -> T:
    """`fn(*args)` where `slot` says: here for the whole-process slot; in the slot's own worker process (bound
    to its cores, started once) for a CPU share; in a fresh spawned child that sees only its device for a GPU,
    so a poisoned CUDA context dies with it. For the whole-process slot `child=True` (student.isolate: always)
    asks for a fresh child; a CPU share always runs in its worker, already a process of its own.

    `progress`: `fn` is called with `progress=` a callback; from a child process its steps reach `progress` here,
    in the calling thread (where a Prefect task's context is), through a file the child writes and this polls."""
    if slot.cores is not None:
        return _cpu_worker(slot, fn, *args, progress=progress)
    if child or (child is None and slot.cuda is not None):
        with _spawned(slot) as pool:
            return _in_child(pool, fn, args, progress)
    return fn(*args) if progress is None else fn(*args, progress=progress)


def _in_child(pool: concurrent.futures.Executor, fn: Callable[..., T], args: tuple, progress: ProgressFn | None) -> T:
    if progress is None:
        return pool.submit(_portable, fn, *args).result()
    with tempfile.TemporaryDirectory(prefix="mckd-progress-") as folder:
        path = os.path.join(folder, "progress")
        future = pool.submit(_portable, functools.partial(fn, progress=FileProgress(path)), *args)
        last = None
        # wait(), not result(timeout=): a TimeoutError the job itself raised (a socket or file-lock timeout) would
        # look like "still running" to result() and be polled for ever.
        while not concurrent.futures.wait([future], timeout=PROGRESS_POLL_S).done:
            last = _forwarded(path, progress, last)
        _forwarded(path, progress, last)  # the last step, written just before the child returned
        return future.result()


def _forwarded(path: str, progress: ProgressFn, last: tuple | None) -> tuple | None:
    """forward_file_progress, where a progress display that fails (the Prefect API away) never abandons the job the
    child is still running: the steps are dropped, the job goes on."""
    try:
        return forward_file_progress(path, progress, last)
    except Exception as exc:
        _progress_lost(type(exc).__name__)
        return last


@functools.cache  # once per process and kind of failure: a display that is down would say so every poll
def _progress_lost(error: str) -> None:
    logging.getLogger("mckd").warning("progress of a slot's job not shown (%s); the job goes on", error)


def child_for(isolate: str) -> bool | None:
    """run_in_slot's `child` for student.isolate: auto (a child on a GPU), always, never."""
    return {"auto": None, "always": True, "never": False}[isolate]


def _portable(fn: Callable[..., T], *args) -> T:
    """`fn(*args)` in a child process: CUDA failures come back as StudentOOM / GPUError, which pickle and which
    mckd_core.failures classifies (torch's own exception types may not survive the trip)."""
    from .failures import GPUError, StudentOOM, is_oom, is_transient

    try:
        return fn(*args)
    except Exception as exc:
        if is_oom(exc) and type(exc) is not StudentOOM:
            raise StudentOOM(str(exc)) from None
        if type(exc) is not GPUError and isinstance(exc, RuntimeError) and is_transient(exc):
            raise GPUError(str(exc)) from None
        raise


def _spawned(slot: Slot) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_enter_slot, initargs=(slot,)
    )


# One long-lived process per CPU share: importing torch and transformers costs seconds, paid once per slot
# instead of once per task. It serves one task at a time (tasks sharing a Slot queue up) and lives as long as this
# process: concurrent.futures stops it at exit, and it exits by itself if this process dies (_enter_slot).
_workers: dict[Slot, concurrent.futures.ProcessPoolExecutor] = {}


def _cpu_worker(slot: Slot, fn: Callable[..., T], *args, progress: ProgressFn | None = None) -> T:
    with _lock:
        worker = _workers.get(slot) or _workers.setdefault(slot, _spawned(slot))
    try:
        return _in_child(worker, fn, args, progress)
    except concurrent.futures.process.BrokenProcessPool as exc:
        with _lock:  # the next task on this slot starts a new process
            _workers.pop(slot, None)
        raise RuntimeError(
            f"the worker process of slot {slot} died (killed, e.g. out of memory); re-run to resume "
            "from the cache, with fewer students at once (stages.cpu_students) if memory is short"
        ) from exc


def _enter_slot(slot: Slot) -> None:
    os.environ.update(slot.env())
    if slot.cores is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, slot.cores)
    # A worker whose parent was killed would wait for work for ever, and one mid-task would still save into a run
    # dir that the resumed run writes: leave as soon as the parent is gone.
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int, poll_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)
