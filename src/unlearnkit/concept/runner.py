"""The setting-3 benchmark runner: config -> concept data -> original CLIP (cached) -> methods -> store.

It writes into the same :class:`~unlearnkit.experiments.ResultsStore` and reports as the classifier
runner (:mod:`unlearnkit.experiments.runner`), with the same record shape: ``scenario`` (``dataset``,
``forget="concept:unsafe"``, ``seed``, the data's size), ``model``, ``method``, ``params``, ``seed``,
``metrics``, keyed by a hash of the resolved config (a rerun skips stored runs), an ``original`` row per
seed, and failed runs recorded with their reason.

1. Validate everything up front (methods and their hyperparameters, metric names, device, the CLIP source,
   ViSU files and images, the output directory): bad input fails before any training or writing.
2. Per seed: build the data (the concept world is generated from the seed; ViSU is fixed), then the
   original CLIP: a small config pretrained on the training pairs (cached by config hash in the
   :class:`~unlearnkit.engine.ModelCache`), or ``from_pretrained`` weights.
3. Each method unlearns a copy of the original; every concept metric is computed on the test quadruplets
   for the original and each method (side by side in the report), with the method's wall time.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel

import unlearnkit
from unlearnkit.concept._data import ConceptData, WordTokenizer
from unlearnkit.concept._method import ConceptMethod, ConceptUnlearnData
from unlearnkit.concept.clip import CLIP_CONFIGS, check_clip_dir, load_clip, save_clip, small_clip
from unlearnkit.concept.metrics import evaluate_concept
from unlearnkit.concept.pretrain import pretrain_clip
from unlearnkit.concept.visu import HFTokenizer, clip_image_transform, load_visu, processor_transform
from unlearnkit.concept.world import WorldConfig, make_concept_world
from unlearnkit.engine import ModelCache, config_hash, resolve_device, seed_everything
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.experiments.config import read_yaml
from unlearnkit.experiments.progress import NullProgress, ProgressSink
from unlearnkit.experiments.runner import ORIGINAL, BenchmarkResult, ensure_writable_dir
from unlearnkit.experiments.store import ResultsStore
from unlearnkit.methods import check_method_modality, create_method
from unlearnkit.metrics import select_metrics, value_to_json

#: the forget request every setting-3 run records
FORGET = "concept:unsafe"


from unlearnkit.experiments.config import (  # noqa: E402  (moved to the one config module)
    ConceptRunConfig,
    parse_concept_config,
)


def config_setting(path: str | Path) -> int | None:
    """The ``setting`` key of a YAML config (``None`` when absent): how the CLI picks a runner."""
    data = read_yaml(path)
    return data.get("setting") if isinstance(data, dict) else None


def load_concept_config(path: str | Path) -> ConceptRunConfig:
    """Read and validate a setting-3 YAML config file."""
    return parse_concept_config(read_yaml(path), str(path))


# -- building blocks ------------------------------------------------------------------------------------
def resolve_concept_methods(cfg: ConceptRunConfig) -> list[ConceptMethod]:
    """Instantiate and validate the configured concept methods."""
    specs = cfg.method_specs()
    if not specs:
        raise ConfigError("no methods selected")
    methods = [check_method_modality(s.name, "clip") and create_method(s.name, **s.params) for s in specs]
    seen = [config_hash({"m": m.name, "p": m.get_params()}) for m in methods]
    if len(set(seen)) != len(seen):  # the same method may run with different hyperparameters, not twice alike
        raise ConfigError(f"a method is listed twice with the same hyperparameters in {[s.name for s in specs]}")
    for m in methods:
        m.validate_params()
    return methods


def load_concept_data(cfg: ConceptRunConfig, seed: int) -> ConceptData:
    """The seed's concept world, or the ViSU files with the tokenizer and preprocessing of ``cfg.clip``."""
    if cfg.dataset == "concept_world":
        return make_concept_world(seed, WorldConfig(**cfg.world.model_dump()))

    v = cfg.visu
    if v is None:  # guarded by the config validator
        raise ConfigError("dataset: visu needs a visu section")
    src = cfg.clip.from_pretrained
    clip_config: Any = None  # a transformers CLIPConfig (imported lazily)
    processor: Any = None  # the checkpoint's CLIPImageProcessor, exported with the unlearned models
    if src is not None:  # the real CLIP's own tokenizer and image processor
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPTokenizerFast

        try:
            hf_tok = CLIPTokenizerFast.from_pretrained(src)
            processor = CLIPImageProcessor.from_pretrained(src)
            transform = processor_transform(processor)
            clip_config = CLIPConfig.from_pretrained(src)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnlearnkitError(f"cannot load the tokenizer/processor of {src!r}: {first}") from None
        # transformers builds a tokenizer of special tokens only when the files are missing: refuse it
        if len(hf_tok) <= len(set(hf_tok.all_special_tokens)):
            raise UnlearnkitError(f"the tokenizer of {src!r} has no vocabulary: no tokenizer files were found")
        positions = clip_config.text_config.max_position_embeddings
        if cfg.clip.max_length > positions:
            raise UnlearnkitError(f"clip.max_length {cfg.clip.max_length} exceeds the {positions} positions of {src!r}")
        tok = HFTokenizer(hf_tok, cfg.clip.max_length)
    else:
        transform = clip_image_transform(cfg.clip.image_size)
    kw = {"coco_dir": v.coco_dir, "nsfw_dir": v.nsfw_dir, "coco_pattern": v.coco_pattern, "transform": transform}
    train = load_visu(v.train, limit=v.max_train, **kw)
    val = load_visu(v.val, limit=v.max_val, **kw) if v.val else None
    test = load_visu(v.test, limit=v.max_test, **kw)
    if clip_config is not None:  # the processor's output must be the size the vision tower was built for
        side, want = test.safe_image.batch([0]).shape[-1], clip_config.vision_config.image_size
        if side != want:
            raise UnlearnkitError(f"the image processor of {src!r} makes {side}px images; its model expects {want}px")
    if cfg.clip.from_pretrained is None:  # a small CLIP: a word vocabulary over every caption
        texts = [t for q in (train, val, test) if q is not None for t in q.safe_text + q.unsafe_text]
        tok = WordTokenizer.fit(texts, max_length=cfg.clip.max_length)
    spec = {"dataset": "visu", "n_train": len(train), "n_val": len(val) if val else 0, "n_test": len(test),
            "files": config_hash({"train": v.train, "val": v.val, "test": v.test, "ids": test.ids})}  # fmt: skip
    return ConceptData("visu", train, val, test, tok, [], spec, processor)


