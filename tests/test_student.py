"""Students learn: a T5 (encoder-decoder) and a decoder-only model each learn a toy mapping exactly."""

import json

import pytest
from toy_data import PAIRS

from mckd_core.config import StudentConfig
from mckd_core.student import TrainSpec, length_grouped_batches, micro_batch, predict, train


@pytest.mark.parametrize(("arch", "precision"), [("t5", "fp32"), ("llama", "fp32"), ("llama", "bf16")])
def test_student_learns_toy_mapping(tiny_models, tmp_path, arch, precision):
    """fp32 pinned (a 2-layer random T5 at lr 3e-3 gets 7 of 8 in bf16); bf16 autocast learns the same mapping, and
    selects and predicts it with bf16 weights."""
    out = tmp_path / arch
    spec = TrainSpec(
        model=tiny_models[arch],
        out_dir=str(out),
        task="text",
        train_inputs=list(PAIRS),
        train_targets=list(PAIRS.values()),
        dev_inputs=list(PAIRS),
        dev_targets=list(PAIRS.values()),
        seed=0,
        # best: the epoch that maps all 8 is kept and predicted with (the random 2-layer T5 ends at 6 of 8, and on 8
        # dev rows no earlier epoch beats the last beyond noise, so `last` would keep that).
        student=StudentConfig(
            epochs=60, batch_size=4, learning_rate=3e-3, max_target_tokens=16, precision=precision, epoch_choice="best"
        ),
    )
    metrics = train(spec)
    losses = [h["loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0] / 5
    assert metrics["dev_f1"] == 100.0
    assert metrics["arch"] == ("seq2seq" if arch == "t5" else "causal")
    assert (out / "model.safetensors").is_file() and json.loads((out / "metrics.json").read_text())["train_rows"] == 8
    assert predict(str(out), list(PAIRS), max_new_tokens=8, precision=precision) == list(PAIRS.values())


def test_generation_model_is_a_bf16_copy_only_where_training_is_bf16(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    from mckd_core.student import generation_model

    model, cpu = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32), torch.device("cpu")
    assert generation_model(model, cpu, "fp32") is model
    copy = generation_model(model, cpu, "bf16")
    assert copy is not model and next(copy.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the weights training goes on with are untouched
    assert all(t.dtype == torch.bfloat16 for t in [*copy.parameters(), *copy.buffers()] if t.is_floating_point())
    assert all(torch.equal(a.to(torch.bfloat16), b) for a, b in zip(model.parameters(), copy.parameters()))
    # SmolLM2 ties its LM head to the input embeddings: the copy keeps one shared bf16 tensor
    tied = AutoModelForCausalLM.from_config(
        model.config.__class__(**{**model.config.to_dict(), "tie_word_embeddings": True})
    )
    tied_copy = generation_model(tied, cpu, "bf16")
    assert tied_copy.get_input_embeddings().weight is tied_copy.get_output_embeddings().weight
    assert generation_model(copy, cpu, "bf16") is copy  # already bf16 (as `predict` loads it): no second copy


def test_training_is_seeded(tiny_models, tmp_path):
    def run(seed, name):
        spec = TrainSpec(
            model=tiny_models["t5"],
            out_dir=str(tmp_path / name),
            task="text",
            train_inputs=list(PAIRS),
            train_targets=list(PAIRS.values()),
            seed=seed,
            student=StudentConfig(epochs=2, batch_size=4, learning_rate=1e-3, select_on_dev=False),
        )
        return [h["loss"] for h in train(spec)["history"]]

    assert run(1, "a") == run(1, "b")
    assert run(1, "c") != run(2, "d")


def test_length_grouped_batches_cover_every_row_once():
    import random

    lengths = [random.Random(0).randint(1, 50) for _ in range(103)]
    batches = length_grouped_batches(lengths, 8, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(len(b) <= 8 for b in batches)


def test_oom_backoff_keeps_effective_batch_then_gives_up():
    student = StudentConfig(batch_size=8, grad_accum=2)
    assert [micro_batch(student, a) for a in (1, 2, 3, 4)] == [(8, 2), (4, 4), (2, 8), (1, 16)]
    with pytest.raises(RuntimeError, match="even with micro-batch 1"):
        micro_batch(student, 5)


def test_holds_student_trusts_unchanged_files_and_hashes_changed_ones(tiny_models, tmp_path, monkeypatch):
    import os
    import shutil

    from mckd_core import student

    out = tmp_path / "s"
    metrics = train(
        TrainSpec(
            model=tiny_models["t5"],
            out_dir=str(out),
            task="text",
            train_inputs=list(PAIRS),
            train_targets=list(PAIRS.values()),
            student=StudentConfig(epochs=1, batch_size=8, select_on_dev=False),
        )
    )
    weights = out / "model.safetensors"
    # Unchanged since the save: decided from size + mtime, without reading the weights.
    with monkeypatch.context() as m:
        m.setattr(student, "weights_fingerprint", lambda d: pytest.fail("re-hashed an unchanged student"))
        assert student.holds_student(out, metrics)
    # The same bytes with a new mtime (a plain copy): the full hash decides, and it matches.
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        shutil.copyfile(f, copy / f.name)
    assert metrics["weights_stat"] != student.weights_stat(copy) and student.holds_student(copy, metrics)
    # One flipped bit (same size, new mtime): not the student any more.
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(0, metrics["weights_stat"]["model.safetensors"][1] + 1))
    assert not student.holds_student(out, metrics)
    # Records written before weights_stat existed fall back to the hash.
    assert student.holds_student(copy, {k: v for k, v in metrics.items() if k != "weights_stat"})
    assert not student.holds_student(out, {k: v for k, v in metrics.items() if k != "weights_stat"})


def _toy_batch(model_dir):
    from mckd_core.student import _Encoder, load_tokenizer

    encoder = _Encoder(load_tokenizer(model_dir), False, 128, 16)
    return encoder.collate([encoder.example(x, y) for x, y in list(PAIRS.items())[:4]])


def test_answer_only_loss_equals_the_models_loss_and_gradients(tiny_models):
    """The LM head on answer tokens only gives the same loss and the same gradients as the full forward."""
    import torch
    from transformers import AutoModelForCausalLM

    from mckd_core.student import answer_only_loss, full_loss

    batch = _toy_batch(tiny_models["llama"])
    assert (batch["labels"] == -100).sum() > batch["labels"].numel() / 3  # prompts are a real share of the tokens
    grads = []
    for loss_fn in (full_loss, answer_only_loss):
        model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
        loss = loss_fn(model, batch)
        loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    assert abs(grads[0][0] - grads[1][0]) < 1e-5
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


def test_eager_attention_gives_the_sdpa_loss_and_gradients_and_generation_keeps_the_models_kernel(
    tiny_models, tmp_path
):
    """Students on a CPU train with eager attention (faster backward at short sequences): the same loss and gradients
    as SDPA on a padded batch; inside `attention_kernel` only, so dev selection and the saved model use SDPA."""
    import torch
    from transformers import AutoModelForCausalLM

    from mckd_core.student import answer_only_loss, attention_kernel, training_attention

    batch = _toy_batch(tiny_models["llama"])
    assert (batch["attention_mask"] == 0).any()  # padding: the mask is part of what both kernels must agree on
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    own = model.config._attn_implementation
    assert own == "sdpa"
    grads = []
    for kernel in (None, "eager"):
        with attention_kernel(model, kernel):
            assert model.config._attn_implementation == (kernel or own)
            loss = answer_only_loss(model, batch)
            loss.backward()
        grads.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
        model.zero_grad(set_to_none=True)
    assert model.config._attn_implementation == own
    assert abs(grads[0][0] - grads[1][0]) < 1e-5
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)
    assert (training_attention(torch.device("cpu"), "auto"), training_attention(torch.device("cuda"), "auto")) == (
        "eager",
        None,
    )
    assert training_attention(torch.device("cpu"), "sdpa") == "sdpa"

    spec = TrainSpec(
        model=tiny_models["llama"],
        out_dir=str(tmp_path / "s"),
        task="text",
        train_inputs=list(PAIRS),
        train_targets=list(PAIRS.values()),
        student=StudentConfig(epochs=1, batch_size=4, learning_rate=1e-3, select_on_dev=False),
    )
    assert train(spec)["attention"] == "eager"
    assert "eager" not in (tmp_path / "s" / "config.json").read_text()  # the saved student loads with its own kernel


def test_pick_loss_keeps_the_models_forward_where_its_head_is_more_than_linear(tiny_models):
    """A head with logit soft-capping (Gemma 2) fails the numeric check: its own forward is kept; T5 always."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, Gemma2Config, Gemma2ForCausalLM

    from mckd_core.student import answer_only_loss, full_loss, pick_loss

    batch = _toy_batch(tiny_models["llama"])
    llama = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    assert pick_loss(llama, batch, seq2seq=False) is answer_only_loss
    assert llama.training  # the check leaves the model in training mode
    torch.manual_seed(0)
    capped = Gemma2ForCausalLM(
        Gemma2Config(
            vocab_size=384,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            final_logit_softcapping=1.0,
            pad_token_id=0,
        )
    )
    with torch.no_grad():
        capped.lm_head.weight.mul_(50)  # logits well beyond the cap, so capping changes the loss
    assert pick_loss(capped, batch, seq2seq=False) is full_loss
    t5 = AutoModelForSeq2SeqLM.from_pretrained(tiny_models["t5"])
    assert pick_loss(t5, batch, seq2seq=True) is full_loss


def test_metrics_say_where_the_seconds_went(tiny_models, tmp_path):
    spec = TrainSpec(
        model=tiny_models["llama"],
        out_dir=str(tmp_path / "s"),
        task="text",
        train_inputs=list(PAIRS),
        train_targets=list(PAIRS.values()),
        dev_inputs=list(PAIRS)[:2],
        dev_targets=list(PAIRS.values())[:2],
        student=StudentConfig(epochs=2, batch_size=4, max_target_tokens=8),
    )
    metrics = train(spec)
    phases = metrics["phases"]
    assert {"load", "forward", "backward", "optimizer", "dev_select", "save", "other"} <= set(phases)
    assert all(phases[p] > 0 for p in ("load", "forward", "backward", "optimizer", "dev_select", "save"))
    assert abs(sum(phases.values()) - metrics["seconds"]) < 0.01
    assert metrics["loss_path"] == "answer-only head"
    assert metrics["matmul_gflops_per_s"] > 0 and 0 < metrics["flop_utilization"] < 1.5
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["phases"] == phases


def test_precision_auto_follows_the_hardware(monkeypatch):
    """`auto` trains in bf16 exactly where the CPU multiplies bf16 natively; explicit settings win everywhere."""
    import torch

    from mckd_core import student

    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(student, "native_bf16_cpu", lambda native=native: native)
        assert student.uses_bf16(cpu, "auto") is native
        assert student.uses_bf16(cpu, "bf16") and not student.uses_bf16(cpu, "fp32")


@pytest.mark.parametrize(
    ("text", "done"),
    [
        ("dog\nInput: x", True),
        ("dog", False),
        ("dog \r\n", True),
        ("\n\n  dog", False),
        ("  \n dog\n", True),
        ("", False),
        ("dog\u2028more", True),
    ],
)
def test_first_line_done_means_the_kept_line_is_whole(text, done):
    from mckd_core.student import first_line_done

    assert first_line_done(text) is done


def test_generation_stops_each_row_after_its_first_line_with_the_same_outputs(tiny_models, tmp_path, monkeypatch):
    """A student that goes on past its answer with a new line (as ones without a learned EOS do) is stopped there, and
    the kept first lines are what decoding to max_new_tokens gives."""
    import torch
    from transformers import AutoModelForCausalLM

    from mckd_core import student
    from mckd_core.student import causal_prompt, generate, load_tokenizer

    rambling = {x: f"{y}\nInput: {x} {x} {x} {x} and so on" for x, y in PAIRS.items()}
    out = tmp_path / "rambler"
    train(
        TrainSpec(
            model=tiny_models["llama"],
            out_dir=str(out),
            task="text",
            train_inputs=list(rambling),
            train_targets=list(rambling.values()),
            student=StudentConfig(
                epochs=60, batch_size=4, learning_rate=3e-3, max_target_tokens=48, select_on_dev=False, precision="fp32"
            ),
        )
    )
    model, tok = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), load_tokenizer(str(out))
    calls = []

    class Counting(student.FirstLineDone):
        def __call__(self, input_ids, scores, **kwargs):
            calls.append(1)
            return super().__call__(input_ids, scores, **kwargs)

    monkeypatch.setattr(student, "FirstLineDone", Counting)
    kept = generate(model, tok, False, list(PAIRS), 8, 40, torch.device("cpu"), "fp32")
    tok.padding_side = "left"
    enc = tok([causal_prompt(x) for x in PAIRS], return_tensors="pt", padding=True, add_special_tokens=False)
    full = model.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
    reference = [
        t.strip().splitlines()[0].strip()
        for t in tok.batch_decode(full[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    ]
    assert kept == reference == list(PAIRS.values())
    assert len(calls) < 40 // 2  # "dog\n" is 4 bytes: decoding ended long before max_new_tokens


def test_epoch_choice_last_keeps_an_earlier_epoch_only_where_it_wins_beyond_noise():
    """On 20 dev rows, an earlier epoch one row better is noise: `best` keeps it, `last` keeps the last epoch; one
    right on every row where the last is wrong on most is kept by both."""
    import numpy as np

    from mckd_core.formats import get_format
    from mckd_core.student import beats_last_epoch

    fmt = get_format("slots")  # micro F1 over (right, predicted, gold) per row
    row = lambda right: (right, 1, 1)  # noqa: E731  (one chunk predicted, one gold)
    last = np.array([row(1)] * 15 + [row(0)] * 5, dtype=float)  # F1 75
    one_better = np.array([row(1)] * 16 + [row(0)] * 4, dtype=float)  # F1 80
    far_better = np.array([row(1)] * 20, dtype=float)
    much_worse_last = np.array([row(1)] * 4 + [row(0)] * 16, dtype=float)
    assert beats_last_epoch("best", fmt, one_better, last)
    assert not beats_last_epoch("last", fmt, one_better, last)
    assert beats_last_epoch("last", fmt, far_better, much_worse_last)
    assert beats_last_epoch("best", fmt, far_better, much_worse_last)


def test_a_student_with_epoch_choice_last_keeps_its_last_epoch_when_no_earlier_one_wins_beyond_noise(
    tiny_models, tmp_path
):
    from mckd_core.config import StudentConfig
    from mckd_core.student import TrainSpec, train

    spec = TrainSpec(
        model=tiny_models["t5"],
        out_dir=str(tmp_path / "student"),
        task="text",
        train_inputs=list(PAIRS),
        train_targets=list(PAIRS.values()),
        dev_inputs=["cat", "sun"],  # two rows: no difference between epochs is beyond noise
        dev_targets=["dog", "moon"],
        student=StudentConfig(epochs=3, batch_size=2, learning_rate=3e-3, max_target_tokens=8, epoch_choice="last"),
    )
    metrics = train(spec)
    assert metrics["epochs"] == 3 and metrics["dev_f1"] == metrics["history"][-1]["dev_f1"]
