"""A node's cache key follows what changes its result (content, config, code, versions, weights), not where or how
it runs (issue #26)."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from mckd_core.config import StudentConfig, TeacherConfig
from mckd_core.data import write_parquet
from mckd_core.jobs import AnnotateJob, StudentJob, StudentRef


def _key(policy, inputs):
    from tasks.train_student import train_student_task

    ctx = SimpleNamespace(task=train_student_task, result_store=SimpleNamespace(exists=lambda key: False))
    return policy.compute_key(ctx, inputs, {})


@pytest.fixture
def job(tmp_path):
    rows = pd.DataFrame({"id": ["a"], "input": ["x"], "target": ["y"]})
    labels = write_parquet(rows, tmp_path / "one", "labels")
    return StudentJob(
        name="stage-1/student-0",
        task="text",
        student=StudentConfig(),
        seed=1,
        labels=labels,
        dev=labels,
        out_dir=str(tmp_path / "one" / "stage-1" / "student-0"),
    )


def test_where_a_student_runs_or_writes_is_not_in_its_key(job, tmp_path):
    from tasks.common import TRAIN

    key = _key(TRAIN, {"job": job, "slots": "anything"})
    # The same labels in another run dir (another runs root, another run name): the same content hash.
    moved = write_parquet(job.labels.read(), tmp_path / "elsewhere", "labels")
    elsewhere = job.model_copy(
        update={
            "labels": moved,
            "dev": moved,
            "out_dir": str(tmp_path / "x"),
            "name": "other",
            "student": job.student.model_copy(update={"isolate": "always"}),
        }
    )
    assert _key(TRAIN, {"job": elsewhere, "slots": "other"}) == key


@pytest.mark.parametrize("change", [{"seed": 2}, {"student": StudentConfig(epochs=3)}, {"parts": [0]}])
def test_what_a_student_learns_from_is_in_its_key(job, change):
    from tasks.common import TRAIN

    assert _key(TRAIN, {"job": job.model_copy(update=change)}) != _key(TRAIN, {"job": job})


def test_a_student_key_changes_with_the_trainer_source_the_package_versions_and_the_init_weights(job, monkeypatch):
    from mckd_core import identity
    from tasks import common

    key = _key(common.TRAIN, {"job": job})
    init = StudentRef(dir="/anywhere", metrics={"weights_sha256": "abc"})
    assert _key(common.TRAIN, {"job": job.model_copy(update={"init": init})}) != key
    moved_init = StudentRef(dir="/elsewhere", metrics={"weights_sha256": "abc", "seconds": 3})
    assert _key(common.TRAIN, {"job": job.model_copy(update={"init": init})}) == _key(
        common.TRAIN, {"job": job.model_copy(update={"init": moved_init})}
    )
    monkeypatch.setattr(identity, "_digest_of", lambda path, size, mtime: "edited" if "student.py" in path else path)
    edited = _key(common.TRAIN, {"job": job})
    assert edited != key
    monkeypatch.setattr(common, "package_versions", lambda *names: {"torch": "9.9"})
    assert _key(common.TRAIN, {"job": job}) != edited


def test_the_teachers_key_ignores_how_it_is_reached(tmp_path):
    from tasks.common import ANNOTATE

    ref = write_parquet(pd.DataFrame({"id": ["a"], "input": ["x"], "target": ["y"]}), tmp_path, "rows")
    base = AnnotateJob(
        examples=ref,
        demos=ref,
        teacher=TeacherConfig(model=str(tmp_path)),
        task="text",
        seed=0,
        out_dir=str(tmp_path / "t"),
        cache_path=str(tmp_path / "c.sqlite"),
    )
    how = base.teacher.model_copy(
        update={
            "concurrency": 2,
            "timeout_s": 5,
            "max_retries": 0,
            "base_url": "http://h:1/v1",
            "vllm": base.teacher.vllm.model_copy(
                update={"python": "/py", "max_restarts": 3, "extra_args": ["--port", "8123", "--disable-log-stats"]}
            ),
        }
    )
    moved = base.model_copy(update={"teacher": how, "out_dir": "/elsewhere", "cache_path": "/other.sqlite"})
    assert _key(ANNOTATE, {"job": moved}) == _key(ANNOTATE, {"job": base})
    sampled = base.model_copy(update={"teacher": base.teacher.model_copy(update={"temperature": 0.7})})
    assert _key(ANNOTATE, {"job": sampled}) != _key(ANNOTATE, {"job": base})
    seeded = base.teacher.vllm.model_copy(update={"extra_args": ["--port=8123", "--seed", "1"]})
    reseeded = base.model_copy(update={"teacher": base.teacher.model_copy(update={"vllm": seeded})})
    assert _key(ANNOTATE, {"job": reseeded}) != _key(ANNOTATE, {"job": base})


def test_local_weights_are_identified_by_their_content(tmp_path):
    from mckd_core.identity import weights_identity

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"one")
    before = weights_identity(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"two")
    assert weights_identity(str(tmp_path)) != before
    assert weights_identity("org/never-downloaded", "0123456789abcdef0123456789abcdef01234567").endswith(
        "@0123456789abcdef0123456789abcdef01234567"
    )


def test_a_local_model_is_keyed_by_its_files_not_its_folder(job, tmp_path):
    import shutil

    from tasks.common import TRAIN

    first = tmp_path / "model-a"
    first.mkdir()
    (first / "config.json").write_text("{}")
    (first / "model.safetensors").write_bytes(b"weights")
    (first / "tokenizer_config.json").write_text('{"chat_template": "A"}')
    moved = tmp_path / "elsewhere" / "model-b"
    shutil.copytree(first, moved)

    def key(folder):
        return _key(TRAIN, {"job": job.model_copy(update={"student": StudentConfig(model=str(folder))})})

    assert key(first) == key(moved)
    (moved / "tokenizer_config.json").write_text('{"chat_template": "B"}')  # another chat template: other prompts
    assert key(moved) != key(first)


def test_an_unreadable_cache_record_is_passed_over_and_the_chain_still_checks_files(tmp_path):
    from prefect.utilities.hashing import hash_objects

    from tasks.common import _on_disk

    gone = write_parquet(pd.DataFrame({"id": ["a"]}), tmp_path, "gone")
    Path(gone.path).unlink()
    unreadable = hash_objects("k", "unreadable", raise_on_failure=True)
    records = {"k": None, unreadable: gone}  # k: written by an older mckd; then a result whose file is gone

    class Store:
        def exists(self, key):
            return key in records

        def read(self, key):
            if records[key] is None:
                raise ModuleNotFoundError("a class of another mckd version")
            return SimpleNamespace(result=records[key])

    key = _on_disk(Store(), "k", {"out_dir": str(tmp_path)})
    assert key not in records  # neither the unreadable record nor the one pointing at a deleted file is reused
