"""The Python API's verbs: ``train``, ``unlearn`` and ``evaluate``.

Every verb (``evaluate`` too) leaves the caller's process as it found it (thread count, deterministic-algorithms
flag, RNG states, cudnn flags: :func:`~unlearnkit.engine.preserved_global_state`). On CPU each verb uses
``threads`` torch threads (default 1, as the command line and the benchmark runner: one thread was as fast for
the small offline models and gives the same numbers as ``unlearnkit run``; 0 leaves torch's own count).

``train`` and ``unlearn`` record how long they took (a weak registry, like the recipes), so ``evaluate`` reports
``time_s`` (and ``time_ratio_vs_retrain`` when ``reference`` came from ``train`` or ``unlearn``) without a
``timing`` argument.

``train`` remembers how it built and trained a model (a :class:`TrainRecipe`: model factory, recipe, seed),
so ``unlearn("retrain", model, ...)`` and ``unlearn("sisa", model, ...)`` can rebuild and retrain it as the
runner does; the recipe is kept in a weak registry keyed by the module (nothing is attached to the module,
so pickling it is unaffected) and passed on to the unlearned model when it keeps the architecture.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from unlearnkit.engine import TrainConfig, preserved_global_state, resolve_device, seed_everything, train_model
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import Method, UnlearnData, create_method
from unlearnkit.metrics import MetricValue
from unlearnkit.metrics import evaluate as _evaluate
from unlearnkit.metrics.shadow_attacks import ULIRA_OUT_DEFAULT, check_ulira_out
from unlearnkit.models import create_model
from unlearnkit.protocols import ResourceBuilder, ResourceInputs
from unlearnkit.protocols.relearn import RelearnSettings
from unlearnkit.scenario import Scenario

if TYPE_CHECKING:
    from unlearnkit.data import DatasetBundle
    from unlearnkit.experiments import BenchmarkResult, RunConfig
    from unlearnkit.experiments.progress import ProgressSink

#: forget images given to a setting-2 (no-retain) method when ``shots`` is not set (the run config's default)
DEFAULT_SHOTS = 10
#: torch CPU threads used by the verbs when ``threads`` is not given: the run config's default (``run.threads``)
DEFAULT_THREADS = 1

ModelSpec = str | nn.Module | Callable[[], nn.Module]


@dataclass(frozen=True)
class TrainRecipe:
    """How :func:`train` built and trained a model: what retrain and SISA need to do it again.

    Attributes:
        make_model: returns a fresh, untrained model of the same architecture (``None`` when ``train`` was
            given a module instance: there is then no way to build another).
        config: the training recipe.
        seed: the seed the model was trained with.
    """

    make_model: Callable[[], nn.Module] | None
    config: TrainConfig
    seed: int


_RECIPES: weakref.WeakKeyDictionary[nn.Module, TrainRecipe] = weakref.WeakKeyDictionary()


_ELAPSED: weakref.WeakKeyDictionary[nn.Module, float] = weakref.WeakKeyDictionary()
#: torch CPU threads :func:`train` / :func:`unlearn` ran with (float results depend on it)
_THREADS: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()


def recipe_of(model: nn.Module) -> TrainRecipe | None:
    """The :class:`TrainRecipe` of a model returned by :func:`train` (or :func:`unlearn` on one), else ``None``."""
    return _RECIPES.get(model)


def elapsed_of(model: nn.Module) -> float | None:
    """Seconds :func:`train` or :func:`unlearn` took to produce ``model`` (``None`` for any other model)."""
    return _ELAPSED.get(model)


def threads_of(model: nn.Module) -> int | None:
    """torch CPU threads :func:`train` or :func:`unlearn` used to produce ``model`` (``None`` for any other model)."""
    return _THREADS.get(model)


def _use_threads(threads: int | None, device: torch.device) -> None:
    """Set torch's CPU thread count for a verb (the caller's is restored by ``preserved_global_state``)."""
    n = DEFAULT_THREADS if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 256:
        raise UnlearnkitError(f"threads must be an integer in [0, 256] (0: torch's default), got {threads!r}")
    if n and device.type == "cpu":
        torch.set_num_threads(n)


def model_factory(
    model: str | Callable[[], nn.Module], num_classes: int, in_shape: tuple[int, ...], **model_kwargs: Any
) -> Callable[[], nn.Module]:
    """A zero-argument factory: a registered model name (built for ``num_classes``/``in_shape``) or a callable.

    A callable (an ``nn.Module`` class or a function) is called with no arguments and must return a module.
    """
    if isinstance(model, str):
        create_model(model, num_classes, in_shape, **model_kwargs)  # unknown name/option: refused now, not later

        def make() -> nn.Module:
            return create_model(model, num_classes, in_shape, **model_kwargs)

        return make
    if isinstance(model, nn.Module) or not callable(model):
        raise UnlearnkitError(
            f"a model factory must be a registered model name or a callable returning an nn.Module, "
            f"got {type(model).__name__}"
        )
    if model_kwargs:
        raise UnlearnkitError(f"model options {sorted(model_kwargs)} apply only to a registered model name")
    factory = model

    def make_checked() -> nn.Module:
        net = factory()
        if not isinstance(net, nn.Module):
            raise UnlearnkitError(f"the model factory returned {type(net).__name__}, not an nn.Module")
        return net

    return make_checked


@preserved_global_state()
def train(
    model: ModelSpec,
    scenario: Scenario,
    *,
    on: str = "train",
    config: TrainConfig | None = None,
    seed: int | None = None,
    device: str | torch.device = "auto",
    threads: int | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """Train ``model`` on a split of ``scenario``, as the benchmark runner trains its reference models.

    The initial weights are drawn right after seeding with ``seed`` (for a name or a factory), so the same
    seed gives the same model; the returned module remembers its :class:`TrainRecipe` (see :func:`recipe_of`).

    Args:
        model: a registered model name (built for the scenario's classes and input shape), a callable returning
            an ``nn.Module`` (e.g. the class of a user model), or an ``nn.Module`` instance (trained in place).
        scenario: the scenario.
        on: ``"train"`` (D = D_r ∪ D_f: the original model) or ``"retain"`` (retrain from scratch).
        config: the training recipe (default :class:`TrainConfig`).
        seed: defaults to the scenario's seed.
        device: ``auto``/``cpu``/``cuda``/``mps``.
        threads: torch CPU threads while training (default 1, as ``unlearnkit run``; 0: torch's default).
        **model_kwargs: options of a registered model.
    """
    if on not in ("train", "retain"):
        raise UnlearnkitError(f"train(on=...) must be 'train' or 'retain', got {on!r}")
    if isinstance(model, nn.Module) and model_kwargs:
        raise UnlearnkitError(f"model options {sorted(model_kwargs)} apply only to a registered model name")
    seed = scenario.seed if seed is None else seed
    config = config or TrainConfig()
    dev = resolve_device(device)
    _use_threads(threads, dev)
    make = (
        None
        if isinstance(model, nn.Module)
        else model_factory(model, scenario.bundle.num_classes, scenario.bundle.in_shape, **model_kwargs)
    )
    seed_everything(seed)  # the initial weights, as the runner draws them
    net = model if make is None else make()
    generator = seed_everything(seed)  # the batch order (the runner reseeds before training, too)
    t0 = time.perf_counter()
    train_model(net, scenario.split(on), config, device=dev, generator=generator)
    _ELAPSED[net] = time.perf_counter() - t0
    _THREADS[net] = torch.get_num_threads()
    _RECIPES[net] = TrainRecipe(make, config, seed)
    return net


@preserved_global_state()
def unlearn(
    method: str | Method,
    model: nn.Module,
    scenario: Scenario | UnlearnData,
    *,
    device: str | torch.device | None = None,
    seed: int | None = None,
    model_factory: str | Callable[[], nn.Module] | None = None,
    train_config: TrainConfig | None = None,
    shots: int | None = None,
    few_shot_folder: str | None = None,
    threads: int | None = None,
    **params: Any,
) -> nn.Module:
    """Run ``method`` (a registered name with hyperparameters ``params``, or a method) on a copy of ``model``.

    The method gets what the benchmark runner gives it: every training split and the training recipe
    (setting 1), or only ``shots`` forget images (setting 2, no retain data).

    Args:
        method: a registered method name, or a :class:`Method` instance (then ``params`` must be empty).
        model: the trained model (left untouched).
        scenario: a :class:`Scenario`, or an :class:`UnlearnData` built by hand (used as given, except for
            ``device``, ``seed`` and a missing training recipe, filled in on a copy).
        device: where to unlearn (default: ``auto`` for a scenario, the ``UnlearnData``'s own device otherwise).
        seed: seeds the method (default: the scenario's / the ``UnlearnData``'s seed).
        model_factory: for methods that retrain (``retrain``, ``sisa``): a registered model name or a callable
            returning a fresh model; default: the factory :func:`train` recorded for ``model``.
        train_config: the training recipe for those methods; default: the one :func:`train` recorded, else
            :class:`TrainConfig` () when ``model_factory`` is given.
        shots: forget images given to a setting-2 method (default 10); refused for other methods.
        few_shot_folder: a folder of external forget images for a setting-2 method.
        threads: torch CPU threads while unlearning (default 1, as ``unlearnkit run``; 0: torch's default).

    The method's wall time is recorded for :func:`evaluate` (its ``time_s``; see :func:`elapsed_of`).
    """
    if isinstance(method, Method):
        if params:
            raise UnlearnkitError("hyperparameters go to the method instance, not to unlearn(), when a Method is given")
        m = method
    else:
        m = create_method(method, **params)
    if m.setting != 2 and (shots is not None or few_shot_folder is not None):
        raise UnlearnkitError(
            f"shots/few_shot_folder are for the no-retain (setting 2) methods; {m.name!r} is a setting-{m.setting} "
            "method"
        )
    if m.setting == 2 and (model_factory is not None or train_config is not None):
        raise UnlearnkitError(f"model_factory/train_config are for methods that retrain; {m.name!r} does not")
    if isinstance(scenario, UnlearnData):
        if shots is not None or few_shot_folder is not None:
            raise UnlearnkitError("shots/few_shot_folder need a Scenario to draw the forget images from")
        data = _with_overrides(scenario, device, seed)
    else:
        data = _data_from_scenario(m, scenario, device, seed, shots, few_shot_folder)
    if m.setting != 2 and not data.has("train_recipe"):  # the runner gives every setting-1 method the recipe
        m.validate_params()  # a bad hyperparameter is reported before a missing recipe
        data = _with_recipe(m, data, model, model_factory, train_config)
    _use_threads(threads, data.device)
    out = m.unlearn(model, data)
    _ELAPSED[out] = m.elapsed_s_
    _THREADS[out] = torch.get_num_threads()
    rec = recipe_of(model)
    if rec is not None and m.preserves_architecture:
        _RECIPES[out] = rec
    return out


def _with_overrides(data: UnlearnData, device: str | torch.device | None, seed: int | None) -> UnlearnData:
    """A shallow copy of ``data`` with ``device``/``seed`` applied (the caller's object is not changed)."""
    changes: dict[str, Any] = {}
    if device is not None:
        changes["device"] = resolve_device(device)
    if seed is not None:
        changes["seed"] = int(seed)
    return dataclasses.replace(data, **changes) if changes else data


def _data_from_scenario(
    m: Method,
    scenario: Scenario,
    device: str | torch.device | None,
    seed: int | None,
    shots: int | None,
    few_shot_folder: str | None,
) -> UnlearnData:
    """The runner's view of ``scenario`` for ``m``: all splits (setting 1) or ``shots`` forget images (setting 2)."""
    dev = "auto" if device is None else device
    if m.setting != 2:
        return UnlearnData.from_scenario(scenario, device=dev, seed=seed)
    data = UnlearnData.from_scenario(scenario, provide=(), device=dev, seed=seed)
    data._forget = scenario.few_shot_forget(DEFAULT_SHOTS if shots is None else shots, folder=few_shot_folder)
    return data


def _with_recipe(
    m: Method,
    data: UnlearnData,
    model: nn.Module,
    factory: str | Callable[[], nn.Module] | None,
    train_config: TrainConfig | None,
) -> UnlearnData:
    """``data`` with the model factory and training recipe: the explicit ones, else those :func:`train` recorded."""
    rec = recipe_of(model)
    make = data.make_model
    if factory is not None:
        make = model_factory(factory, data.num_classes, data.in_shape)
    elif make is None and rec is not None:
        make = rec.make_model
    cfg = train_config or data.train_config or (rec.config if rec is not None else None)
    if cfg is None and factory is not None:
        cfg = TrainConfig()
    if make is None or cfg is None:
        if "train_recipe" not in m.needs:
            return data
        raise UnlearnkitError(
            f"method {m.name!r} needs a model factory and training recipe: pass model_factory= (a registered model "
            "name or a callable returning a fresh model) and train_config=, or a model returned by uk.train"
        )
    return dataclasses.replace(data, make_model=make, train_config=cfg)


@preserved_global_state()
def evaluate(
    model: nn.Module,
    scenario: Scenario,
    *,
    reference: nn.Module | None = None,
    random_model: nn.Module | None = None,
    original: nn.Module | None = None,
    metrics: Iterable[str] | None = None,
    timing: dict[str, float] | None = None,
    device: str | torch.device = "auto",
    method: str | None = None,
    method_params: Mapping[str, Any] | None = None,
    unlearned_models: Sequence[nn.Module] | None = None,
    model_factory: str | Callable[[], nn.Module] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    lira_shadows: int = 0,
    lira_nonmember_split: str = "auto",
    lira_fixed_variance: bool = True,
    ulira_out: str = ULIRA_OUT_DEFAULT,
    ensemble_n: int | None = None,
    ensemble_originals: str = "shared",
    cache_dir: str | Path | None = None,
    relearn: Mapping[str, Any] | bool | None = None,
    threads: int | None = None,
) -> dict[str, MetricValue]:
    """Compute ``metrics`` (default: every registered one) for ``model`` on ``scenario``.

    Metrics that compare against extra models get them built here, once, from the architecture and the
    recipe: LiRA's shadows (``lira_shadows`` >= 4), U-LiRA's unlearned shadows (also ``method``), and the
    NeurIPS-2023 ε score's ensembles (``ensemble_n`` >= 2 with ``method`` run N times from ``original``, or
    N given ``unlearned_models``). Trained models of a registered architecture are cached under
    ``cache_dir`` as the benchmark runner caches them, so the values equal the runner's for the same seed.

    Args:
        model: the model to evaluate.
        scenario: the scenario whose splits are used.
        reference: the model retrained on D_r (needed by divergence metrics).
        random_model: randomly initialised model of the same architecture (ZRF).
        original: the model before unlearning (the ε score's N unlearning runs start from it).
        metrics: names to compute; unknown names raise.
        timing: measured costs (``time_s``, ``retrain_time_s``, ``peak_mem_mb``); by default ``time_s`` is the
            time :func:`unlearn` (or :func:`train`) took to produce ``model`` and ``retrain_time_s`` the time
            ``reference`` took; given keys override those.
        device: where to run the forward passes and any training.
        method: the registered method that produced ``model`` (U-LiRA and the ε score rerun it).
        method_params: its hyperparameters.
        unlearned_models: N models from N runs of the unlearning algorithm (the ε score's unlearned side).
        model_factory: the architecture: a registered model name or a zero-argument ``nn.Module`` factory.
        model_kwargs: passed to a registered model's factory.
        train_config: the recipe ``original`` was trained with (default :class:`TrainConfig`, as ``train``).
        lira_shadows: LiRA shadow models (0 = off, else >= 4).
        lira_nonmember_split: ``auto``, ``test``, ``val`` or ``forget_test``.
        lira_fixed_variance: one global σ in the LiRA tests (advised below ~64 shadows).
        ulira_out: U-LiRA's OUT side, ``unlearned`` (shadows that never trained on x, unlearned too) or
            ``untouched`` (the same shadows as trained).
        ensemble_n: models per side of the ε score (default: ``len(unlearned_models)``, else 0 = off).
        ensemble_originals: ``shared`` (every run starts from ``original``, as published) or ``per_seed``.
        cache_dir: root of the model caches (default ``$UNLEARNKIT_CACHE``); unused for a factory callable.
        relearn: the relearning attacks' settings (``k``, ``steps``, ``seeds``, ``lr``, ...; ``None``: the
            defaults, ``False``: off); see :class:`unlearnkit.protocols.relearn.RelearnSettings`.
        threads: torch CPU threads (default 1, as ``unlearnkit run``; 0: torch's default).

    Returns:
        name -> float (or a JSON-able mapping), or :class:`~unlearnkit.metrics.NotComputed` with the reason.

    Raises:
        UnlearnkitError: unknown metric, model or method names, invalid hyperparameters, or an
            ``ensemble_n`` that contradicts ``unlearned_models``.
    """
    if isinstance(lira_shadows, bool) or not isinstance(lira_shadows, int) or lira_shadows < 0:
        raise UnlearnkitError(f"lira_shadows must be an integer >= 0, got {lira_shadows!r}")
    check_ulira_out(ulira_out)
    given = list(unlearned_models) if unlearned_models is not None else None
    if given is not None and not all(isinstance(m, nn.Module) for m in given):
        raise UnlearnkitError("unlearned_models must be a sequence of nn.Module")
    if ensemble_n is None:
        ensemble_n = len(given) if given is not None else 0
    elif given is not None and ensemble_n != len(given):
        raise UnlearnkitError(f"ensemble_n = {ensemble_n} but {len(given)} unlearned_models were given")
    if method is not None:
        create_method(method, **dict(method_params or {})).validate_params()  # bad names fail before any work
    if model_factory is not None and train_config is None:
        train_config = TrainConfig()
    dev = resolve_device(device)
    _use_threads(threads, dev)
    measured = {
        "time_s": _ELAPSED.get(model),
        "retrain_time_s": _ELAPSED.get(reference) if reference is not None else None,
    }
    timing = {**{k: v for k, v in measured.items() if v is not None}, **(timing or {})}
    inputs = ResourceInputs(
        scenario, model=model_factory, model_kwargs=dict(model_kwargs or {}), train=train_config, device=dev,
        method=method, params=dict(method_params or {}), original=original, unlearned_models=given,
        lira_shadows=lira_shadows, lira_nonmember_split=lira_nonmember_split, ensemble_n=ensemble_n,
        ensemble_originals=ensemble_originals, evaluated=model,
        relearn=RelearnSettings.parse(relearn).to_dict(),
    )  # fmt: skip
    return _evaluate(
        model, scenario, reference=reference, random_model=random_model, original=original, metrics=metrics,
        timing=timing, device=dev, resources=ResourceBuilder(inputs, cache_dir=cache_dir),
        options={"lira_fixed_variance": lira_fixed_variance, "ulira_out": ulira_out},
    )  # fmt: skip


# -- a whole benchmark from Python --------------------------------------------------------------------------------

#: user model factories registered by :func:`benchmark` (name -> (factory, registered constructor))
_USER_MODELS: dict[str, tuple[Callable[..., nn.Module], Callable[..., nn.Module]]] = {}


def _register_user_models(models: Mapping[str, Callable[..., nn.Module]]) -> None:
    """Register each ``name -> factory`` (a ``(num_classes, in_shape)`` constructor or a zero-argument one)."""
    import inspect

    from unlearnkit.models import MODELS

    for name, factory in models.items():
        if not isinstance(name, str) or not name:
            raise UnlearnkitError(f"models= maps names to factories; got the name {name!r}")
        if isinstance(factory, nn.Module) or not callable(factory):
            raise UnlearnkitError(
                f"models[{name!r}] must be a callable returning an nn.Module (e.g. the class), got "
                f"{type(factory).__name__}"
            )
        known = _USER_MODELS.get(name)
        if known is not None and known[0] is factory:
            continue  # the same factory again (a second benchmark call): already registered
        if name in MODELS and known is None:
            raise UnlearnkitError(f"model name {name!r} is already registered; give your model another name")
        try:
            required = [
                p for p in inspect.signature(factory).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]  # fmt: skip
        except (TypeError, ValueError):  # a builtin without a signature: called as (num_classes, in_shape)
            required = [None, None]
        if required:
            constructor: Callable[..., nn.Module] = factory
        else:

            def constructor(num_classes: int, in_shape: tuple[int, ...], _f: Callable[[], nn.Module] = factory):
                return _f()

        MODELS.add(name, constructor)  # a different factory under a name given before: warns, the later one wins
        _USER_MODELS[name] = (factory, constructor)


def export_towers(clip: str | Path, base: str, out: str | Path, *, into: str) -> Path:
    """Put an unlearned CLIP's tower into a generator and save it, as ``unlearnkit export`` does.

    Args:
        clip: a CLIP folder (``save_pretrained``, safetensors) with its tokenizer.
        base: a diffusers text-to-image pipeline (``into="diffusers"``: the text tower becomes its
            ``text_encoder``, with the CLIP's tokenizer) or a LLaVA model (``into="llava"``: the vision tower
            becomes its ``vision_tower``), a local folder or a Hub name (safetensors only).
        out: the new folder the swapped pipeline or model is saved in.
        into: ``"diffusers"`` or ``"llava"``.

    Returns:
        ``out``. Bad input (a tower whose width does not fit, a folder that is not a CLIP checkpoint) raises
        :class:`~unlearnkit.errors.UnlearnkitError` in one line, before anything is written.
    """
    from unlearnkit.experiments.config import load_concept_entries

    load_concept_entries(required=True)  # one line when transformers is missing
    from unlearnkit.concept.export import export_towers as _export

    return _export(clip, base, out, into=into)  # type: ignore[arg-type]


def benchmark(
    config: RunConfig | Mapping[str, Any] | str | Path | None = None,
    out: str | Path = "runs/benchmark",
    *,
    bundle: DatasetBundle | None = None,
    models: Mapping[str, Callable[..., nn.Module]] | None = None,
    retry_failed: bool = False,
    max_cells: int | None = None,
    progress: ProgressSink | None = None,
) -> BenchmarkResult:
    """Run (or resume) a benchmark as ``unlearnkit run`` does: the same ``results.db`` and reports in ``out``.

    Args:
        config: a run config: a mapping (flat keys or sections, as a YAML config), the path of a YAML file, a
            :class:`~unlearnkit.experiments.RunConfig`, or ``None`` for the default benchmark.
        out: the output directory (``results.db``, ``report.json``, ``report.md``, ``report.html``).
        bundle: your own data (a :class:`~unlearnkit.DatasetBundle`, e.g. from :func:`~unlearnkit.from_torch`);
            the config's ``dataset`` is then the bundle's name and need not be registered.
        models: your own architectures by name, usable as the config's ``model``: a constructor
            ``(num_classes, in_shape) -> nn.Module`` as for :func:`~unlearnkit.register_model`, or a zero-argument
            factory such as an ``nn.Module`` class.
        retry_failed: rerun runs stored as failed.
        max_cells: refuse to plan more runs than this (``None``: no limit).
        progress: a progress sink (default: none).

    Returns:
        a :class:`~unlearnkit.experiments.BenchmarkResult` (counts, errors, ``reports``: format -> path).
    """
    from importlib import resources

    from unlearnkit._config import load_yaml_text
    from unlearnkit.data import DatasetBundle
    from unlearnkit.experiments.config import ConceptRunConfig, RunConfig, load_config, parse_config
    from unlearnkit.experiments.runner import run_benchmark

    if models:
        _register_user_models(models)
    if bundle is not None and not isinstance(bundle, DatasetBundle):
        raise UnlearnkitError(f"bundle must be a DatasetBundle (see uk.from_torch), got {type(bundle).__name__}")
    if config is None:
        text = resources.files("unlearnkit").joinpath("configs/default.yaml").read_text()
        cfg = parse_config(load_yaml_text(text, "default config"), "default config")
    elif isinstance(config, RunConfig | ConceptRunConfig):
        cfg = config
    elif isinstance(config, str | Path):
        cfg = load_config(config)
    elif isinstance(config, Mapping):
        cfg = parse_config(dict(config), "benchmark config")
    else:
        raise UnlearnkitError(f"config must be a mapping, a YAML path or a RunConfig, got {type(config).__name__}")
    if bundle is not None:
        if isinstance(cfg, ConceptRunConfig):
            raise UnlearnkitError("bundle= is for classifier benchmarks; a setting-3 config builds its own data")
        if cfg.dataset != bundle.name:
            cfg = cfg.replace(dataset=bundle.name)
    return run_benchmark(cfg, out, bundle=bundle, progress=progress, retry_failed=retry_failed, max_cells=max_cells)


def tune(
    config: RunConfig | Mapping[str, Any] | str | Path,
    out: str | Path = "runs/tune",
    *,
    methods: Sequence[str] | None = None,
    trials: int = 30,
    proxies: int = 2,
    max_time_ratio: float = 0.5,
    relearn_weight: float = 0.0,
    compare: bool = True,
    ray: bool = False,
    ray_address: str | None = None,
    on_trial: Callable[[str, int, str, float | None, float | None], None] | None = None,
) -> Any:
    """Tune each method's hyperparameters on proxy requests (never the evaluated ones), as ``unlearnkit tune``.

    Every method gets ``trials`` Optuna trials (TPE, median pruning; the first is its defaults) on ``proxies``
    proxy requests per request kind of ``config`` (other classes, other seeds), minimising the leaderboard's
    mean |gap| to retrain with ``time_ratio_vs_retrain <= max_time_ratio``. Rerunning with the same ``out``
    resumes. See :mod:`unlearnkit.experiments.tune`.

    Args:
        config: a run config (mapping, YAML path or :class:`~unlearnkit.experiments.RunConfig`); its requests and
            seeds are the evaluated ones.
        out: the output directory (``tuned.yaml``, ``results.db``, ``tune.optuna.db``, reports).
        methods: the methods to tune (default: the config's).
        trials: trials per method (> 0).
        proxies: proxy requests per request kind.
        max_time_ratio: the time constraint (mean ratio of the method's time to retraining's).
        relearn_weight: weight of the after-relearning forget-accuracy gap in the objective (0: off).
        compare: run the evaluated requests with defaults and tuned parameters into ``out`` (the report's
            "tuned vs defaults" leaderboard).
        ray: run each trial's proxy runs as tasks on a local Ray; ``ray_address``: on that cluster.
        on_trial: called after each trial with ``(method, number, state, value, best so far)``.

    Returns:
        a :class:`~unlearnkit.experiments.tune.TuneResult`.
    """
    from unlearnkit.experiments.config import ConceptRunConfig, RunConfig, load_config, parse_config
    from unlearnkit.experiments.tune import TuneSettings, tunable_methods
    from unlearnkit.experiments.tune import tune as _tune

    if isinstance(config, RunConfig | ConceptRunConfig):
        cfg = config
    elif isinstance(config, str | Path):
        cfg = load_config(config)
    elif isinstance(config, Mapping):
        cfg = parse_config(dict(config), "tune config")
    else:
        raise UnlearnkitError(f"config must be a mapping, a YAML path or a RunConfig, got {type(config).__name__}")
    settings = TuneSettings(trials=trials, proxies=proxies, max_time_ratio=max_time_ratio,
                            relearn_weight=relearn_weight)  # fmt: skip
    settings.check()
    if not (ray or ray_address):
        return _tune(cfg, out, methods=methods, settings=settings, compare=compare, on_trial=on_trial)
    from unlearnkit.engine import default_cache_dir
    from unlearnkit.experiments.config import RaySection
    from unlearnkit.experiments.ray_backend import RayExecutor

    if isinstance(cfg, ConceptRunConfig):
        raise UnlearnkitError("tune serves setting-1 (classifier) configs, not a setting-3 config")
    tunable_methods(cfg, methods)  # a bad method name or space: refused before Ray starts
    cache = Path(cfg.cache_dir or default_cache_dir()).expanduser().resolve()
    section = RaySection()
    ex = RayExecutor(cache_dir=str(cache), device=cfg.device, resources=section)
    ex.connect(address=ray_address, timeout_s=section.connect_timeout_s)
    try:
        return _tune(cfg.replace(cache_dir=str(cache)), out, methods=methods, settings=settings, compare=compare,
                     executor=ex, on_trial=on_trial)  # fmt: skip
    finally:
        ex.close()
