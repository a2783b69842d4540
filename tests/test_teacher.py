"""Teacher: prompts, BM25 demos, shared-prefix KV reuse, per-row response cache."""

from __future__ import annotations

import pandas as pd
import pytest

from mckd_core.formats import get_format
from mckd_core.prompting import Demo, DemoSelector, build_prompt, extract_output
from mckd_core.teacher import GenParams, ResponseCache, TransformersTeacher, annotate, shared_prefix

DEMOS = [
    Demo("a", "flights from boston", "x"),
    Demo("b", "cheapest fare to denver", "y"),
    Demo("c", "ground transport in dallas", "z"),
]


def test_random_fixed_demos_are_one_shared_prefix():
    selector = DemoSelector(DEMOS, 2, "random-fixed", seed=3)
    first, second = (build_prompt("Do it.", selector.select(q), q) for q in ("to atlanta", "from miami"))
    assert first.demo_ids == second.demo_ids
    assert first.text.rsplit("Input:", 1)[0] == second.text.rsplit("Input:", 1)[0]


def test_bm25_picks_the_most_similar_demo_last():
    selector = DemoSelector(DEMOS, 2, "bm25", seed=0)
    assert selector.select("what is the cheapest fare to denver")[-1].id == "b"
    assert selector.select("ground transport options in dallas")[-1].id == "c"


def test_extract_output_takes_the_first_answer_line():
    assert extract_output("\n Output: from [a b]\nInput: next") == "from [a b]"


def test_shared_prefix_leaves_every_row_a_token():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert shared_prefix([[1, 2], [1, 2]]) == [1]


