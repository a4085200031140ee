"""The ``unlearnkit`` command line: a thin layer over the Python API.

Every user error (unknown name, bad spec, unwritable output, ...) prints one line and exits with code 2.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from unlearnkit.errors import UnlearnkitError

if TYPE_CHECKING:
    from unlearnkit.experiments.progress import ProgressSink
    from unlearnkit.experiments.runner import BenchmarkResult

# What the user typed (``random:abc``, ``class:cat``, ``[0,1]``) is printed as typed: never read as an emoji code,
# and escaped wherever it goes into a markup string.
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

app = typer.Typer(
    name="unlearnkit",
    help="Make a trained model forget data, classes or concepts, and prove it against retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=(
        "Examples:\n\n"
        "  unlearnkit run                                    # the default benchmark (digits, ~2-3 min on CPU)\n\n"
        "  unlearnkit run --forget class:3,7 --methods retrain,neggrad_plus --seeds 0,1,2 --out runs/demo\n\n"
        "  unlearnkit run --config benchmarks/setting1_digits.yaml\n\n"
        "  unlearnkit run --config benchmarks/setting1_digits.yaml train.epochs=5 methods.scrub.lr=1e-3\n\n"
        "  unlearnkit sweep benchmarks/sweep_digits_16.yaml --ray\n\n"
        "  unlearnkit tune benchmarks/setting1_digits.yaml --trials 30\n\n"
        "  unlearnkit list methods\n\n"
        "  unlearnkit report runs/demo\n\n"
        "  unlearnkit audit --model unlearned.safetensors --config scenario.yaml"
    ),
)


def _print_version(value: bool) -> None:
    if value:
        from unlearnkit import __version__

        typer.echo(f"unlearnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


#: options shared by run, sweep and audit
AllowLong = Annotated[
    bool, typer.Option("--allow-long", help="Allow epochs/steps above the ceilings (10,000 / 1,000,000).")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Run even when more than 2,000 cells are planned.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="Rerun what is stored as failed.")]


def _fail(msg: str) -> None:
    err_console.print(f"[bold red]error:[/bold red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def default_config_data() -> dict:
    """The built-in default benchmark config as a mapping."""
    from unlearnkit._config import load_yaml_text

    text = resources.files("unlearnkit").joinpath("configs/default.yaml").read_text()
    return load_yaml_text(text, "default config")


@contextmanager
def _config_warnings() -> Iterator[None]:
    """Print each config warning raised inside (threads above the cores, many cells) as one line, once."""
    from unlearnkit._config import ConfigWarning

    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigWarning)
        shown = warnings.showwarning

        def show(
            message: Warning | str, category: type[Warning], filename: str, lineno: int,
            file: TextIO | None = None, line: str | None = None,
        ) -> None:  # fmt: skip
            if not issubclass(category, ConfigWarning):
                shown(message, category, filename, lineno, file, line)
            elif str(message) not in seen:
                seen.add(str(message))
                err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)

        warnings.showwarning = show
        yield


#: the ``KEY=VALUE ...`` arguments of ``run`` and ``sweep``
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="KEY=VALUE",
        help="Set any config key (dotted, value read as YAML): train.epochs=5 seeds=[0,1] methods.scrub.lr=1e-3.",
        show_default=False,
    ),
]


def _checkpoint_paths(given: list[Path]) -> list[Path]:
    """``--model`` values: files as given, folders replaced by their ``*.safetensors`` files (sorted)."""
    out: list[Path] = []
    for p in given:
        if p.is_dir():
            found = sorted(p.glob("*.safetensors"))
            if not found:
                raise UnlearnkitError(f"folder {p} has no .safetensors checkpoints")
            out.extend(found)
        else:
            out.append(p)
    return out


def _csv_ints(value: str, what: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UnlearnkitError(f"{what} must be comma-separated integers, got {value!r}") from None


@app.command(
    epilog="Example: unlearnkit run --dataset mnist1d --forget class:3 --forget random:0.1 --seeds 0,1 --out runs/m1d"
)
def run(
    overrides: Overrides = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML benchmark config.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (see `unlearnkit list datasets`).")] = None,
    data_root: Annotated[str | None, typer.Option(help="Root folder of torchvision/image-folder data.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Let torchvision download the dataset.")] = False,
    model: Annotated[str | None, typer.Option(help="Model name (see `unlearnkit list models`).")] = None,
    forget: Annotated[
        list[str] | None, typer.Option(help="Forget request, repeatable: class:3, class:3,7, random:0.1, ...")
    ] = None,
    methods: Annotated[str | None, typer.Option(help="Comma-separated method names, or 'all'.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs for the original and retrained models.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/<timestamp>).")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Model cache (default ~/.cache/unlearnkit).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default 1; 0 = torch's default).")] = None,
    retry_failed: RetryFailed = False,
    allow_long: AllowLong = False,
    yes: Yes = False,
    quiet: Quiet = False,
) -> None:
    """Run a benchmark; with no options, the default one (digits, small_cnn, class:3 and random:0.1).

    KEY=VALUE arguments set config keys before validation (train.epochs=5, seeds=[0,1], methods.scrub.lr=1e-3
    for a configured method), after the options below.
    """
    from unlearnkit._config import MAX_CELLS, apply_overrides, read_yaml
    from unlearnkit.experiments import parse_config, run_benchmark
    from unlearnkit.experiments.config import FLAT_KEYS, sectioned, set_flat

    progress = _progress(quiet)
    out_dir = out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        given = {  # config keys set by options, for either kind of config (None: not given)
            "methods": None if methods is None else "all" if methods.strip() == "all" else
            [m.strip() for m in methods.split(",") if m],
            "seeds": None if seeds is None else _csv_ints(seeds, "--seeds"), "device": device, "cache_dir": cache_dir,
            "threads": threads, "allow_long": True if allow_long else None,
        }  # fmt: skip
        flags = {k: v for k, v in given.items() if v is not None}
        with _config_warnings():
            source = str(config) if config is not None else "default config"
            data = read_yaml(config) if config is not None else default_config_data()
            data = apply_overrides(data, [], source)  # a copy; refuses a document that is not a mapping
            concept = data.get("setting") == 3  # CLIP concept unlearning: --epochs is the small CLIP's pretraining
            classifier_only = {"--dataset": dataset, "--data-root": data_root, "--download": download or None,
                               "--model": model, "--forget": forget or None}  # fmt: skip
            if concept:
                for flag, value in classifier_only.items():
                    if value:
                        raise UnlearnkitError(f"option {flag} does not apply to a setting-3 (concept) config: {config}")
            else:
                given = {"dataset": dataset, "data_root": data_root, "download": True if download else None,
                         "model": model, "forget": list(forget) if forget else None}  # fmt: skip
                flags.update({k: v for k, v in given.items() if v is not None})
            if not concept:  # the classifier config is in sections: flat keys and flags go to their section
                data = sectioned(data, source)
                for key, value in flags.items():
                    set_flat(data, key, value)
            else:
                data.update(flags)
            if epochs is not None:
                data = apply_overrides(data, [f"{'pretrain' if concept else 'train'}.epochs={epochs}"])
            data = apply_overrides(data, overrides or [], source, aliases=None if concept else FLAT_KEYS)
            if overrides or flags or epochs is not None:
                source += " with the command-line options"
            cfg = parse_config(data, source)
            res = run_benchmark(cfg, out_dir, progress=progress, max_cells=None if yes else MAX_CELLS,
                                retry_failed=retry_failed)  # fmt: skip
    except UnlearnkitError as e:
        _fail(str(e))
        return
    _print_counts(res, "runs")
    if not quiet and "json" in res.reports:
        _print_summary(Path(res.reports["json"]))
    _print_report_warnings(res)
    _exit_on_failures(res, "runs")


#: columns of the console summary: (header, metric for class-level requests, metric for sample-level ones)
_SUMMARY_COLS = (
    ("forget acc", "acc_forget_test", "acc_forget"),
    ("retain acc", "acc_retain_test", "acc_retain"),
    ("test acc", "acc_test", "acc_test"),
    ("JS to retrain", "js_divergence", "js_divergence"),
    ("time / retrain", "time_ratio_vs_retrain", "time_ratio_vs_retrain"),
)


def _progress(quiet: bool) -> ProgressSink:
    """Bars on a terminal; one line per finished run when stdout goes to a file or a pipe; nothing with --quiet."""
    from unlearnkit.experiments.progress import LineProgress, NullProgress, RichProgress

    if quiet:
        return NullProgress()
    return (
        RichProgress() if console.is_terminal else LineProgress(lambda line: console.print(Text(line), soft_wrap=True))
    )


def _print_counts(res: BenchmarkResult, unit: str) -> None:
    """What a benchmark or sweep did: skipped requests, then counts of ``unit`` (runs, cells), models, time."""
    for reason in res.not_applicable:
        console.print(f"[yellow]skipped:[/yellow] {escape(reason)}", highlight=False)
    console.print(
        Text(
            f"{res.ran} {unit} ({res.failed} failed), {res.skipped} already stored, "
            f"{res.trained_models} models trained, {res.wall_s:.1f} s -> {res.out_dir}"
        ),
        highlight=False,
    )


def _exit_on_failures(res: BenchmarkResult, unit: str) -> None:
    """Exit 1 when any run failed, after saying how many and why (each distinct reason once, with its count)."""
    if res.flagged:
        console.print(f"[yellow]{res.flagged} {unit} scored but flagged (e.g. collapsed to chance); see report.md"
                      "[/yellow]", highlight=False)  # fmt: skip
    if res.failed_before:
        console.print(f"[red]{res.failed_before} {unit} stored as failed by an earlier run[/red] were not rerun "
                      "(rerun with --retry-failed)", highlight=False)  # fmt: skip
    if not res.failed:
        if res.failed_before:
            raise typer.Exit(code=1)
        return
    reasons: dict[str, int] = {}
    for err in res.errors:
        why = err.split(": ", 1)[1] if ": " in err else err
        reasons[why] = reasons.get(why, 0) + 1
    console.print(f"[red]{res.failed} {unit} failed[/red] (rerun with --retry-failed once fixed):", highlight=False)
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:5]:
        console.print(Text(f"  {n} x {why}"), highlight=False, soft_wrap=True)
    if len(reasons) > 5:
        console.print(f"  ... and {len(reasons) - 5} more reasons; see report.md", highlight=False)
    raise typer.Exit(code=1)


def _print_report_warnings(res: BenchmarkResult, most: int = 10) -> None:
    """The report's warnings (a request that cannot separate methods, a no-op method, a collapsed model), one
    line each, also with ``--quiet``: they change how every number of the run should be read."""
    import json

    path = res.reports.get("json")
    if path is None or not Path(path).is_file():
        return
    warnings = json.loads(Path(path).read_text()).get("warnings") or []
    for w in warnings[:most]:
        console.print(f"[yellow]warning:[/yellow] {escape(str(w.get('message', w)))}", highlight=False)
    if len(warnings) > most:
        console.print(f"[yellow]warning:[/yellow] ... and {len(warnings) - most} more; see report.md", highlight=False)


def _print_summary(report_json: Path) -> None:
    """A compact table per scenario (the full tables are in report.md / report.html)."""
    import json

    from unlearnkit.reports._aggregate import as_number

    summary = json.loads(report_json.read_text()).get("summary", [])
    tables: dict[tuple[str, str, str], list[dict]] = {}
    for row in summary:
        sc = row["scenario"]
        tables.setdefault((sc.get("dataset", "?"), sc.get("forget", "?"), row.get("model", "?")), []).append(row)
    narrow = console.width < 110  # then "± std" goes on a second line, so each number column stays readable
    for (dataset, forget, model), rows in tables.items():
        class_level = forget.split(":")[0] in ("class", "subclass", "group")
        t = Table(title=Text(f"{dataset} · forget {forget} · {model}"), title_justify="left")
        t.add_column("method", overflow="fold")
        t.add_column("seeds", justify="right", no_wrap=True)
        for header, *_ in _SUMMARY_COLS:
            t.add_column(header, justify="right", min_width=6)
        for row in rows:
            cells = []
            for _, cls_metric, sample_metric in _SUMMARY_COLS:
                stat = row["metrics"].get(cls_metric if class_level else sample_metric)
                mean = as_number(stat.get("mean")) if isinstance(stat, dict) else None
                if mean is not None:
                    std = as_number(stat.get("std"))
                    spread = "" if std is None else (f"\n±{std:.3f}" if narrow else f" ± {std:.3f}")
                    cells.append(f"{mean:.3f}{spread}")
                else:
                    cells.append("n/c")
            t.add_row(Text(str(row.get("label", row["method"]))), str(row.get("n_seeds", "")), *cells)
        console.print(t)


@app.command(epilog="Example: unlearnkit audit --model unlearned.safetensors --config scenario.yaml --out runs/audit")
def audit(
    model: Annotated[
        list[Path],
        typer.Option(
            "--model",
            "-m",
            help="A model to audit (.safetensors), or a folder of them; repeatable. N >= 2 models (N runs of one "
            "algorithm) also get the NeurIPS-2023 ε score as a set. With a setting-3 config: a CLIP folder "
            "(save_pretrained export).",
        ),
    ],
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML scenario: dataset, model, forget, seeds.")],
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/audit-<timestamp>).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    quiet: Quiet = False,
) -> None:
    """Evaluate any model (also one made outside unlearnkit) against a scenario's references."""
    from unlearnkit.experiments.config import ConceptRunConfig, load_config
    from unlearnkit.experiments.runner import run_audit

    try:
        cfg = load_config(config)
        models = list(model) if isinstance(cfg, ConceptRunConfig) else _checkpoint_paths(model)  # CLIP: folders
        if device is not None:
            cfg = cfg.replace(device=device)
        out_dir = out or Path("runs") / datetime.now().strftime("audit-%Y%m%d-%H%M%S")
        res = run_audit(cfg, models, out_dir, progress=_progress(quiet))
    except UnlearnkitError as e:
        _fail(str(e))
        return
    what = str(models[0]) if len(models) == 1 else f"{len(models)} checkpoints"
    console.print(f"audited {what} in {res.ran} runs ({res.failed} failed), {res.wall_s:.1f} s -> {res.out_dir}",
                  highlight=False)  # fmt: skip
    if not quiet and "json" in res.reports:
        _print_summary(Path(res.reports["json"]))
    _print_report_warnings(res)
    _exit_on_failures(res, "runs")


