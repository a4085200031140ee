"""Extra report sections: the hook later code uses to add a talk-layout table, a leaderboard, ..."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from unlearnkit._registry import Registry
from unlearnkit.errors import UnlearnkitError


@dataclass(frozen=True)
class Section:
    """A section appended to every report format after the scenario tables.

    Build its tables with :func:`~unlearnkit.reports.markdown_table` and
    :func:`~unlearnkit.reports.html_table`, which escape their cells.

    Attributes:
        title: the section heading (plain text; escaped in HTML).
        markdown: the body in Markdown (inserted verbatim into report.md).
        html: the body as a *trusted* HTML fragment (inserted verbatim into report.html); ``None`` shows
            the markdown, escaped, in a ``<pre>`` block.
        data: optional JSON-able payload stored under ``report.json["sections"]`` with the title.
    """

    title: str
    markdown: str
    html: str | None = None
    data: Any = None


def check_sections(sections: Iterable[Section] | None) -> list[Section]:
    """Validate ``extra_sections`` arguments.

    Raises:
        UnlearnkitError: an item is not a :class:`Section` or has an empty title.
    """
    out = list(sections or ())
    for i, s in enumerate(out):
        if not isinstance(s, Section):
            raise UnlearnkitError(f"extra_sections[{i}] must be a reports.Section, got {type(s).__name__}")
        if not isinstance(s.title, str) or not s.title.strip():
            raise UnlearnkitError(f"extra_sections[{i}] needs a non-empty title")
        if not isinstance(s.markdown, str) or not (s.html is None or isinstance(s.html, str)):
            raise UnlearnkitError(f"extra_sections[{i}] ({s.title!r}): markdown and html must be strings")
    return out


#: A section builder looks at every run record and returns a Section, or None when it has nothing to show
#: (e.g. the talk-layout table only for runs of the talk's settings). Registered builders run on every
#: report, in name order, after the ``extra_sections`` given explicitly.
SectionBuilder = Callable[[list[Mapping[str, Any]]], "Section | None"]
SECTIONS: Registry[SectionBuilder] = Registry("report section")


def register_section(name: str) -> Callable[[SectionBuilder], SectionBuilder]:
    """Decorator registering a section builder ``fn(runs) -> Section | None`` under ``name``."""
    return SECTIONS.register(name)


def all_sections(runs: Iterable[Mapping[str, Any]], extra: Iterable[Section] | None) -> list[Section]:
    """The explicit ``extra`` sections followed by every registered builder's section."""
    return check_sections(extra) + registered_sections([dict(r) for r in runs])


def registered_sections(runs: list[Mapping[str, Any]]) -> list[Section]:
    """Run every registered builder on ``runs``; a builder that fails becomes a section saying so."""
    out: list[Section] = []
    for name in SECTIONS.list():
        try:
            sec = SECTIONS.get(name)(runs)
        except Exception as e:  # a broken optional section must not lose the report
            sec = Section(title=name, markdown=f"not computed: {type(e).__name__}: {e}")
        if sec is not None:
            out.append(sec)
    return out


def ok_run_of_kind(run: Mapping[str, Any], prefix: str) -> bool:
    """Whether ``run`` finished (status ok) on a forget request whose spec starts with ``prefix``
    (``"class:"``, ``"concept:"``, ...)."""
    scenario = run.get("scenario")
    forget = scenario.get("forget") if isinstance(scenario, Mapping) else None
    return run.get("status", "ok") == "ok" and isinstance(forget, str) and forget.startswith(prefix)


def by_dataset_model(runs: Iterable[Mapping[str, Any]]) -> list[tuple[tuple[str, str], list[Mapping[str, Any]]]]:
    """``runs`` grouped by (dataset, model), sorted: one talk-layout table per group."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((str(r["scenario"].get("dataset", "?")), str(r.get("model") or "?")), []).append(r)
    return sorted(groups.items())
