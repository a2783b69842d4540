"""A student's cache key follows the trainer's source: a new trainer retrains instead of handing back old students."""

from types import SimpleNamespace


def test_student_key_changes_with_the_trainer_source(monkeypatch):
    from tasks import common
    from tasks.train_student import train_student_task

    ctx = SimpleNamespace(task=train_student_task, result_store=SimpleNamespace(exists=lambda key: False))
    inputs = {"job": "stage-1/student-0", "slots": "anything"}
    key = common.StudentOnDisk().compute_key(ctx, inputs, {})
    assert key == common.StudentOnDisk().compute_key(ctx, {**inputs, "slots": "other"}, {})  # where it runs: same node
    monkeypatch.setattr(common, "TRAINER_SOURCE", "another trainer")
    assert common.StudentOnDisk().compute_key(ctx, inputs, {}) != key