@app.command(
    epilog="Example: unlearnkit sweep benchmarks/sweep_digits_16.yaml --ray  (rerun the same command to resume)"
)
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML sweep config: a run config whose values may be lists.")],
    overrides: Overrides = None,
    use_ray: Annotated[
        bool, typer.Option("--ray", help="Run on a local Ray: one task per cell and per reference model.")
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on an existing Ray cluster: host:port, ray://host:port or auto.")
    ] = None,
    retry_failed: RetryFailed = False,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: the config's out, else runs/<name>).")
    ] = None,
    allow_long: AllowLong = False,
    yes: Yes = False,
    quiet: Quiet = False,
) -> None:
    """Run (or resume) a grid of benchmarks: every cell not yet stored in OUT/results.db, in-process or on Ray.

    KEY=VALUE arguments set config keys before validation, as for run (a list value is a grid axis).
    """
    from unlearnkit._config import MAX_CELLS, apply_overrides, read_yaml
    from unlearnkit.experiments.config import FLAT_KEYS, sectioned
    from unlearnkit.experiments.progress import NullProgress
    from unlearnkit.experiments.sweep import SweepProgress, parse_sweep, run_sweep

    try:
        with _config_warnings():
            source = str(config)
            data = read_yaml(config, "sweep config")
            if overrides or allow_long:
                data = sectioned(apply_overrides(data, [], source), source)
                more = [*(overrides or []), *(["allow_long=true"] if allow_long else [])]
                data = apply_overrides(data, more, source, aliases=FLAT_KEYS)
                source += " with the command-line options"
            sw = parse_sweep(data, source)
            res = run_sweep(
                sw, out, backend="ray" if use_ray or ray_address else "inprocess", ray_address=ray_address,
                retry_failed=retry_failed, progress=NullProgress() if quiet else SweepProgress(),
                max_cells=None if yes else MAX_CELLS,
            )  # fmt: skip
    except UnlearnkitError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished cell is stored; rerun the same command to resume")
        raise typer.Exit(code=130) from None
    _print_counts(res, "cells")
    _exit_on_failures(res, "cells")


