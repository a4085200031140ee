"""Release hygiene: licence, citation, changelog, version source, dependency ranges vs the tested set, --cite."""

from __future__ import annotations

import contextlib
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

import unlearnkit
from unlearnkit.cli import app
from unlearnkit.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ARXIV = re.compile(r"arXiv[: ](\d{4}\.\d{4,5})")


def _method_classes() -> dict[str, type]:
    """Every registered method, the setting-3 (CLIP) ones included when transformers is installed."""
    with contextlib.suppress(ImportError):  # setting 3 needs transformers
        import unlearnkit.concept  # noqa: F401  (registers the CLIP methods in the one registry)
    return {n: METHODS.get(n) for n in METHODS.list()}


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_license_is_the_full_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    for part in (
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "9. Accepting Warranty or Additional",
        "END OF TERMS AND CONDITIONS",
        "APPENDIX: How to apply the Apache License to your work.",
    ):
        assert part in text
    assert len(text.splitlines()) >= 200
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_every_method_names_its_paper_as_a_class_attribute() -> None:
    for name, cls in _method_classes().items():
        assert "paper" in vars(cls), f"{name}: no `paper` class attribute of its own"
        assert isinstance(cls.paper, str) and cls.paper.strip(), name
        doc = sys.modules[cls.__module__].__doc__ or ""
        # the attribute cites the paper the module docstring specifies: same first author, same arXiv id
        for surname in re.findall(r"([\w-]+) et al\.", cls.paper):
            assert surname in doc, f"{name}: {surname} is not in its module docstring"
        for arxiv_id in ARXIV.findall(cls.paper) if re.search(r"arXiv", doc) else []:
            assert arxiv_id in doc, f"{name}: arXiv {arxiv_id} is not in its module docstring"


def test_citation_cff_lists_the_project_and_every_cited_paper() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software" and cff["license"] == "Apache-2.0"
    assert cff["version"] == PYPROJECT["project"]["version"]
    assert cff["message"] and cff["title"] and cff["authors"]
    refs = cff["references"]
    for ref in refs:
        assert {"type", "title", "authors", "year"} <= ref.keys(), ref.get("title")
        assert all(a.get("family-names") or a.get("name") for a in ref["authors"])
    cited = " ".join(str(r.get("url", "")) + " " + str(r.get("doi", "")) for r in refs)
    for name, cls in _method_classes().items():
        for arxiv_id in ARXIV.findall(cls.paper):
            assert f"arxiv.org/abs/{arxiv_id}" in cited, f"{name}: arXiv {arxiv_id} missing from CITATION.cff"
        for doi in re.findall(r"doi:(\S+)", cls.paper):
            assert doi in cited, f"{name}: doi {doi} missing from CITATION.cff"


def test_changelog_has_unreleased_and_0_1_0() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "keepachangelog.com" in text
    heads = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert heads[:2] == ["Unreleased", "0.1.0"]


def test_dependencies_are_ranges_and_the_tested_pins_fall_inside_them() -> None:
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    reqs += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    pins = _constraints()
    for req in reqs:
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req} is a pin, not a range"
        assert req.specifier, f"{req.name} has no lower bound"
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"constraints.txt {req.name}=={pinned} not in {req}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert {"build", "twine"} <= {canonicalize_name(r.name) for r in reqs}


def test_readme_and_ci_install_the_tested_set() -> None:
    install = 'pip install -e ".[test]" -c constraints.txt'
    assert install in (ROOT / "README.md").read_text()
    # CI installs the test extra (plus the docs extra it builds the site with) from the same tested set
    ci = re.search(r'pip install -e "\.\[([a-z,]+)\]" -c constraints\.txt', (ROOT / ".ci" / "run").read_text())
    assert ci is not None and "test" in ci.group(1).split(",")


def test_package_data_globs_cover_every_data_file() -> None:
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["unlearnkit"]
    pkg = ROOT / "src" / "unlearnkit"
    data = [
        p for p in pkg.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data
    for p in data:
        rel = p.relative_to(pkg)
        assert any(rel.match(g) for g in globs), f"{rel} is not in package-data, so the wheel would lack it"


def test_version_comes_from_the_package_metadata_or_pyproject() -> None:
    try:
        assert unlearnkit.__version__ == metadata.version("unlearnkit")
    except metadata.PackageNotFoundError:
        assert unlearnkit.__version__ == PYPROJECT["project"]["version"]


def test_version_falls_back_to_pyproject_without_installation(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert unlearnkit._version() == PYPROJECT["project"]["version"]


def test_cli_version() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"unlearnkit {unlearnkit.__version__}"


def test_cli_list_methods_cite_prints_one_line_per_method() -> None:
    res = CliRunner().invoke(app, ["list", "methods", "--cite"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    classes = _method_classes()
    assert len(lines) == len(classes)
    for line in lines:
        name, paper = line.split(maxsplit=1)
        assert paper == classes[name].paper
    assert any("arXiv:2302.09880" in line and line.startswith("scrub ") for line in lines)


def test_cli_cite_with_anything_but_methods_is_a_one_line_error() -> None:
    res = CliRunner().invoke(app, ["list", "metrics", "--cite"])
    assert res.exit_code == 2
    assert "--cite" in res.output and len(res.output.strip().splitlines()) == 1
