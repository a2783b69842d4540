"""report.py on hand-built reports: the degradation warning and where it shows."""

from __future__ import annotations

from mckd_core.report import degradation_warnings, render_markdown, write_report


def report(stage_dev: list[list[float | None]], final_dev: float | None) -> dict:
    return {
        "config": {
            "run_name": "r",
            "data": {"task": "slots", "labeled": "l.jsonl", "unlabeled": "u.jsonl", "test": "t.jsonl"},
            "stages": {"num_stages": len(stage_dev) + 1, "partitions": 2, "first_labels": "teacher"},
            "student": {"model": "google/t5-efficient-tiny", "train_on_labeled": False, "init": "pretrained"},
            "teacher": {"model": "HuggingFaceTB/SmolLM2-360M-Instruct", "num_demos": 4, "demo_selection": "bm25"},
        },
        "counts": {"labeled": 50, "unlabeled": 40, "test": 20, "teacher_valid": 36, "teacher_invalid": 4},
        "teacher": {"test": None},
        "stages": [
            {
                "stage": i + 1,
                "students": [
                    {"partition": k, "train_rows": 20, "dev_f1": d, "epochs": 2, "seconds": 1.0}
                    for k, d in enumerate(devs)
                ],
            }
            for i, devs in enumerate(stage_dev)
        ],
        "final_student": {"dir": "/x", "dev_f1": final_dev, "test": None},
    }


def test_collapsing_stages_are_flagged_in_order():
    # The measured ATIS seed-0 run: stage 1 students 37.5 / 14.0, stage 2 0.0 / 3.8, final 0.0.
    warnings = degradation_warnings(report([[37.5, 14.0], [0.0, 3.8]], 0.0))
    assert len(warnings) == 2
    assert warnings[0].startswith("stage 2 students: dev F1 1.9 is less than 50% of the stage 1 students' 25.8")
    assert warnings[1].startswith("final student: dev F1 0.0 is less than 50% of the stage 2 students' 1.9")


def test_steady_or_unscored_stages_are_not_flagged():
    assert degradation_warnings(report([[40.0, 30.0], [30.0, 25.0]], 30.0)) == []
    assert degradation_warnings(report([[None, None]], 10.0)) == []  # no dev selection: nothing to compare
    assert degradation_warnings(report([[0.0, 0.0]], 0.0)) == []  # nothing to lose


def test_warnings_are_in_report_md():
    r = report([[40.0, 40.0]], 5.0)
    r["warnings"] = degradation_warnings(r)
    assert "## Warnings" in render_markdown(r) and "final student: dev F1 5.0" in render_markdown(r)
    assert "## Warnings" not in render_markdown(report([[40.0, 40.0]], 40.0))


def test_figure_is_redrawn_only_when_its_scores_change(tmp_path):
    r = report([[40.0, 40.0]], 40.0)
    r["final_student"]["test"] = {"f1": 40.0, "exact_match": 10.0}
    figure = tmp_path / "f1_by_stage.png"
    write_report(r, tmp_path)
    drawn = figure.stat().st_mtime_ns
    write_report({**r, "timings": {"total": 1.0}}, tmp_path)  # a cached re-run: new timings, same scores
    assert figure.stat().st_mtime_ns == drawn
    write_report({**r, "final_student": {**r["final_student"], "test": {"f1": 41.0, "exact_match": 10.0}}}, tmp_path)
    assert figure.stat().st_mtime_ns != drawn
    figure.unlink()
    write_report(r, tmp_path)
    assert figure.is_file()


# ---- issue #13: the deliverable guard ---------------------------------------------------------------------------

from mckd_core.report import choose_deliverable, deliverable_warnings  # noqa: E402

DIRS = {
    "final": "/run/final/student",
    "sft": "/run/baselines/sft",
    "vanilla-kd": "/run/baselines/vanilla-kd",
    "mckd-2": "/run/baselines/mckd-2",
}