def _vocab_size(data: ConceptData) -> tuple[int, int]:
    tok = data.tokenizer
    if not isinstance(tok, WordTokenizer):
        raise UnlearnkitError("a small CLIP config needs a word tokenizer")
    return len(tok), tok.max_length


@contextmanager
def _threads(n: int, device: torch.device) -> Iterator[None]:
    old = torch.get_num_threads()
    if n and device.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _versions() -> dict[str, str]:
    import transformers

    return {"unlearnkit": unlearnkit.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


# -- the runner -----------------------------------------------------------------------------------------
def validate_concept_config(cfg: ConceptRunConfig) -> tuple[list[ConceptMethod], torch.device]:
    """Everything that can be checked without data: methods, metrics, device, the CLIP source."""
    methods = resolve_concept_methods(cfg)
    if cfg.metrics is not None:
        select_metrics(cfg.metrics, "clip", "a setting-3 config")
    device = resolve_device(cfg.device)
    if cfg.clip.config is not None:
        CLIP_CONFIGS.get(cfg.clip.config)
    elif Path(cfg.clip.from_pretrained or "").expanduser().exists():
        path = Path(cfg.clip.from_pretrained or "").expanduser()
        check_clip_dir(path)
        if cfg.dataset == "visu":  # ViSU captions and images go through the checkpoint's own files
            _check_preprocessing_files(path)
    return methods, device


def _check_preprocessing_files(path: Path) -> None:
    """Refuse, in one line, a local checkpoint without the tokenizer or image processor ViSU needs."""
    bpe = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not (path / "tokenizer.json").is_file() and not bpe:
        raise UnlearnkitError(f"{path} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
    if not (path / "preprocessor_config.json").is_file():
        raise UnlearnkitError(f"{path} has no image processor file (preprocessor_config.json)")


def run_concept_benchmark(
    cfg: ConceptRunConfig, out_dir: str | Path, *, progress: ProgressSink | None = None
) -> BenchmarkResult:
    """Run (or resume) the setting-3 benchmark ``cfg`` into ``out_dir``.

    Args:
        cfg: the validated config.
        out_dir: where ``results.db``, the reports (and, with ``save_models``, the unlearned CLIPs) go.
        progress: a progress sink (e.g. :class:`~unlearnkit.experiments.progress.RichProgress`).
    """
    t_start = time.perf_counter()
    progress = progress or NullProgress()
    methods, device = validate_concept_config(cfg)
    fixed = load_concept_data(cfg, cfg.seeds[0]) if cfg.dataset == "visu" else None  # checked before writing
    out = ensure_writable_dir(out_dir)
    store = ResultsStore(out / "results.db")
    cache = ModelCache(Path(cfg.cache_dir) / "models" if cfg.cache_dir else None)
    result = BenchmarkResult(out_dir=out)
    progress.start(len(cfg.seeds) * (len(methods) + 1))
    try:
        with _threads(cfg.threads, device):
            for seed in cfg.seeds:
                data = fixed if fixed is not None else load_concept_data(cfg, seed)
                _run_seed(cfg, data, seed, methods, store, cache, device, progress, result, out)
    finally:
        progress.close()
    from unlearnkit.reports import write_reports

    result.reports = write_reports(store.runs(), out)
    result.wall_s = time.perf_counter() - t_start
    return result


def _original(
    cfg: ConceptRunConfig, data: ConceptData, seed: int, cache: ModelCache, device: torch.device,
    progress: ProgressSink, result: BenchmarkResult, label: str,
) -> tuple[CLIPModel, dict[str, Any]]:  # fmt: skip
    """The model before unlearning: a cached pretrained small CLIP, or ``from_pretrained`` weights."""
    if cfg.clip.from_pretrained is not None:
        return load_clip(cfg.clip.from_pretrained).to(device), {}
    vocab, max_len = _vocab_size(data)
    name = cfg.clip.config or ""
    image_size = data.spec.get("image_size", cfg.clip.image_size)
    key = {"role": "concept_original", "clip": name, "vocab": config_hash({"v": getattr(data.tokenizer, "vocab", [])}),
           "max_length": max_len, "image_size": image_size, "data": data.spec, "pretrain": cfg.pretrain.model_dump(),
           "seed": seed}  # fmt: skip

    def make() -> CLIPModel:
        return small_clip(name, vocab_size=vocab, max_length=max_len, image_size=image_size, seed=seed)

    def train(model: CLIPModel) -> dict[str, Any]:
        progress.run_started(f"{label} pretrain {name}")
        gen = seed_everything(seed)
        t0 = time.perf_counter()
        info = pretrain_clip(model.to(device), data.train, data.tokenizer, generator=gen, on_epoch=progress.epoch,
                             **cfg.pretrain.model_dump())  # fmt: skip
        result.trained_models += 1
        return {"time_s": time.perf_counter() - t0, "loss": info["loss"], "device": str(device)}

    seed_everything(seed)
    model, info, _ = cache.get_or_train(key, make, train)
    return model.to(device).eval(), info


def _run_seed(
    cfg: ConceptRunConfig, data: ConceptData, seed: int, methods: list[ConceptMethod], store: ResultsStore,
    cache: ModelCache, device: torch.device, progress: ProgressSink, result: BenchmarkResult, out: Path,
) -> None:  # fmt: skip
    scenario = {"dataset": data.name, "forget": FORGET, "seed": seed,
                **{k: v for k, v in data.spec.items() if k not in ("dataset", "seed")}}  # fmt: skip
    model_label = cfg.clip.label
    base = {"setting": 3, "scenario": scenario, "model": model_label, "clip": cfg.clip.model_dump(),
            "pretrain": cfg.pretrain.model_dump() if cfg.clip.config else None, "metrics": cfg.metrics}  # fmt: skip
    splits_hash = config_hash({"data": data.spec})
    label = f"{data.name} {FORGET} s{seed}"
    todo: list[tuple[str, dict[str, Any], ConceptMethod | None]] = [(ORIGINAL, {}, None)]
    todo += [(m.name, m.get_params(), m) for m in methods]
    keyed = [(config_hash({**base, "method": n, "params": p}), n, p, m) for n, p, m in todo]
    pending = [k for k in keyed if not store.has(k[0])]
    for key, n, _, _ in keyed:
        if not any(key == k[0] for k in pending):
            result.skipped += 1
            progress.run_finished(f"{label} {n} (stored)", "ok")
    if not pending:
        return

    def record(
        key: str, name: str, params: dict[str, Any], status: str, metrics: dict[str, Any], error: str | None
    ) -> None:
        store.put({
            "key": key, "status": status, "error": error, "scenario": scenario, "model": model_label,
            "method": name, "params": params, "seed": seed, "config": base, "metrics": metrics,
            "splits_hash": splits_hash, "versions": _versions(),
        })  # fmt: skip
        result.ran += 1
        result.failed += status == "failed"
        progress.run_finished(f"{label} {name}", status)

    try:
        original, info = _original(cfg, data, seed, cache, device, progress, result, label)
    except (UnlearnkitError, KeyboardInterrupt):
        raise
    except Exception as e:  # NaN loss or another failure: every pending run of this seed fails
        for key, n, p, _ in pending:
            record(key, n, p, "failed", {}, f"pretraining the original CLIP failed: {type(e).__name__}: {e}")
        return

    def metrics_of(model: torch.nn.Module, extra: dict[str, float]) -> dict[str, Any]:
        vals = evaluate_concept(model, data, metrics=cfg.metrics, batch_size=cfg.eval_batch_size)
        return {**{k: value_to_json(v) for k, v in vals.items()}, **extra}

    for key, name, params, method in pending:
        progress.run_started(f"{label} {name}")
        if method is None:
            timing = {"time_s": float(info["time_s"])} if "time_s" in info else {}
            record(key, name, params, "ok", metrics_of(original, timing), None)
            continue
        try:
            udata = ConceptUnlearnData(data.train, data.tokenizer, data.val, device=device, seed=seed,
                                       on_epoch=progress.epoch)  # fmt: skip
            model = method.unlearn(original, udata)
            extra = {"time_s": method.elapsed_s_, **{k: float(v) for k, v in getattr(method, "report_", {}).items()}}
            metrics = metrics_of(model, extra)
            if cfg.save_models:
                _export(model, data, out / "models" / f"{name}-{key}")
            record(key, name, params, "ok", metrics, None)
        except (KeyboardInterrupt, UnlearnkitError):
            raise
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            where = f"{Path(tb.filename).name}:{tb.lineno}"
            record(key, name, params, "failed", {}, f"{type(e).__name__}: {e} (at {where})")


def _export(model: CLIPModel, data: ConceptData, path: Path) -> None:
    """``save_pretrained`` the unlearned CLIP with what encodes its inputs: from a ``from_pretrained`` checkpoint,
    its tokenizer and image processor, so the folder drops into any pipeline that loads CLIP (and into
    ``clip.from_pretrained`` again); for a small CLIP, its word vocabulary (``word_tokenizer.json``)."""
    save_clip(model, path)
    if isinstance(data.tokenizer, WordTokenizer):
        data.tokenizer.save(path)
    elif isinstance(data.tokenizer, HFTokenizer):
        data.tokenizer.tokenizer.save_pretrained(path)
    if data.image_processor is not None:
        data.image_processor.save_pretrained(path)


def run_concept_cli(
    config: str | Path,
    out_dir: str | Path,
    *,
    progress: ProgressSink | None = None,
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    not_applicable: dict[str, Any] | None = None,
) -> BenchmarkResult:
    """``unlearnkit run --config X.yaml`` for a ``setting: 3`` config, with the CLI's overrides.

    Args:
        config: the YAML file.
        out_dir: the output directory.
        progress: a progress sink.
        overrides: config keys set on the command line (``methods``, ``seeds``, ``device``, ``cache_dir``,
            ``threads``), as for a setting-1 config.
        epochs: ``--epochs``: the small CLIP's pretraining epochs.
        not_applicable: classifier-only options given on the command line (flag -> value); any set one
            is refused in one line.
    """
    for flag, value in (not_applicable or {}).items():
        if value:
            raise UnlearnkitError(f"option {flag} does not apply to a setting-3 (concept) config: {config}")
    cfg = load_concept_config(config)
    changes = dict(overrides or {})
    if epochs is not None:
        changes["pretrain"] = {**cfg.pretrain.model_dump(), "epochs": epochs}
    if changes:
        cfg = parse_concept_config({**cfg.model_dump(), **changes}, "options")
    return run_concept_benchmark(cfg, out_dir, progress=progress)
