"""What the teacher will be asked, counted before it is: the prompt tokens of the rows not in the teacher cache (with
the teacher's own tokenizer, never its weights) and the completion tokens to expect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from .config import RunConfig
from .errors import MckdInputError
from .lengths import prompt_lengths, teacher_tokenizer, teacher_view
from .plan import RunPlan
from .steps import Inputs, teacher_requests
from .teacher import ResponseCache


@dataclass
class SetEstimate:
    rows: int
    cached: int  # rows the teacher cache already answers: they cost nothing
    prompt_tokens: int | None  # of the rows to send; None: the tokenizer did not load

    @property
    def to_send(self) -> int:
        return self.rows - self.cached


@dataclass
class TeacherEstimate:
    sets: dict[str, SetEstimate]
    max_new_tokens: int
    demo_target_tokens: float | None  # the mean token length of the demos' targets: what an answer tends to cost
    tokenizer_error: str | None = None

    @property
    def to_send(self) -> int:
        return sum(s.to_send for s in self.sets.values())

    @property
    def prompt_tokens(self) -> int | None:
        counts = [s.prompt_tokens for s in self.sets.values()]
        return None if None in counts else sum(counts)

    @property
    def completion_tokens_max(self) -> int:
        return self.to_send * self.max_new_tokens

    @property
    def completion_tokens_expected(self) -> int | None:
        if self.demo_target_tokens is None:
            return None
        return round(min(self.demo_target_tokens, self.max_new_tokens) * self.to_send)

    def line(self) -> str:
        """The one line a run logs at its start (and `mckd run --estimate` prints)."""
        per_set = ", ".join(f"{name} {s.to_send} of {s.rows}" for name, s in self.sets.items())
        if self.prompt_tokens is None:
            return (
                f"teacher estimate: {self.to_send} rows to send ({per_set}; the rest are in the teacher cache); "
                f"prompt tokens not counted ({self.tokenizer_error}); completion tokens at most "
                f"{self.completion_tokens_max} (teacher.max_new_tokens={self.max_new_tokens} per row)"
            )
        return (
            f"teacher estimate: {self.to_send} rows to send ({per_set}; the rest are in the teacher cache), "
            f"{self.prompt_tokens} prompt tokens, completion tokens about {self.completion_tokens_expected} "
            f"(demos' target length) and at most {self.completion_tokens_max} "
            f"(teacher.max_new_tokens={self.max_new_tokens} per row)"
        )

    def as_dict(self) -> dict:
        return {
            "rows_to_send": self.to_send,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens_expected": self.completion_tokens_expected,
            "completion_tokens_max": self.completion_tokens_max,
            "sets": {name: {**s.__dict__, "to_send": s.to_send} for name, s in self.sets.items()},
        }

    def check_budget(self, budget: int | None) -> None:
        """Stop before the teacher is asked when its prompts would exceed teacher.max_prompt_tokens."""
        if budget is None or self.to_send == 0:
            return
        if self.prompt_tokens is None:
            raise MckdInputError(
                f"teacher.max_prompt_tokens={budget}: the prompts cannot be counted ({self.tokenizer_error}); make "
                "teacher.model's tokenizer loadable here, or unset teacher.max_prompt_tokens"
            )
        if self.prompt_tokens > budget:
            raise MckdInputError(
                f"teacher.max_prompt_tokens={budget}: the teacher would be sent {self.prompt_tokens} prompt tokens "
                f"for {self.to_send} rows; raise the budget, lower teacher.num_demos, or label fewer rows "
                f"({self.shrinkable()})"
            )

    def shrinkable(self) -> str:
        """Where the rows that would be sent come from, as the settings a user changes to send fewer."""
        where = {
            "unlabeled": "from data.unlabeled",
            "test": "from data.test",
            # Dev rows reach the teacher only under stages.first_labels: auto, to score its labels against SFT's.
            "dev": "dev rows: fewer with data.dev / data.dev_holdout, none with stages.first_labels: teacher",
        }
        return "; ".join(f"{s.to_send} {where.get(name, name)}" for name, s in self.sets.items() if s.to_send)


def estimate_teacher(cfg: RunConfig, data: Inputs) -> TeacherEstimate:
    """Count what the run's teacher will be asked: its sets' prompts (built with the demos, as `annotate_rows` builds
    them), less the rows its response cache already holds."""
    plan = RunPlan(cfg, data)
    try:
        tokenizer, error = teacher_tokenizer(cfg.teacher), None
    except Exception as exc:  # a hosted model's name, a hub id with no network: say so, count rows only
        tokenizer, error = None, f"no tokenizer for teacher.model={cfg.teacher.model!r}: {type(exc).__name__}"
    chat, special = teacher_view(cfg.teacher, tokenizer) if tokenizer is not None else (False, False)
    cache = ResponseCache(plan.teacher_cache) if Path(plan.teacher_cache).exists() else None
    sets, targets = {}, []
    try:
        for which, rows in plan.teacher_sets().items():
            prompts, keys, demos = teacher_requests(plan.annotate(rows, which))
            targets = [d.target for d in demos]
            held = cache.get_many(keys) if cache else {}
            todo = [p for p, key in zip(prompts, keys) if key not in held]
            count = None if tokenizer is None else sum(prompt_lengths(tokenizer, todo, chat, special))
            sets[which] = SetEstimate(rows=len(keys), cached=len(keys) - len(todo), prompt_tokens=count)
    finally:
        if cache:
            cache.close()
    lengths = (
        [len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"]]
        if tokenizer is not None and targets
        else []
    )
    return TeacherEstimate(sets, cfg.teacher.max_new_tokens, mean(lengths) if lengths else None, error)
