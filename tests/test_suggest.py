"""`mckd suggest`: which rows of U to label next, from a run's own disagreement; the labels come back into L."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.errors import MckdInputError
from mckd_core.suggest import (
    label_studio_config,
    label_studio_tasks,
    load_run,
    merge_labeled,
    rank,
    read_labeled,
    suggest,
    write_label_studio,
    write_suggestions,
)

runner = CliRunner()


def label_rows(rows: list[tuple], source: str, stage: int, logprobs: list[float] | None = None) -> pd.DataFrame:
    """Label rows as a run writes them: (id, input, label or None for invalid, error)."""
    df = pd.DataFrame(
        {
            "id": [r[0] for r in rows],
            "input": [r[1] for r in rows],
            "target": [None] * len(rows),
            "label": [r[2] for r in rows],
            "raw": [r[2] or "???" for r in rows],
            "valid": [r[2] is not None for r in rows],
            "error": [r[3] if len(r) > 3 else (None if r[2] is not None else "empty output") for r in rows],
            "source": source,
            "stage": stage,
        }
    )
    if logprobs is not None:
        df["logprob"] = logprobs
    return df


def make_run(
    root: Path,
    task: str,
    labeled: pd.DataFrame,
    labelings: dict[str, pd.DataFrame],
    test: pd.DataFrame | None = None,
) -> Path:
    """A hand-made finished run dir: its sets and U's labelings where report.json `files` says."""
    run = root / "run"
    (run / "data").mkdir(parents=True)
    files = {"labeled": str(run / "data" / "labeled.parquet"), "unlabeled": str(run / "data" / "unlabeled.parquet")}
    labeled.to_parquet(files["labeled"])
    first = next(iter(labelings.values()))
    first[["id", "input", "target"]].to_parquet(files["unlabeled"])
    if test is not None:
        files["test"] = str(run / "data" / "test.parquet")
        test.to_parquet(files["test"])
    files["labels_of_unlabeled"] = {}
    for name, df in labelings.items():
        files["labels_of_unlabeled"][name] = str(run / f"{name}.parquet")
        df.to_parquet(files["labels_of_unlabeled"][name])
    config = {"run_name": "hand-made", "data": {"task": task, "labeled": "L", "unlabeled": "U"}}
    (run / "report.json").write_text(json.dumps({"config": config, "files": files}))
    return run


def stages(rows_by_stage: dict[str, list[tuple]], logprobs: list[float] | None = None) -> dict[str, pd.DataFrame]:
    return {
        name: label_rows(rows, name, k, logprobs if name == "final" else None)
        for k, (name, rows) in enumerate(rows_by_stage.items())
    }


L_TEXT = pd.DataFrame({"id": ["l0", "l1"], "input": ["cat", "sun"], "target": ["dog", "moon"]})


def test_a_row_whose_labels_changed_across_stages_ranks_above_a_stable_one(tmp_path):
    same = [("u0", "red hot", "blue cold"), ("u1", "big day", "small night")]
    run = make_run(
        tmp_path,
        "text",
        L_TEXT,
        stages(
            {
                "teacher": same,
                "stage-1": [("u0", "red hot", "blue cold"), ("u1", "big day", "small day")],
                "stage-2": [("u0", "red hot", "blue cold"), ("u1", "big day", "large night")],
                "final": same,
            }
        ),
    )
    _, picked = suggest(run, 2)
    assert [s.id for s in picked] == ["u1", "u0"]
    assert picked[0].score > picked[1].score == 0.0
    assert "changed 3 times" in picked[0].why and "stage-1, stage-2, final" in picked[0].why
    assert picked[1].why == "its labels agree throughout"
    # The pre-annotation is the final student's label.
    assert (picked[0].label, picked[0].label_from) == ("small night", "final")


def test_an_invalid_teacher_output_and_an_unsure_final_student_raise_a_row(tmp_path):
    rows = [("u0", "red hot", "blue cold"), ("u1", "big day", "small night"), ("u2", "up yes", "down no")]
    teacher = [rows[0], ("u1", "big day", None, "empty output"), ("u2", "up yes", "down no", "repaired")]
    run = make_run(
        tmp_path,
        "text",
        L_TEXT,
        stages({"teacher": teacher, "stage-1": rows, "final": rows}, logprobs=[-0.01, -0.01, -2.0]),
    )
    picked = {s.id: s for s in suggest(run, 3)[1]}
    assert picked["u1"].score > picked["u0"].score and picked["u2"].score > picked["u0"].score
    assert "invalid (empty output)" in picked["u1"].why and "repaired" in picked["u2"].why
    assert "mean token probability is 0.14" in picked["u2"].why
    # Where the teacher wrote nothing valid, the pre-annotation comes from the latest labeling that did.
    assert picked["u1"].label == "small night"