@app.command(
    epilog="Example: unlearnkit tune benchmarks/setting1_digits.yaml --trials 30 --out runs/tune  (rerun to resume)"
)
def tune(
    config: Annotated[
        Path, typer.Argument(help="YAML run config (setting 1); its requests and seeds are not tuned on.")
    ],
    overrides: Overrides = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods to tune (default: the config's; all = every one).")
    ] = None,
    trials: Annotated[
        int, typer.Option(help="Trials per method (the same for every method; the first = defaults).")
    ] = 30,
    proxies: Annotated[int, typer.Option(help="Proxy requests per request kind (other classes, other seeds).")] = 2,
    max_time_ratio: Annotated[
        float, typer.Option(help="Constraint: mean time_ratio_vs_retrain of a tuned method.")
    ] = 0.5,
    relearn_weight: Annotated[
        float, typer.Option(help="Weight of the after-relearning forget-accuracy gap in the objective (0: off).")
    ] = 0.0,
    compare: Annotated[
        bool, typer.Option("--compare/--no-compare", help="Run the evaluated requests with defaults and tuned values.")
    ] = True,
    use_ray: Annotated[
        bool, typer.Option("--ray", help="Run each trial's proxy runs as tasks on a local Ray.")
    ] = False,
    ray_address: Annotated[
        str | None, typer.Option(help="Run on an existing Ray cluster: host:port, ray://host:port or auto.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/tune-<config name>).")] = None,
    quiet: Quiet = False,
) -> None:
    """Tune each method's hyperparameters on proxy requests (Optuna TPE), then compare tuned vs defaults.

    Writes OUT/tuned.yaml (a run config whose methods: entries are the tuned values), the trials in
    OUT/results.db and OUT/report.md. KEY=VALUE arguments set config keys, as for run.
    """
    from unlearnkit._config import apply_overrides, read_yaml
    from unlearnkit.api import tune as api_tune
    from unlearnkit.experiments.config import FLAT_KEYS, parse_config, sectioned

    def line(method: str, number: int, state: str, value: float | None, best: float | None) -> None:
        v = "n/c" if value is None else f"{value:.4f}"
        b = "n/c" if best is None else f"{best:.4f}"
        console.print(Text(f"{method} trial {number}: {state.lower()} {v} (best {b})"), highlight=False)

    try:
        with _config_warnings():
            source = str(config)
            data = sectioned(apply_overrides(read_yaml(config), [], source), source)
            if overrides:
                data = apply_overrides(data, overrides, source, aliases=FLAT_KEYS)
                source += " with the command-line options"
            cfg = parse_config(data, source)
            names = None if methods is None else [m.strip() for m in methods.split(",") if m.strip()]
            if names == ["all"]:
                names = None
                cfg = cfg.replace(methods="all")
            out_dir = out or Path("runs") / f"tune-{cfg.name}"
            res = api_tune(
                cfg, out_dir, methods=names, trials=trials, proxies=proxies, max_time_ratio=max_time_ratio,
                relearn_weight=relearn_weight, compare=compare, ray=use_ray, ray_address=ray_address,
                on_trial=None if quiet else line,
            )  # fmt: skip
    except UnlearnkitError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished trial is stored; rerun the same command to resume")
        raise typer.Exit(code=130) from None
    for name in res.not_tuned:
        console.print(f"[yellow]not tuned:[/yellow] {escape(name)} (empty search space)", highlight=False)
    for name, params in res.best.items():
        d, b = res.default_value.get(name), res.best_value.get(name)
        dv, bv = ("n/c" if v is None else f"{v:.4f}" for v in (d, b))
        console.print(Text(f"{name}: {params}  proxy objective {dv} (defaults) -> {bv} (tuned), "
                           f"{res.ran.get(name, 0)} trials run now"), highlight=False)  # fmt: skip
    console.print(Text(f"tuned in {res.tune_wall_s:.1f} s, {res.wall_s:.1f} s in all -> {res.tuned_yaml}"),
                  highlight=False)  # fmt: skip


