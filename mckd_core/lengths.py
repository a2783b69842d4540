"""Over-long inputs and gold targets, counted before any model loads: each model's own tokenizer (never its weights)
over the prompt it will see.

Students cut a prompt at `student.max_input_tokens` and a target at `student.max_target_tokens` (they learn it cut,
and generate no more tokens than that for dev selection and scores). A vLLM teacher refuses (or cuts the answer of)
a prompt that leaves no room for `teacher.max_new_tokens` within `teacher.vllm.max_model_len`; the teacher is
checked only where that length is set and mckd runs the engine (a managed server, vllm-offline): the context of an
external server or of the transformers backend is not known here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .config import RunConfig, StudentConfig, TeacherConfig, run_format
from .errors import MckdInputError
from .models import resolve_model, unconverted_gguf
from .prompting import Demo, Prompt
from .student import causal_prompt, is_seq2seq, load_tokenizer
from .teacher.annotation import few_shot_prompts


@dataclass
class Overlong:
    """The rows of each set whose prompt is longer than `limit` tokens; `named`: the limit in config terms."""

    named: str
    limit: int
    rows: dict[str, list[int]]
    consequence: str
    what: str = "inputs"

    def summary(self) -> dict:
        return {"limit": self.limit, "rows": {name: len(rows) for name, rows in self.rows.items()}}

    def message(self, sets: dict[str, pd.DataFrame]) -> str | None:
        over = {name: rows for name, rows in self.rows.items() if rows}
        if not over:
            return None
        name, rows = next(iter(over.items()))
        counts = ", ".join(f"{len(rows)} of {len(sets[name])} {name}" for name, rows in over.items())
        return (
            f"over-long {self.what}: {counts} row(s) are longer than {self.named} "
            f"(first: {name} row {rows[0]}, id {sets[name]['id'].iloc[rows[0]]!r}); {self.consequence}"
        )


def check_lengths(cfg: RunConfig, sets: dict[str, pd.DataFrame]) -> tuple[dict, list[str]]:
    """report.json's `overlong` ({"student": {"limit", "rows": {set: count}}, "teacher": ... where known}) and the
    warnings to log; with data.overlong=error, an over-long row, or a count that cannot be made, stops the run.
    `sets` are the run's sets after the dev split: dev rows held out of L are counted once, as rows of L, and the
    teacher's prompts are built with the demos it is given (data.demos, else L less the held-out dev rows)."""
    summary, warnings, failed = {}, [], set()
    demos = sets.get("demos", sets.get("labeled_train", sets["labeled"]))
    held_out = "labeled_train" in sets  # dev is then a slice of L
    skip = ("labeled_train", "demos") + (("dev",) if held_out else ())  # demos only ever sit inside a prompt
    sets = {name: df for name, df in sets.items() if name not in skip}
    for key, who, count in (
        ("student", "student", student_overlong),
        ("student_target", "student", target_overlong),
        ("teacher", "teacher", lambda cfg, sets: teacher_overlong(cfg, sets, demos)),
    ):
        if who in failed:
            continue  # said once per model
        try:
            found = count(cfg, sets)
        except Exception as exc:  # a tokenizer that cannot load: the model load reports it properly later
            problem = (
                f"{who} input lengths not checked: the tokenizer or config of {who}.model did not load "
                f"({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]})"
            )
            if cfg.data.overlong == "error":
                raise MckdInputError(f"{problem}; data.overlong=error needs the count") from None
            warnings.append(problem)
            failed.add(who)
            continue
        if found is None:
            continue
        summary[key] = found.summary()
        message = found.message(sets)
        if message and cfg.data.overlong == "error":
            raise MckdInputError(f"{message} (data.overlong=error)")
        if message:
            warnings.append(f"{message} (data.overlong=error stops such a run)")
    return summary, warnings


def student_overlong(cfg: RunConfig, sets: dict[str, pd.DataFrame]) -> Overlong:
    """Rows of every set whose student prompt is cut (the student trains, selects and is scored on all of them)."""
    s: StudentConfig = cfg.student
    tok, path = _tokenizer(s.model, s.revision, s.trust_remote_code)
    seq2seq = is_seq2seq(path, s.arch, s.revision, s.trust_remote_code) if path else s.arch == "seq2seq"
    # As the student encodes them: the bare input with its end token (seq2seq), else the prompt without specials.
    rows = {
        name: _rows_over(tok, [x if seq2seq else causal_prompt(x) for x in df["input"]], seq2seq, s.max_input_tokens)
        for name, df in sets.items()
    }
    return Overlong(
        f"student.max_input_tokens={s.max_input_tokens} tokens",
        s.max_input_tokens,
        rows,
        "students cut them; raise student.max_input_tokens or shorten those inputs",
    )


