"""What every config kind shares: the strict pydantic base, one-line errors, a bounded YAML reader, the limits.

Every config class (the classifier :class:`~unlearnkit.experiments.config.RunConfig`, the sweep's sections,
the setting-3 :class:`~unlearnkit.experiments.config.ConceptRunConfig`) derives from :class:`StrictModel`, so an
unknown key is an error, and reports a validation problem as one line (:func:`one_line`).

YAML is read through :func:`read_yaml` / :func:`load_yaml_text` only, with limits on the file size, the
nesting depth and the size of the document once aliases are expanded, so a hostile file fails in
milliseconds with one line instead of exhausting the stack or the memory.

Run-length limits (:data:`MAX_EPOCHS`, :data:`MAX_STEPS`) stop a typo such as ``epochs: 1000000000`` from
training forever; ``allow_long: true`` in a config (``--allow-long`` on the command line) lifts them.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from unlearnkit.errors import ConfigError

#: the largest YAML file read (bytes)
MAX_YAML_BYTES = 1 << 20
#: the deepest nesting of mappings/lists in a YAML document (after alias expansion)
MAX_YAML_DEPTH = 64
#: the most nodes a YAML document may hold once aliases are expanded (a 1 MiB list of scalars has ~250k)
MAX_YAML_NODES = 1_000_000
#: seeds lie in [0, 2**32) (NumPy's seed range)
SEED_LIMIT = 2**32
#: the most seeds in one config
MAX_SEEDS = 100_000
#: torch threads: 0 (torch's default) up to this many
MAX_THREADS = 256
#: ceiling of training epochs (``train.epochs`` and method hyperparameters ending in ``epochs``)
MAX_EPOCHS = 10_000
#: ceiling of optimisation steps (method hyperparameters ending in ``steps``)
MAX_STEPS = 1_000_000
#: above this many planned cells, a run needs an explicit confirmation (``--yes``)
MAX_CELLS = 2_000


M = TypeVar("M", bound=BaseModel)


class ConfigWarning(UserWarning):
    """A valid but suspicious config value (the CLI prints it as one ``warning:`` line)."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def one_line(e: ValidationError, source: str) -> str:
    """A pydantic error as ``"SOURCE: dotted.location: message (and N more problems)"``."""
    errs = e.errors()
    err = errs[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def validate_model(cls: type[M], data: Any, source: str) -> M:
    """``cls.model_validate(data)`` with a one-line :class:`ConfigError`; ``None`` is an empty mapping."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(one_line(e, source)) from None


# -- YAML ------------------------------------------------------------------------------------------------------


class _YamlLimit(yaml.YAMLError):
    """A limit of the bounded loader was hit (turned into a one-line ConfigError)."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses deep nesting while composing and huge alias expansions before constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expanded(node)
        return super().construct_document(node)


# YAML 1.2 floats without a dot (``1e-3``): PyYAML (YAML 1.1) reads them as strings, which a hyperparameter
# mapping would pass on to a method unconverted
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _check_expanded(root: yaml.Node) -> None:
    """Refuse a document whose alias-expanded tree is too large, too deep, or cyclic (linear in its nodes)."""
    size: dict[int, int] = {}  # id(node) -> expanded node count
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk over the node graph (aliases are shared nodes)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(nid)
            size[nid] = 1 + sum(size[id(c)] for c in children)
            depth[nid] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[nid] > MAX_YAML_NODES:
                raise _YamlLimit(f"more than {MAX_YAML_NODES:,} values once aliases are expanded")
            if depth[nid] > MAX_YAML_DEPTH:
                raise _YamlLimit(f"nested deeper than {MAX_YAML_DEPTH} levels once aliases are expanded")
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise _YamlLimit("an alias refers to a value that contains it (recursive alias)")
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document with the limits (safe types only); problems raise a one-line ConfigError.

    Args:
        text: the document.
        source: how messages name it (``"SOURCE is not valid YAML at line N"``).
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is too large for a config ({len(text):,} characters; the limit is 1 MiB)")
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _YamlLimit as e:
        raise ConfigError(f"{source} is refused: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}") from None
    except RecursionError:  # a limit above should prevent it; never a traceback
        raise ConfigError(f"{source} is refused: nested too deeply") from None


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document in ``path``, read with the limits; problems raise a one-line :class:`ConfigError`.

    Args:
        path: the file.
        what: how the messages name it (``"<what> not found: PATH"``, ``"<what> PATH is not valid YAML at line N"``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    size = p.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {p} is too large for a config ({size:,} bytes; the limit is 1 MiB)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {p} is not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"{what} {p} cannot be read ({e.strerror or e})") from None
    return load_yaml_text(text, f"{what} {p}")


# -- bounded values --------------------------------------------------------------------------------------------


def _distinct(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct")
    return seeds


#: one seed: an integer in [0, 2**32)
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
#: the ``seeds`` of a config (any setting): distinct integers in [0, 2**32), at most MAX_SEEDS of them
Seeds = Annotated[list[Seed], Field(max_length=MAX_SEEDS), AfterValidator(_distinct)]


def _warn_threads(n: int) -> int:
    cores = os.cpu_count()
    if cores is not None and n > cores:
        warnings.warn(
            f"threads: {n} is more than this machine's {cores} CPU cores (slower, not faster)", ConfigWarning,
            stacklevel=2,
        )  # fmt: skip
    return n


#: torch intra-op threads on CPU: 0 (torch's default) to MAX_THREADS; a warning above the core count
Threads = Annotated[int, Field(ge=0, le=MAX_THREADS), AfterValidator(_warn_threads)]


def check_run_length(lengths: Iterable[tuple[str, Any]], allow_long: bool) -> None:
    """Refuse epoch/step counts above the ceilings unless ``allow_long``.

    Args:
        lengths: ``(dotted name, value)`` pairs; a name ending in ``epochs`` is checked against
            :data:`MAX_EPOCHS`, one ending in ``steps`` against :data:`MAX_STEPS`, others are ignored.
        allow_long: lift the ceilings.

    Raises:
        ValueError: (inside a pydantic validator, so it becomes a one-line ConfigError) naming the key.
    """
    if allow_long:
        return
    for name, value in lengths:
        leaf = name.rsplit(".", 1)[-1]
        ceiling = MAX_EPOCHS if leaf.endswith("epochs") else MAX_STEPS if leaf.endswith("steps") else None
        if ceiling is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value > ceiling:
            raise ValueError(
                f"{name} = {value:,} is above the ceiling of {ceiling:,}; "
                "set allow_long: true (or --allow-long) if you mean it"
            )


def param_lengths(specs: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, Any]]:
    """``(f"methods.{name}.{param}", value)`` for every method hyperparameter (input of :func:`check_run_length`)."""
    return [(f"methods.{name}.{k}", v) for name, params in specs for k, v in params.items()]


def check_cell_count(n: int, max_cells: int | None, *, at_least: bool = False) -> None:
    """Refuse ``n`` planned cells above ``max_cells`` (``None``: no limit); warn above :data:`MAX_CELLS`.

    ``at_least``: ``n`` is a lower bound (checked before the exact count is known); no warning then.
    """
    what = f"{'at least ' if at_least else ''}{n:,} cells planned"
    if max_cells is not None and n > max_cells:
        raise ConfigError(
            f"{what}, more than {max_cells:,}: confirm with --yes (max_cells=None in Python) "
            "or plan fewer seeds, requests or methods"
        )
    if n > MAX_CELLS and not at_least:
        warnings.warn(f"{what} (more than {MAX_CELLS:,})", ConfigWarning, stacklevel=2)


# -- command-line overrides ------------------------------------------------------------------------------------


def _method_names(methods: Any) -> list[str]:
    if isinstance(methods, dict):
        return [str(k) for k in methods]
    if isinstance(methods, list):
        return [m if isinstance(m, str) else str(m.get("name")) if isinstance(m, dict) else repr(m) for m in methods]
    return []


def _set_method(data: dict[str, Any], name: str, rest: list[str], value: Any, item: str) -> None:
    """``methods.NAME[.PARAM...]=VALUE``: set one configured method's hyperparameters (or all of them)."""
    methods = data.get("methods", "all")
    names = _method_names(methods)
    if name not in names:
        have = "all methods ('all'; list the methods to set a hyperparameter)" if methods == "all" else (
            ", ".join(names) or "none"
        )  # fmt: skip
        raise ConfigError(f"override {item}: method {name!r} is not among the configured methods: {have}")
    if isinstance(methods, list):
        i = names.index(name)
        entry = methods[i]
        params = {} if isinstance(entry, str) else entry.get("params") or {}
        methods[i] = {"name": name, "params": params}
    else:
        params = methods.get(name) or {}
        methods[name] = params
    if not rest:
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"override {item}: expected a mapping of hyperparameters, got {type(value).__name__}")
        params.clear()
        params.update(value or {})
        return
    _set_path(params, rest, value, item)


