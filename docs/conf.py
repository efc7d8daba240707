"""Sphinx configuration of the mmc_jax documentation (MyST markdown pages, API from docstrings).

Build it as CI does (warnings are errors):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx import addnodes

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # importing the library needs no accelerator

import mmc_jax  # noqa: E402  (after the path is set)

project = "mmc_jax"
author = "mmc_jax authors"
copyright = "mmc_jax authors"
release = version = mmc_jax.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# MyST: heading anchors, so that [text](page.md#a-heading) links work as on a code host.
myst_heading_anchors = 4

# autodoc: every object is documented once, in the module that defines it (``__all__`` of a
# package only re-exports; the package page lists where each name is documented).
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    "ignore-module-all": True,
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
# mmc_jax.models.torch_reference is the PyTorch twin of the presets; torch is optional.
autodoc_mock_imports = ["torch"]

# Google-style docstrings ("Args:", "Returns:", "Raises:", "Attributes:").
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# An "Attributes:" section becomes fields of its class's description, not attribute objects
# of their own (autodoc documents the annotated fields already: no duplicate objects).
napoleon_use_ivar = True

# No intersphinx: the build reads nothing from the network.

html_theme = "sphinx_book_theme"
html_title = f"mmc_jax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []


class Exports(Directive):
    """``{exports} mmc_jax.data``: a list of the names a package re-exports (its ``__all__``),
    each linked to the module that defines and documents it."""

    required_arguments = 1
    has_content = False
    option_spec = {"class": directives.class_option}

    def run(self):
        package = importlib.import_module(self.arguments[0])
        items = nodes.bullet_list()
        for name in package.__all__:
            obj = getattr(package, name)
            target, role = _target(package.__name__, name, obj)
            if target is None:
                continue
            ref = addnodes.pending_xref(
                "",
                refdomain="py",
                reftype=role,
                reftarget=target,
                refexplicit=True,
                refwarn=True,
                refdoc=self.state.document.settings.env.docname,
            )
            ref += nodes.literal(text=f"{package.__name__.removeprefix('mmc_jax.')}.{name}")
            para = nodes.paragraph("", "", ref, nodes.Text(f"  ({target})"))
            items += nodes.list_item("", para)
        return [items]


def _target(package: str, name: str, obj) -> tuple[str | None, str]:
    """The documented full name of ``package.name`` and the py role that links to it: a
    module, a class or function where it is defined, or, for a constant, the module that
    assigns it."""
    if isinstance(obj, type(mmc_jax)):
        return obj.__name__, "mod"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module and qualname and module.startswith("mmc_jax") and callable(obj):
        return f"{module}.{qualname}", "class" if isinstance(obj, type) else "func"
    for candidate in _defining_modules(package, name):
        return candidate, "mod"
    return None, "mod"


def _defining_modules(package: str, name: str):
    """Modules of ``package`` whose source assigns ``name`` at the top level."""
    import ast

    root = ROOT / package.replace(".", "/")
    files = [root / "__init__.py", *sorted(root.glob("*.py"))] if root.is_dir() else []
    for file in files:
        tree = ast.parse(file.read_text())
        for node in tree.body:
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                stem = "" if file.name == "__init__.py" else f".{file.stem}"
                yield f"{package}{stem}"
                return


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are described by its docstring's "Attributes:" section, not as
    the generated "Alias for field number k" attributes."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.add_directive("exports", Exports)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