def test_prefix_reuse_gives_the_same_greedy_outputs(tiny_models):
    teacher = TransformersTeacher(tiny_models["teacher"], chat=False, batch_size=3)
    demos = [Demo("d1", "cat", "dog"), Demo("d2", "sun", "moon")]
    prompts = [build_prompt("Map each word to its partner word.", demos, q) for q in ("red", "hot day", "up")]
    params = GenParams(max_new_tokens=6)
    batched = teacher.generate(prompts, params)
    alone = []
    teacher.batch_size = 1
    for prompt in prompts:  # one prompt at a time: shared_prefix leaves it a single-token suffix, no padding
        ids = teacher.tokenizer(teacher.render(prompt), add_special_tokens=False, return_tensors="pt")
        out = teacher.model.generate(
            **ids, max_new_tokens=6, do_sample=False, pad_token_id=teacher.tokenizer.pad_token_id
        )
        alone.append(teacher.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    assert batched == alone


def test_the_transformers_teacher_counts_each_rows_prompt_and_generated_tokens(tiny_models):
    """Batched rows end at different steps; each row's count stops at its own end of sequence, as it would alone."""
    teacher = TransformersTeacher(tiny_models["teacher"], chat=False, batch_size=3)
    demos = [Demo("d1", "cat", "dog"), Demo("d2", "sun", "moon")]
    prompts = [build_prompt("Map each word to its partner word.", demos, q) for q in ("red", "hot day", "up")]
    counted = teacher.generate_with_usage(prompts, GenParams(max_new_tokens=12))
    alone = []
    for prompt in prompts:
        ids = teacher.tokenizer(teacher.render(prompt), add_special_tokens=False, return_tensors="pt")
        out = teacher.model.generate(
            **ids, max_new_tokens=12, do_sample=False, pad_token_id=teacher.tokenizer.pad_token_id
        )
        alone.append((ids["input_ids"].shape[1], out.shape[1] - ids["input_ids"].shape[1]))
    assert [tuple(usage) for _, usage in counted] == alone
    assert len({prompt for prompt, _ in alone}) == 3  # the rows' prompts differ: a shared count would show
    assert min(generated for _, generated in alone) < 12  # some row ended before the limit: its padding is not counted


class CountingBackend:
    """Test double at the backend edge: answers with the input words, counts what it was asked."""

    model_key = "counting@1"

    def __init__(self, answer=lambda prompt: prompt.messages[-1]["content"]):
        self.calls, self.answer = 0, answer

    def generate(self, prompts, params, progress=None):
        self.calls += len(prompts)
        return [self.answer(p) for p in prompts]


def run(rows, backend, cache):
    demos = [Demo("d", "from boston", "from [fromloc.city_name boston]")]
    return annotate(
        pd.DataFrame({"id": [str(i) for i in range(len(rows))], "input": rows, "target": None}),
        demos,
        get_format("slots"),
        backend,
        cache,
        k=1,
        selection="random-fixed",
        seed=0,
        params=GenParams(32),
        chat=True,
    )


def test_cache_sends_only_missing_rows(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    backend = CountingBackend()
    labels, stats = run(["to dallas", "from ohio"], backend, cache)
    assert backend.calls == 2 and stats.requested == 2 and len(labels) == 2
    _, stats = run(["to dallas", "from ohio"], backend, cache)
    assert backend.calls == 2 and stats.cached == 2
    _, stats = run(["to dallas", "from ohio", "on monday"], backend, cache)
    assert backend.calls == 3 and stats.requested == 1


def test_invalid_outputs_are_flagged_not_dropped(tmp_path):
    backend = CountingBackend(answer=lambda p: "[broken")
    labels, _ = run(["to dallas", "from ohio"], backend, ResponseCache(tmp_path / "c.sqlite"))
    assert len(labels) == 2 and not labels["valid"].any() and labels["label"].isna().all()
    assert labels["error"].str.contains("unclosed").all()


def test_invalid_outputs_are_not_cached_as_successes_when_sampling(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    backend = CountingBackend(
        answer=lambda p: "[broken" if "ohio" in p.messages[-1]["content"] else p.messages[-1]["content"]
    )
    demos = [Demo("d", "from boston", "from [fromloc.city_name boston]")]
    rows = pd.DataFrame({"id": ["1", "2"], "input": ["to dallas", "from ohio"], "target": None})
    for _ in range(2):
        annotate(
            rows,
            demos,
            get_format("slots"),
            backend,
            cache,
            k=1,
            selection="random-fixed",
            seed=0,
            params=GenParams(32, temperature=0.7),
            chat=True,
        )
    assert backend.calls == 3  # the valid row once, the invalid row on both runs


@pytest.mark.parametrize(
    ("precision", "native", "dtype"),
    [("auto", True, "bfloat16"), ("auto", False, "float32"), ("fp32", True, "float32"), ("bf16", False, "bfloat16")],
)
def test_teacher_precision_picks_the_weights_dtype(tiny_models, monkeypatch, precision, native, dtype):
    """`auto` loads bf16 weights exactly where the CPU has native bf16; they still generate greedy text."""
    import torch

    from mckd_core import student

    monkeypatch.setattr(student, "native_bf16_cpu", lambda: native)
    monkeypatch.setattr(student, "pick_device", lambda: torch.device("cpu"))  # a CUDA host would never ask the CPU
    teacher = TransformersTeacher(tiny_models["teacher"], chat=False, batch_size=2, precision=precision)
    assert str(teacher.model.dtype) == f"torch.{dtype}"
    prompts = [build_prompt("Map each word to its partner word.", [Demo("d1", "cat", "dog")], q) for q in ("red", "up")]
    assert all(isinstance(text, str) for text in teacher.generate(prompts, GenParams(max_new_tokens=4)))


def test_corrected_demo_target_is_asked_again_only_for_the_rows_whose_prompt_showed_it(tmp_path):
    """The row cache keys on each demo's input and target: ids hash only the input, so they miss a corrected label."""
    cache, backend = ResponseCache(tmp_path / "c.sqlite"), CountingBackend()
    rows = pd.DataFrame(
        {"id": ["1", "2"], "input": ["flights from boston", "ground transport in dallas"], "target": None}
    )

    def annotate_with(demos):
        return annotate(
            rows,
            demos,
            get_format("slots"),
            backend,
            cache,
            k=1,
            selection="bm25",
            seed=0,
            params=GenParams(32),
            chat=True,
        )[1]

    boston = Demo("b", "from boston", "from [fromloc.city_name boston]")
    fare = Demo("f", "cheapest fare", "cheapest fare")
    dallas = Demo("d", "in dallas", "in dallas")
    assert annotate_with([boston, fare, dallas]).requested == 2
    corrected = Demo("d", "in dallas", "in [city_name dallas]")  # same input, so the same content-hash id
    stats = annotate_with([boston, fare, corrected])
    assert (stats.requested, stats.cached, backend.calls) == (1, 1, 3)
    assert annotate_with([boston, fare, corrected]).requested == 0


def test_the_transformers_teachers_weights_are_freed_when_the_teacher_phase_ends(tiny_models):
    """Students train after the teacher phase: the teacher's weights must not stay in memory beside them."""
    import gc
    import weakref

    from mckd_core.config import TeacherConfig
    from mckd_core.steps import teacher_backend, teacher_session

    cfg = TeacherConfig(model=tiny_models["teacher"], chat=False, batch_size=2)
    prompts = [build_prompt("Map each word to its partner word.", [Demo("d1", "cat", "dog")], "red")]
    with teacher_session():
        backend = teacher_backend(cfg)
        before = backend.generate(prompts, GenParams(max_new_tokens=4))
        weights = weakref.ref(backend.model)
    gc.collect()
    assert teacher_backend(cfg) is backend and backend.model is None and weights() is None
    assert backend.generate(prompts, GenParams(max_new_tokens=4)) == before  # a later phase loads them again


def test_the_vllm_offline_teacher_counts_the_engines_prompt_and_output_token_ids(tiny_models):
    from types import SimpleNamespace

    from mckd_core.config import TeacherConfig
    from mckd_core.teacher.base import Usage
    from mckd_core.teacher.vllm_offline import OfflineVLLMTeacher

    class Engine:  # what vllm.LLM.generate returns: RequestOutput-like rows (vLLM itself is not needed here)
        def generate(self, texts, sampling, use_tqdm):
            answer = SimpleNamespace(text="x", token_ids=[7, 8])
            return [SimpleNamespace(prompt_token_ids=list(range(len(t))), outputs=[answer]) for t in texts]

    teacher = OfflineVLLMTeacher(TeacherConfig(backend="vllm-offline", model=tiny_models["teacher"], chat=False))
    teacher._llm, teacher._sampling = Engine(), lambda params: None
    prompts = [build_prompt("Map.", [], q) for q in ("a", "bbbb")]
    assert teacher.generate_with_usage(prompts, GenParams()) == [("x", Usage(len(p.text), 2)) for p in prompts]
