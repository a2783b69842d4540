import pytest

from mckd_core.partition import cross_assignment, partition_ids, stage_seed


@pytest.mark.parametrize("n,k", [(10, 2), (11, 3), (100, 4), (3, 3)])
def test_partition_is_disjoint_complete_balanced(n, k):
    ids = [f"r{i}" for i in range(n)]
    df = partition_ids(ids, k, seed=7)
    assert list(df["id"]) == ids
    assert set(df["part"]) == set(range(k))
    sizes = df["part"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_partition_is_seeded():
    ids = [str(i) for i in range(50)]
    assert partition_ids(ids, 2, 1).equals(partition_ids(ids, 2, 1))
    assert not partition_ids(ids, 2, 1).equals(partition_ids(ids, 2, 2))


def test_partition_rejects_too_few_rows_or_parts():
    with pytest.raises(ValueError, match="non-empty"):
        partition_ids(["a"], 2, 0)
    with pytest.raises(ValueError, match="at least 2"):
        partition_ids(["a", "b"], 1, 0)


def test_cross_assignment_k2_is_the_papers_scheme():
    # Train on A, relabel B; train on B, relabel A.
    assert cross_assignment(2) == [([1], 0), ([0], 1)]


def test_cross_assignment_k3_every_part_relabelled_once_by_a_student_that_never_saw_it():
    plan = cross_assignment(3)
    assert sorted(held for _, held in plan) == [0, 1, 2]
    for train_parts, held in plan:
        assert held not in train_parts and sorted(train_parts + [held]) == [0, 1, 2]


def test_stage_seed_fixed_unless_redrawn():
    assert stage_seed(5, 1, False) == stage_seed(5, 2, False) == 5
    assert stage_seed(5, 1, True) != stage_seed(5, 2, True)