def target_overlong(cfg: RunConfig, sets: dict[str, pd.DataFrame]) -> Overlong:
    """Rows whose gold target is longer than a student writes: L (SFT and gold-aware students learn it cut), dev
    and test (scored against outputs that stop at the limit). U's targets, where a benchmark has them, only score
    pseudolabels, and no student learns them."""
    s: StudentConfig = cfg.student
    tok, path = _tokenizer(s.model, s.revision, s.trust_remote_code)
    seq2seq = is_seq2seq(path, s.arch, s.revision, s.trust_remote_code) if path else s.arch == "seq2seq"
    rows = {}
    for name, df in sets.items():
        if name == "unlabeled" or "target" not in df.columns:
            continue
        where = [row for row, t in enumerate(df["target"]) if isinstance(t, str)]
        targets = [df["target"].iloc[row] for row in where]
        if seq2seq:  # as the student encodes them (student._Encoder): with the tokenizer's end token
            ids = tok(text_target=targets)["input_ids"] if targets else []
        else:  # " " + target, and the end token the student appends
            encoded = tok([" " + t for t in targets], add_special_tokens=False)["input_ids"] if targets else []
            ids = [seq + [0] for seq in encoded]
        rows[name] = [row for row, seq in zip(where, ids) if len(seq) > s.max_target_tokens]
    return Overlong(
        f"student.max_target_tokens={s.max_target_tokens} tokens",
        s.max_target_tokens,
        rows,
        "students learn them cut and write no longer outputs; raise student.max_target_tokens or shorten those targets",
        what="targets",
    )


def teacher_overlong(
    cfg: RunConfig, sets: dict[str, pd.DataFrame], demos: pd.DataFrame | None = None
) -> Overlong | None:
    """Rows of U and T whose few-shot prompt leaves no room for the answer; None where the context is not known."""
    t: TeacherConfig = cfg.teacher
    runs_vllm = t.backend == "vllm-offline" or (t.backend == "vllm-server" and not t.base_url)
    if not runs_vllm or t.vllm.max_model_len is None:
        return None
    tok = teacher_tokenizer(t)
    chat, special = teacher_view(t, tok)
    labeled = sets["labeled"] if demos is None else demos
    # The prompts annotate() builds: the same demos (L's training rows, run seed) around each input.
    demo_list = [Demo(*row) for row in zip(labeled["id"], labeled["input"], labeled["target"])]
    room = t.vllm.max_model_len - t.max_new_tokens
    instruction = run_format(cfg.data).instruction
    rows = {}
    for name in ("unlabeled", "test"):
        if name in sets:
            prompts = few_shot_prompts(
                list(sets[name]["input"]),
                demo_list,
                instruction,
                k=t.num_demos,
                selection=t.demo_selection,
                seed=cfg.seed,
            )
            rows[name] = [row for row, n in enumerate(prompt_lengths(tok, prompts, chat, special)) if n > room]
    named = f"teacher.vllm.max_model_len={t.vllm.max_model_len} less teacher.max_new_tokens={t.max_new_tokens} tokens"
    return Overlong(
        named,
        room,
        rows,
        "vLLM refuses those prompts or cuts their answers; raise teacher.vllm.max_model_len, lower "
        "teacher.num_demos or teacher.max_new_tokens, or shorten those inputs",
    )


def teacher_tokenizer(t: TeacherConfig):
    """The teacher's tokenizer only (a GGUF alias not converted yet: from the file's metadata); no fallback, so a
    count is never made with some other model's tokenizer."""
    from transformers import AutoTokenizer

    gguf = unconverted_gguf(t.model)
    if gguf is not None:
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    path = resolve_model(t.model)
    return AutoTokenizer.from_pretrained(path, revision=t.revision, trust_remote_code=t.trust_remote_code)


def teacher_view(t: TeacherConfig, tokenizer) -> tuple[bool, bool]:
    """(chat, special): whether the teacher is sent its chat template's rendering of a prompt, and whether the
    tokenizer's special tokens are added to the text. vLLM adds them to a completion prompt; the transformers teacher
    tokenizes the rendered prompt as it is; a chat template writes its own."""
    chat = t.chat and tokenizer.chat_template is not None
    return chat, t.backend != "transformers" and not chat


def prompt_lengths(tokenizer, prompts: list[Prompt], chat: bool, special: bool, chunk: int = 1024) -> list[int]:
    """The tokens of each of `prompts` as the teacher sees them, a chunk at a time: every prompt of a large U rendered
    and tokenized at once would not fit in memory."""
    lengths = []
    for start in range(0, len(prompts), chunk):
        texts = [
            tokenizer.apply_chat_template(list(p.messages), tokenize=False, add_generation_prompt=True)
            if chat
            else p.text
            for p in prompts[start : start + chunk]
        ]
        lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]] if texts else []
    return lengths


def _tokenizer(model: str, revision: str | None, trust_remote_code: bool):
    """`model`'s tokenizer as its student or teacher loads it, and the folder of its config (None for a GGUF alias
    not converted yet: its tokenizer comes from the file's metadata, and every such alias is decoder-only)."""
    gguf = unconverted_gguf(model)
    if gguf is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), None
    path = resolve_model(model)
    return load_tokenizer(path, revision, trust_remote_code), path


def _rows_over(tok, texts: list[str], special_tokens: bool, limit: int) -> list[int]:
    """Row numbers of the `texts` longer than `limit` tokens."""
    ids = tok(texts, add_special_tokens=special_tokens)["input_ids"] if texts else []
    return [row for row, seq in enumerate(ids) if len(seq) > limit]