class ListWhat(StrEnum):
    methods = "methods"
    metrics = "metrics"
    datasets = "datasets"
    models = "models"


def _param_rows(cls: type) -> list[tuple[str, str, str]]:
    """(name, default, constraint) for each hyperparameter of a method class."""
    import inspect

    sig = inspect.signature(cls.__init__).parameters
    rows = []
    for name in cls._get_param_names():
        default = sig[name].default
        checks = cls._parameter_constraints.get(name)
        rows.append((name, "required" if default is inspect.Parameter.empty else repr(default),
                     " or ".join(str(c) for c in checks) if checks else "any"))  # fmt: skip
    return rows


def _search(cls: type, name: str) -> str | None:
    """How ``unlearnkit tune`` draws hyperparameter ``name`` of ``cls`` (``None``: it stays at its default)."""
    space = getattr(cls, "search_space", None) or {}
    return str(space[name]) if name in space else None


def _entries(what: ListWhat, clip: bool) -> list[dict]:
    """The registered entries of one kind, as plain records (what --json prints and the table shows)."""
    import unlearnkit as uk
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    if what is ListWhat.methods:
        out = []
        for n in uk.list_methods():
            cls = METHODS.get(n)
            out.append({"name": n, "setting": cls.setting, "modality": cls.modality, "needs": sorted(cls.needs),
                        "requests": sorted(cls.requests), "paper": cls.paper or None,
                        "params": {p: {"default": d, "constraint": c, "search": _search(cls, p)}
                                   for p, d, c in _param_rows(cls)},
                        "search_space": None if getattr(cls, "search_space", None) is None else
                        {k: str(v) for k, v in cls.search_space.items()}})  # fmt: skip
        return out
    if what is ListWhat.metrics:
        return [{"name": n, "settings": list(m.settings), "better": {True: "higher", False: "lower",
                 None: "match retrain"}[m.higher_is_better], "needs": sorted(m.needs), "description": m.description}
                for n in uk.list_metrics() for m in [METRICS.get(n)]]  # fmt: skip
    names = list(uk.list_datasets() if what is ListWhat.datasets else uk.list_models())
    if clip:  # the setting-3 data and the small CLIP configs (any CLIP loads with clip.from_pretrained)
        from unlearnkit.concept import CLIP_CONFIGS
        from unlearnkit.concept.sources import CONCEPT_DATASETS

        names += list(CONCEPT_DATASETS) if what is ListWhat.datasets else CLIP_CONFIGS.list()
    return [{"name": n} for n in names]