def test_a_partial_slot_change_counts_less_than_a_whole_one(tmp_path):
    a, b = "flights from boston to dallas", "fares from denver to miami"
    teacher = [
        ("u0", a, "flights from [fromloc boston] to [toloc dallas]"),
        ("u1", b, "fares from [fromloc denver] to [toloc miami]"),
    ]
    final = [("u0", a, "flights from [fromloc boston] to dallas"), ("u1", b, "fares from denver to miami")]
    labeled = pd.DataFrame({"id": ["l0"], "input": ["show me flights"], "target": ["show me flights"]})
    run = make_run(tmp_path, "slots", labeled, stages({"teacher": teacher, "final": final}))
    picked = {s.id: s for s in suggest(run, 2)[1]}
    assert 0 < picked["u0"].score < picked["u1"].score == 1.0


def test_duplicates_are_not_both_picked(tmp_path):
    changing = {
        "teacher": [
            ("u0", "what flights go to boston", "a"),
            ("u1", "What  flights go to Boston", "a"),  # the same input, normalised
            ("u2", "what flights go to boston today", "a"),  # a near-duplicate (Jaccard 5/6)
            ("u3", "cheapest fare to denver", "a"),
        ],
        "final": [
            ("u0", "what flights go to boston", "b"),
            ("u1", "What  flights go to Boston", "b"),
            ("u2", "what flights go to boston today", "b"),
            ("u3", "cheapest fare to denver", "b"),
        ],
    }
    run = make_run(tmp_path, "text", L_TEXT, stages(changing))
    _, picked = suggest(run, 4)
    assert [s.id for s in picked] == ["u0", "u3"]


def test_rows_already_in_l_or_t_are_never_suggested(tmp_path):
    labeled = pd.DataFrame(
        {"id": ["l0", "l1"], "input": ["cat", "list flights to denver please"], "target": ["x", "y"]}
    )
    test = pd.DataFrame({"id": ["t0"], "input": ["sun moon"], "target": ["x"]})
    names = ["l0", "u1", "u2", "u3", "u4"]
    inputs = ["cat", "Sun  moon", "list flights to denver please now", "red hot", "big day"]
    run = make_run(
        tmp_path,
        "text",
        labeled,
        stages(
            {
                "teacher": [(i, x, "a") for i, x in zip(names, inputs)],
                "final": [(i, x, "b") for i, x in zip(names, inputs)],
            }
        ),
        test=test,
    )
    # l0: L's id; u1: T's input; u2: a near-duplicate of an L row; u4: in a newer L given with exclude.
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"id": "u4", "input": "big day", "target": "b"}) + "\n")
    _, picked = suggest(run, 50, exclude=[newer])
    assert [s.id for s in picked] == ["u3"]
    ranked = rank(load_run(run))
    assert {s.id for s in ranked} == {"u2", "u3", "u4"}  # the exact matches are out before ranking


SLOT_L = pd.DataFrame(
    {"id": ["l0"], "input": ["show flights to boston"], "target": ["show flights to [toloc.city_name boston]"]}
)


def slot_run(tmp_path) -> Path:
    inputs = {"u0": "flights from  denver to miami", "u1": "fares to new york city", "u2": "hello there"}
    teacher = [
        ("u0", inputs["u0"], "flights from [fromloc.city_name denver] to [toloc.city_name miami]"),
        ("u1", inputs["u1"], "fares to new york city"),
        ("u2", inputs["u2"], None),
    ]
    final = [
        ("u0", inputs["u0"], "flights from [fromloc.city_name denver] to miami"),
        ("u1", inputs["u1"], "fares to [toloc.city_name new york city]"),
        ("u2", inputs["u2"], None),
    ]
    return make_run(tmp_path, "slots", SLOT_L, stages({"teacher": teacher, "final": final}))


def annotate_like_a_human(tasks: list[dict], edits: dict[str, list[dict]]) -> list[dict]:
    """A Label Studio JSON export: each task accepted as pre-annotated, or its result replaced by `edits`."""
    exported = []
    for k, task in enumerate(tasks):
        result = edits.get(task["data"]["id"], task["predictions"][0]["result"])
        exported.append(
            {
                "id": 100 + k,
                "data": task["data"],
                "annotations": [
                    {"id": 1, "result": [], "was_cancelled": True},
                    {"id": 2, "result": result, "was_cancelled": False},
                ],
                "predictions": task["predictions"],
            }
        )
    return exported


