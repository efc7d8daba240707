"""The documentation (docs/, built by CI with Sphinx) and the README, checked without a build:
the API pages cover every module and name only importable ones, the links resolve, the
Python examples import what exists, and the README stays short."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts),
]
#: Optional dependencies a documented module may need (mocked by docs/conf.py).
OPTIONAL = {"torch"}


def _automodules() -> dict[str, pathlib.Path]:
    """``{module: API page}`` of every ``.. automodule::`` and ``{exports}`` target."""
    targets = {}
    for page in sorted(API.glob("*.md")):
        text = page.read_text()
        for name in re.findall(r"^\.\. automodule:: (\S+)$", text, flags=re.M):
            targets[name] = page
        for name in re.findall(r"^```\{exports\} (\S+)$", text, flags=re.M):
            targets.setdefault(name, page)
    return targets


def _library_modules() -> list[str]:
    """Every module of mmc_jax (packages included), by dotted name; private ones left out."""
    names = []
    for path in sorted((ROOT / "mmc_jax").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks and inline code."""
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```\s*$", text, flags=re.M | re.S)


@pytest.mark.parametrize("module", sorted(_automodules()))
def test_every_api_target_imports(module):
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in OPTIONAL:
            raise
        pytest.skip(f"{module} needs {err.name}")


def test_every_package_and_module_has_its_api_page():
    targets = _automodules()
    index = (API / "index.md").read_text()
    for module in _library_modules():
        parts = module.split(".")
        if len(parts) == 2:  # a package or top-level module: a page of its own
            page = API / f"{parts[1]}.md"
            assert page.is_file(), f"{module} has no API page (docs/api/{parts[1]}.md)"
            assert re.search(rf"^{parts[1]}$", index, flags=re.M), f"{page.name} not in index"
        assert module in targets, f"{module} is on no API page (add it to its package's page)"
        if len(parts) > 2:
            assert targets[module].stem == parts[1], f"{module} is on {targets[module].name}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(page):
    for link in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue  # a web address, or a heading of the same page (Sphinx checks those)
        target = (page.parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} points at nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_examples_import_what_exists(page):
    """Every Python example parses, and each name it imports from mmc_jax exists there
    (the import paths of the current package layout)."""
    for block in _code_blocks(page.read_text(), "python"):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "mmc_jax":
                        importlib.import_module(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "mmc_jax":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    found = hasattr(module, alias.name)
                    if not found:
                        importlib.import_module(f"{node.module}.{alias.name}")