@app.command(
    epilog="Example: unlearnkit export --clip runs/s3/models/safe_clip-KEY --into diffusers "
    "--base stable-diffusion-v1-5/stable-diffusion-v1-5 --out sd-safe"
)
def export(
    clip: Annotated[
        Path, typer.Option("--clip", help="An unlearned CLIP folder (save_pretrained, with its tokenizer).")
    ],
    into: Annotated[
        str,
        typer.Option(
            "--into",
            help="diffusers: the text tower becomes a text-to-image pipeline's text_encoder; "
            "llava: the vision tower becomes a LLaVA model's vision_tower.",
        ),
    ],
    base: Annotated[str, typer.Option("--base", help="The pipeline or model to put it in (a folder or a Hub name).")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the swapped pipeline or model.")],
) -> None:
    """Put an unlearned CLIP's text tower into a diffusers pipeline, or its vision tower into a LLaVA model."""
    from unlearnkit.api import export_towers

    try:
        path = export_towers(clip, base, out, into=into)
    except UnlearnkitError as e:
        _fail(str(e))
        return
    console.print(f"{into}: {base} with the {'text' if into == 'diffusers' else 'vision'} tower of {clip} -> {path}",
                  highlight=False)  # fmt: skip


@app.command("list")
def list_(
    what: Annotated[ListWhat, typer.Argument(help="methods, metrics, datasets or models.")],
    cite: Annotated[
        bool, typer.Option("--cite", help="With methods: one line each, with the paper it implements.")
    ] = False,
    params: Annotated[
        bool, typer.Option("--params", help="With methods: each hyperparameter with its default and constraint.")
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Plain lines (no table), one entry each.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON (every field, for scripts).")] = False,
) -> None:
    """List registered methods, metrics, datasets or models (tables wrap to the terminal's width)."""
    import json

    from unlearnkit.experiments.config import load_concept_entries

    clip = load_concept_entries()  # registers the setting-3 (CLIP) entries; False when transformers is missing
    if (cite or params) and what is not ListWhat.methods:
        _fail(
            f"--{'cite' if cite else 'params'} is for methods: unlearnkit list methods --{'cite' if cite else 'params'}"
        )
    entries = _entries(what, clip)
    if as_json:
        typer.echo(json.dumps(entries, indent=1, default=str))
        return
    if cite:  # plain lines (no table, no wrapping), so they can be copied or grepped
        for e in entries:
            typer.echo(f"{e['name']:<18} {e['paper'] or '-'}")
        return
    if params:
        for e in entries:
            typer.echo(f"{e['name']} (setting {e['setting']}, {e['modality']})")
            for p, spec in e["params"].items():
                tuned = f"; tune: {spec['search']}" if spec["search"] else ""
                typer.echo(f"  {p} = {spec['default']}  ({spec['constraint']}{tuned})")
            if e["setting"] == 1 and e["search_space"] == {} and e["params"]:
                typer.echo("  (not tuned: empty search space)")
            if not e["params"]:
                typer.echo("  (no hyperparameters)")
        return
    fields = {ListWhat.methods: ("setting", "modality", "needs", "requests"),
              ListWhat.metrics: ("settings", "better", "needs", "description")}.get(what, ())  # fmt: skip

    def text(v: object) -> str:
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    if plain:
        for e in entries:
            typer.echo("\t".join([e["name"], *(text(e[f]) for f in fields)]))
        return
    from rich.padding import Padding
    from rich.text import Text

    if what is ListWhat.metrics and console.width < 120:  # a description column would be a few characters wide
        for e in entries:
            console.print(
                Text(f"{e['name']}  (settings {text(e['settings'])}; {e['better']}; needs {text(e['needs'])})")
            )
            console.print(Padding(Text(e["description"]), (0, 0, 0, 4)))
        return

    table = Table(title=what.value)
    table.add_column(what.value[:-1], no_wrap=True, min_width=max(len(e["name"]) for e in entries))
    for f in fields:
        table.add_column(f, overflow="fold", ratio=3 if f == "description" else None)
    for e in entries:
        table.add_row(Text(e["name"]), *(Text(text(e[f])) for f in fields))
    if not clip and what in (ListWhat.methods, ListWhat.metrics, ListWhat.models):
        table.caption = "setting-3 (CLIP) entries need transformers: pip install 'unlearnkit[clip]'"
    console.print(table)


@app.command()
def report(directory: Annotated[Path, typer.Argument(help="A run directory containing results.db.")]) -> None:
    """Regenerate report.json, report.md and report.html from DIRECTORY/results.db (opened read-only)."""
    from unlearnkit.experiments import ResultsStore
    from unlearnkit.reports import write_reports
    from unlearnkit.reports.tuning import tune_sections

    try:
        db = directory / "results.db"
        if not db.is_file():
            raise UnlearnkitError(f"no results.db in {directory}")
        runs = ResultsStore(db, readonly=True).runs()
        if any(str(r["scenario"].get("forget", "")).startswith("concept:") for r in runs):
            from unlearnkit.experiments.config import load_concept_entries

            load_concept_entries()  # registers the setting-3 metrics and report section
        store = ResultsStore(db, readonly=True)
        paths = write_reports(runs, directory, extra_sections=tune_sections(store.studies(), store.trials(), runs))
    except UnlearnkitError as e:
        _fail(str(e))
        return
    for p in paths.values():
        console.print(str(p), highlight=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except UnlearnkitError as e:  # pragma: no cover - commands catch their own
        err_console.print(Text(f"error: {e}"))
        sys.exit(2)


if __name__ == "__main__":
    main()