def margins(dev: dict, lows: dict) -> dict:
    """candidate - final on dev, with a CI whose lower end is `lows[name]` (above 0: beyond noise)."""
    return {
        name: {"diff": f1 - dev["final"], "ci95": [lows[name], f1 - dev["final"] + 8.0]}
        for name, f1 in dev.items()
        if name != "final"
    }


def test_the_guard_ships_a_candidate_only_when_it_beats_the_final_student_beyond_noise():
    # The ATIS numbers, as dev F1: plain fine-tuning on L beats every distilled student.
    dev = {"final": 55.8, "sft": 67.2, "vanilla-kd": 59.7, "mckd-2": 57.0}
    source = "10 rows held out of L (data.dev_holdout)"
    shipped = choose_deliverable(
        dev, DIRS, source, vs_final=margins(dev, {"sft": 2.0, "vanilla-kd": 0.5, "mckd-2": -4.0})
    )
    assert (shipped["name"], shipped["dir"], shipped["dev"]) == ("sft", "/run/baselines/sft", dev)
    assert shipped["why"].startswith(
        f"sft beats the final student beyond noise on {source} (candidate - final, paired "
        "95% CI: sft +11.4 [+2.0, +19.4], vanilla-kd +3.9 [+0.5, +11.9], mckd-2 +1.2 [-4.0, +9.2])"
    )
    assert shipped["why"].endswith("dev F1: sft 67.2, vanilla-kd 59.7, mckd-2 57.0, final 55.8")
    # The same dev F1s within noise: the final student ships, as in the paper.
    noisy = choose_deliverable(
        dev, DIRS, source, vs_final=margins(dev, {"sft": -1.0, "vanilla-kd": -6.0, "mckd-2": -9.0})
    )
    assert noisy["name"] == "final" and noisy["why"].startswith(
        f"no candidate beats the final student beyond noise on {source}"
    )
    assert choose_deliverable({**dev, "final": 70.0}, DIRS, "data.dev (20 rows)", vs_final={})["name"] == "final"


def test_too_few_dev_rows_never_ship_another_candidate():
    """A bootstrap over a handful of rows has (almost) no width: a 1-row 'CI above 0' is not evidence."""
    dev = {"final": 0.0, "sft": 100.0}
    one_row = choose_deliverable(dev, DIRS, "1 row held out of L", vs_final=margins(dev, {"sft": 100.0}), dev_rows=1)
    assert one_row["name"] == "final" and one_row["why"].endswith(
        "(only 1 dev rows: at least 10 are needed to ship another candidate)"
    )
    assert (
        choose_deliverable(dev, DIRS, "data.dev", vs_final=margins(dev, {"sft": 100.0}), dev_rows=10)["name"] == "sft"
    )


def test_among_candidates_beyond_noise_the_dev_best_then_the_simpler_model_ships():
    dev = {"mckd-2": 61.0, "vanilla-kd": 61.0, "sft": 61.0, "final": 50.0}
    assert choose_deliverable(dev, DIRS, "dev", vs_final=margins(dev, dict.fromkeys(dev, 1.0)))["name"] == "sft"
    dev = {"mckd-2": 61.0, "vanilla-kd": 61.0, "sft": 65.0, "final": 50.0}
    assert (
        choose_deliverable(dev, DIRS, "dev", vs_final=margins(dev, {"mckd-2": 1.0, "vanilla-kd": 1.0, "sft": -1.0}))[
            "name"
        ]
        == "vanilla-kd"
    )