def test_label_studio_export_round_trip_keeps_ids_inputs_and_labels(tmp_path):
    run_dir = slot_run(tmp_path)
    run, picked = suggest(run_dir, 3)
    tasks_path, config_path = write_label_studio(run, picked, tmp_path / "ls" / "tasks.json")
    tasks = json.loads(tasks_path.read_text())
    assert [t["data"]["id"] for t in tasks] == [s.id for s in picked]
    u0 = next(t for t in tasks if t["data"]["id"] == "u0")
    (span,) = u0["predictions"][0]["result"]
    assert span["type"] == "labels" and span["value"]["labels"] == ["fromloc.city_name"]
    assert u0["data"]["text"][span["value"]["start"] : span["value"]["end"]] == span["value"]["text"] == "denver"
    config = config_path.read_text()
    assert '<Labels name="label" toName="text">' in config
    assert all(f'<Label value="{k}"/>' in config for k in ("fromloc.city_name", "toloc.city_name"))
    # The human corrects u0 (miami is the destination), accepts u1, and labels u2 (no pre-annotation).
    text0 = u0["data"]["text"]
    fix = {
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": text0.index("miami"), "end": text0.index("miami") + 5, "labels": ["toloc.city_name"]},
    }
    export = tmp_path / "export.json"
    export.write_text(json.dumps(annotate_like_a_human(tasks, {"u0": [span, fix], "u2": []})))
    labeled = tmp_path / "labeled.parquet"
    SLOT_L.to_parquet(labeled)
    new = read_labeled(export, load_run(run_dir).task)
    merged = merge_labeled(labeled, new, export)
    got = merged.set_index("id")
    assert list(merged["id"]) == ["l0", *[s.id for s in picked]]
    assert got.loc["u0", "input"] == "flights from  denver to miami"  # inputs as they were, spaces and all
    assert got.loc["u0", "target"] == "flights from [fromloc.city_name denver] to [toloc.city_name miami]"
    assert got.loc["u1", "target"] == "fares to [toloc.city_name new york city]"
    assert got.loc["u2", "target"] == "hello there"
    assert got.loc["l0", "target"] == SLOT_L["target"][0]


def test_textarea_tasks_and_jsonl_csv_files_round_trip(tmp_path):
    rows = [("u0", "red hot", "blue cold"), ("u1", "big day", "small night")]
    run_dir = make_run(
        tmp_path, "text", L_TEXT, stages({"teacher": rows, "final": [rows[0], ("u1", "big day", "large")]})
    )
    run, picked = suggest(run_dir, 2)
    tasks = label_studio_tasks(run, picked)
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"text": [picked[0].label]}
    assert "<TextArea" in label_studio_config(run, picked)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(annotate_like_a_human(tasks, {})))
    from_ls = read_labeled(export, "text")
    assert list(zip(from_ls["id"], from_ls["input"], from_ls["target"])) == [(s.id, s.input, s.label) for s in picked]
    for suffix in (".jsonl", ".csv"):
        path = write_suggestions(picked, tmp_path / f"s{suffix}")
        assert read_labeled(path, "text").equals(from_ls)