def _set_path(data: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            where = ".".join(path[: i + 1])
            raise ConfigError(f"override {item}: {where} is not a section (it holds {nxt!r})")
        node = nxt
    node[path[-1]] = value


def apply_overrides(
    data: Any, items: Iterable[str], source: str = "config", *, aliases: Mapping[str, Iterable[str]] | None = None
) -> dict[str, Any]:
    """A copy of the config mapping ``data`` with ``KEY=VALUE`` overrides applied (before validation).

    ``KEY`` is a dotted path (``train.epochs``, ``seeds``); ``VALUE`` is read as YAML (``5``, ``1e-3``,
    ``[0, 1]``, ``{lr: 0.1}``). ``methods.NAME.PARAM=VALUE`` sets a hyperparameter of the configured method
    ``NAME`` (refused when it is not configured). Unknown keys are left to the config's validation.
    ``source`` names the config in the message when ``data`` is not a mapping (``None`` is an empty one).
    ``aliases`` maps a first key to the path it stands for (a flat name to its section: ``dataset`` ->
    ``data.dataset``), so old flat keys set the sectioned field.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    out = copy.deepcopy(data)
    for item in items:
        key, eq, text = item.partition("=")
        path = key.strip().split(".")
        if not eq or not all(p.strip() for p in path):
            raise ConfigError(f"expected KEY=VALUE (e.g. train.epochs=5), got {item!r}")
        path = [p.strip() for p in path]
        target = list(aliases[path[0]]) if aliases is not None and path[0] in aliases else None
        if target is not None and (len(path) == 1 or target[0] != path[0]):  # model=x is model.name; model.kwargs stays
            path = [*target, *path[1:]]
        value = load_yaml_text(text, f"override {item!r}")
        if path[0] == "methods" and len(path) > 1:
            _set_method(out, path[1], path[2:], value, item)
        else:
            _set_path(out, path, value, item)
    return out