def test_each_candidate_needs_a_randomization_p_below_the_level_divided_by_the_candidates_compared():
    dev = {"final": 50.0, "sft": 58.0, "vanilla-kd": 52.0, "mckd-2": 49.0}
    below_0 = margins(dev, dict.fromkeys(dev, -1.0))
    with_p = lambda ps: {name: {**cmp, "p": ps[name]} for name, cmp in below_0.items() if name in ps}  # noqa: E731
    # p = 0.01 beats 0.025 for one candidate, not 0.025 / 3 among three: the CI (below 0 here) no longer decides.
    alone = choose_deliverable({"final": 50.0, "sft": 58.0}, DIRS, "dev", vs_final=with_p({"sft": 0.01}))
    assert alone["name"] == "sft"
    assert (
        "one-sided paired randomization test, shipped only at p <= 0.025/1 (Bonferroni over the 1 candidates): "
        "sft +8.0 p=0.010" in alone["why"]
    )
    three = choose_deliverable(dev, DIRS, "dev", vs_final=with_p({"sft": 0.01, "vanilla-kd": 0.5, "mckd-2": 0.9}))
    assert three["name"] == "final" and "p <= 0.025/3 (Bonferroni over the 3 candidates)" in three["why"]
    lower = with_p({"sft": 0.008, "vanilla-kd": 0.5, "mckd-2": 0.9})
    assert choose_deliverable(dev, DIRS, "dev", vs_final=lower)["name"] == "sft"
    # A candidate not scored on the dev rows is not counted among those compared.
    two = with_p({"sft": 0.01, "vanilla-kd": 0.5, "mckd-2": 0.9})
    assert choose_deliverable({"final": 50.0, "sft": 58.0}, DIRS, "dev", vs_final=two)["name"] == "sft"


def test_a_candidate_that_trained_on_the_dev_rows_is_not_compared():
    shipped = choose_deliverable(
        {"final": 40.0}, DIRS, "the labeled set L (50 rows, none held out)", {"sft": "trained on 50 of the 50 dev rows"}
    )
    assert shipped["name"] == "final" and shipped["excluded"] == {"sft": "trained on 50 of the 50 dev rows"}
    assert shipped["why"].endswith("not compared: sft (trained on 50 of the 50 dev rows)")
    # Without the final student on dev there is nothing to beat: the dev-best of the rest.
    assert (
        choose_deliverable(
            {"sft": 40.0, "vanilla-kd": 45.0}, DIRS, "dev", {"final": "trained on 5 of the 10 dev rows"}
        )["name"]
        == "vanilla-kd"
    )


def guarded(dev: dict, train_on_labeled: bool = False, low: float = 1.0) -> dict:
    r = report([[40.0, 40.0]], dev["final"])
    r["config"]["student"]["train_on_labeled"] = train_on_labeled
    r["baselines"] = {
        name: {
            "test": {"f1": 50.0, "exact_match": 10.0},
            "dir": DIRS[name],
            "train_rows": 40,
            "dev_f1": dev[name],
            "epochs": 2,
            "seconds": 1.0,
        }
        for name in dev
        if name != "final"
    }
    r["counts"]["labeled_train"] = 40
    r["deliverable"] = choose_deliverable(
        dev, DIRS, "10 rows held out of L (data.dev_holdout)", vs_final=margins(dev, dict.fromkeys(dev, low))
    )
    return r


def test_losing_to_sft_on_dev_is_a_warning_naming_what_to_change():
    (warning,) = deliverable_warnings(guarded({"final": 55.8, "sft": 67.2}))
    assert warning.startswith(
        "final student: dev F1 55.8 is below sft's 67.2 on 10 rows held out of L (data.dev_holdout): "
        "plain fine-tuning on L beats the distilled student here (sft - final +11.4 [+1.0, +19.4]), "
        "so the deliverable is sft"
    )
    (within,) = deliverable_warnings(guarded({"final": 55.8, "sft": 67.2}, low=-2.0))
    assert "within dev noise (sft - final +11.4 [-2.0, +19.4]), so the deliverable is final" in within
    # vanilla KD ships (dev-best of those beyond noise) while SFT is beyond noise too: the warning says SFT beats it
    (beaten,) = deliverable_warnings(guarded({"final": 55.8, "sft": 67.2, "vanilla-kd": 70.0}))
    assert (
        "beats the distilled student here (sft - final +11.4 [+1.0, +19.4]), so the deliverable is vanilla-kd" in beaten
    )
    assert "student.train_on_labeled: true" in warning and "teacher.demo_selection: bm25" in warning
    assert "train_on_labeled" not in deliverable_warnings(guarded({"final": 55.8, "sft": 67.2}, True))[0]
    assert deliverable_warnings(guarded({"final": 67.2, "sft": 67.2})) == []
    assert deliverable_warnings(guarded({"final": 50.0, "vanilla-kd": 60.0})) == []  # no SFT to lose to