def test_merge_labels_rejects_an_id_already_in_l_and_an_invalid_label_naming_the_row(tmp_path):
    labeled = tmp_path / "labeled.parquet"
    SLOT_L.to_parquet(labeled)
    again = pd.DataFrame({"id": ["l0"], "input": ["show flights to boston"], "target": ["show flights to boston"]})
    with pytest.raises(MckdInputError, match=r"1 id\(s\) already in .*labeled.parquet \(e.g. 'l0'\)"):
        merge_labeled(labeled, again, "x.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        {"id": ["u0", "u1"], "input": ["to boston", "to miami"], "label": ["to boston", "to [city miami"]}
    ).to_csv(bad, index=False)
    with pytest.raises(MckdInputError, match=r"bad.csv: row 1 \(id 'u1'\): field 'target' is not a valid slots target"):
        read_labeled(bad, "slots")


def test_cli_suggests_and_merges_the_labels_back(tmp_path):
    run_dir = slot_run(tmp_path)
    out, ls = tmp_path / "next.csv", tmp_path / "next-ls.json"
    result = runner.invoke(app, ["suggest", str(run_dir), "--n", "2", "--out", str(out), "--label-studio", str(ls)])
    assert result.exit_code == 0, result.output
    suggested = pd.read_csv(out)
    assert len(suggested) == 2 and ls.is_file() and ls.with_suffix(".xml").is_file()
    labeled, unlabeled = tmp_path / "labeled.parquet", tmp_path / "unlabeled.parquet"
    SLOT_L.to_parquet(labeled)
    pd.read_parquet(run_dir / "data" / "unlabeled.parquet").to_parquet(unlabeled)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(annotate_like_a_human(json.loads(ls.read_text()), {})))
    new_l, new_u = tmp_path / "new-labeled.parquet", tmp_path / "new-unlabeled.parquet"
    args = ["data", "merge-labels", "--labeled", str(labeled), "--from", str(export), "--run", str(run_dir)]
    args += ["--out", str(new_l), "--unlabeled", str(unlabeled), "--unlabeled-out", str(new_u)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert list(pd.read_parquet(new_l)["id"]) == ["l0", *suggested["id"]]
    assert set(pd.read_parquet(new_u)["id"]) == {"u0", "u1", "u2"} - set(suggested["id"])
    # A second merge of the same export is refused: those ids are in L now.
    again = ["data", "merge-labels", "--labeled", str(new_l), "--from", str(export), "--task", "slots"]
    result = runner.invoke(app, [*again, "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "already in" in result.output


def test_suggest_on_a_run_without_files_says_how_to_get_them(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"config": {"data": {"task": "text"}}}))
    with pytest.raises(MckdInputError, match="run `mckd run` on the same config again"):
        suggest(tmp_path, 5)


def test_the_suggest_flow_publishes_its_rows_as_a_table_artifact(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.suggest import suggest_flow

    run_dir = slot_run(tmp_path)
    rows = suggest_flow(str(run_dir), n=2)

    async def latest():
        async with get_client() as client:
            (found,) = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mckd-suggest"])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            return found

    artifact = asyncio.run(latest())
    assert artifact.type == "table"
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [r["id"] for r in data] == [r["id"] for r in rows] and len(rows) == 2
    assert {"input", "label", "score", "why"} <= set(data[0])


def test_predict_gives_each_outputs_mean_token_logprob_without_changing_the_outputs(tiny_models):
    """The final student's sureness that `suggest` ranks by: the same outputs, one log-prob per row whatever its
    batch, and a model trained on the rows surer of them than a random-init one."""
    from toy_data import PAIRS

    from mckd_core.student import predict

    inputs = ["cat", *list(PAIRS)[1:], "zebra crossing", "cat"]
    means = {}
    for arch in ("teacher", "t5"):  # the teacher: a causal LM trained on PAIRS; t5: random init, seq2seq
        logprobs: list[float] = []
        outputs = predict(tiny_models[arch], inputs, batch_size=3, max_new_tokens=6, logprobs=logprobs)
        assert outputs == predict(tiny_models[arch], inputs, batch_size=3, max_new_tokens=6)
        assert len(logprobs) == len(inputs) and all(-100 <= lp <= 0 for lp in logprobs)
        assert logprobs[-1] == pytest.approx(logprobs[0], abs=1e-2)  # the same input, padded otherwise in its batch
        means[arch] = sum(logprobs[: len(PAIRS)]) / len(PAIRS)
    assert means["teacher"] > means["t5"]


def test_the_chosen_tokens_logprobs_are_what_transformers_computes_from_the_full_scores(tiny_models):
    """ChosenLogprobs keeps one float per row and step, not the vocabulary's scores; the values are the same."""
    from transformers import AutoModelForCausalLM

    from mckd_core.student import ChosenLogprobs, causal_prompt, load_tokenizer, mean_logprobs

    tok = load_tokenizer(tiny_models["teacher"])
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_models["teacher"])
    enc = tok([causal_prompt("cat"), causal_prompt("zebra crossing")], return_tensors="pt", padding=True)
    chosen = ChosenLogprobs()
    out = model.generate(
        **enc,
        max_new_tokens=5,
        do_sample=False,
        num_beams=1,
        pad_token_id=tok.pad_token_id,
        logits_processor=[chosen],
        output_scores=True,
        return_dict_in_generate=True,
    )
    reference = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    assert chosen.table().shape == reference.shape
    # Equal through each row's end (past it a finished row is padded, which greedy decoding did not choose).
    ours, theirs = mean_logprobs(tok, out.sequences, chosen.table()), mean_logprobs(tok, out.sequences, reference)
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_an_outputs_confidence_ends_at_an_end_token_of_the_generation_config_too(tiny_models):
    """A chat model's generation config often ends on tokens its tokenizer's eos is not: the mean stops there too."""
    import torch
    from transformers import GenerationConfig

    from mckd_core.student import end_tokens, load_tokenizer, mean_logprobs

    tok = load_tokenizer(tiny_models["teacher"])
    ends = end_tokens(tok, GenerationConfig(eos_token_id=[50, 51]))
    assert {50, 51, tok.eos_token_id, tok.pad_token_id} == ends
    sequences, steps = torch.tensor([[60, 61, 50, 62]]), torch.tensor([[-1.0, -1.0, -9.0]])  # prompt 60; then 3 steps
    assert mean_logprobs(tok, sequences, steps, ends) == [pytest.approx(-1.0)]  # through the end token 50
    assert mean_logprobs(tok, sequences, steps) == [pytest.approx(-11.0 / 3)]  # the tokenizer's ends alone