def test_report_md_marks_the_deliverable_row_and_the_run_dir_points_to_it(tmp_path):
    r = guarded({"final": 55.8, "sft": 67.2})
    student = tmp_path / "baselines" / "sft"
    student.mkdir(parents=True)
    r["deliverable"]["dir"] = str(student)
    write_report(r, tmp_path)
    table = (tmp_path / "report.md").read_text()
    assert "| SFT on L (40 gold) — deliverable |" in table and "| MCKD-2 — final student |" in table
    assert f"Deliverable (`deliverable/` in the run dir, `mckd predict RUN_DIR`): **sft** — `{student}`" in table
    link = tmp_path / "deliverable"
    assert link.is_symlink() and str(link.readlink()) == "baselines/sft" and link.resolve() == student
    r["deliverable"] = choose_deliverable(
        {"final": 70.0, "sft": 67.2},
        {**DIRS, "final": str(tmp_path / "final")},
        "dev",
        vs_final={"sft": {"diff": -2.8, "ci95": [-9.0, 3.0]}},
    )
    write_report(r, tmp_path)  # a re-run that ships another candidate moves the pointer
    assert (
        str(link.readlink()) == "final"
        and "| MCKD-2 — final student — deliverable |" in (tmp_path / "report.md").read_text()
    )


def test_a_trained_students_log_line_shows_its_dev_f1_and_seconds_with_one_decimal():
    from mckd_core.report import trained_line

    metrics = {"train_rows": 11, "gold_rows": 3, "epochs": 2, "dev_f1": 68.18181818181819, "seconds": 12.3456}
    assert trained_line("stage 1 student 0", metrics) == (
        "stage 1 student 0: 11 rows (3 gold), kept epoch 2, dev F1 68.2, 12.3s"
    )
    assert "dev F1 —" in trained_line("sft", {**metrics, "dev_f1": None})


def test_report_md_shows_each_sets_teacher_tokens_and_what_the_cached_rows_once_cost():
    from mckd_core.teacher.annotation import token_entry, total_tokens

    tokens = {
        "unlabeled": token_entry(40, 30, (3000, 300, 30), (900, 90, 10)),
        "test": token_entry(20, 20, (0, 0, 0), (0, 0, 0)),  # a backend that reports no usage
    }
    r = report([[40.0, 40.0]], 40.0)
    r["teacher"]["tokens"] = {**tokens, "total": total_tokens(tokens)}
    assert r["teacher"]["tokens"]["total"]["prompt_tokens"] == 3000 and r["teacher"]["tokens"]["total"]["rows"] == 60
    lines = render_markdown(r).splitlines()
    assert "| unlabeled | 30 | 3000 | 300 | 10 | 900 | 90 |" in lines
    assert "| test | 20 | - | - | 0 | - | - |" in lines  # not reported is not 0
    assert "| **run** | 50 | 3000 | 300 | 10 | 900 | 90 |" in lines


def test_the_teacher_cost_line_speaks_of_cached_rows_only_when_there_are_some():
    from mckd_core.report import tokens_line
    from mckd_core.teacher.annotation import token_entry

    fresh = tokens_line({"unlabeled": token_entry(20, 20, (900, 80, 20), (0, 0, 0))})
    assert fresh == (
        "teacher: 20 rows sent (900 prompt + 80 completion tokens counted for 20 of them), 0 from the cache"
    )
    mixed = tokens_line(
        {"unlabeled": token_entry(20, 5, (200, 20, 5), (700, 60, 15)), "test": token_entry(4, 0, (0, 0, 0), (90, 8, 4))}
    )
    assert mixed.startswith("teacher: 5 rows sent (200 prompt + 20 completion tokens counted for 5 of them), 19 from")
    assert mixed.endswith(
        "(free this run; they cost 790 prompt + 68 completion tokens when generated, counted for 19 of them)"
    )
