"""Sphinx configuration for the aiocore documentation.

Built with warnings as errors (``tox -e docs``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

No network, so no intersphinx.  aiocore must be importable (``pip install -e
.``): the API, hook, backend-contract and built-in plugin pages are autodoc,
and the per-backend option tables are read from the code.
"""

from __future__ import annotations

import functools
import importlib
import json
import warnings

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import aiocore

project = "aiocore"
author = "the aiocore developers"
copyright = "the aiocore developers"
release = aiocore.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# The docstrings are reST; signatures keep their annotations.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

exclude_patterns = ["_build"]
highlight_language = "python3"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"aiocore {release}"
html_theme_options = {
    "description": "QEMU's AioContext for Python",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}


# -- optional plugin modules --------------------------------------------------
#
# Built-in plugins may be written at the same time as these docs.
# ``.. optional-automodule:: aiocore_plugins.io_uring`` renders the module's
# autodoc when it imports here, and the directive's own content (a prose
# description) when it does not, so the build is warning-free either way.


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


class OptionalAutomodule(SphinxDirective):
    """Autodoc of a module if it imports, else the directive's content."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        if _importable(module):
            return self.parse_text_to_nodes(
                f".. automodule:: {module}\n   :members:\n   :show-inheritance:\n"
            )
        return self.parse_content_to_nodes()


# -- per-backend option tables ----------------------------------------------
#
# ``.. backend-options:: auto`` renders the options the ``auto`` backend
# declares (``Backend.options``), read from the code so that the table cannot
# drift from it; if no built-in plugin registers that backend here (or it has
# no options), the directive's content is rendered instead.

# Option kinds as TOML names them; defaults and choices are shown as TOML
# writes them.
_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}


@functools.cache
def _builtin_backends() -> dict[str, type[aiocore.Backend]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", aiocore.PluginWarning)
        registry = aiocore.PluginRegistry(autoload=False, block=(), strict=False, env={})
    return {name: info.cls for name, info in registry.backends.items()}


class BackendOptions(SphinxDirective):
    """A table of one backend's options, or the directive's content."""

    required_arguments = 1
    has_content = True

    def run(self) -> list[nodes.Node]:
        cls = _builtin_backends().get(self.arguments[0])
        if cls is None or not cls.options:
            return self.parse_content_to_nodes()
        rows = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 18 10 12 60",
            "",
            "   * - key",
            "     - type",
            "     - default",
            "     - meaning",
        ]
        for key, opt in cls.options.items():
            bounds = []
            if opt.minimum is not None:
                bounds.append(f"at least {opt.minimum}")
            if opt.maximum is not None:
                bounds.append(f"at most {opt.maximum}")
            if opt.choices is not None:
                bounds.append("one of " + ", ".join(f"``{json.dumps(c)}``" for c in opt.choices))
            extra = f" ({'; '.join(bounds)})" if bounds else ""
            rows += [
                f"   * - ``{key}``",
                f"     - {_TOML_TYPES.get(opt.kind, opt.kind.__name__)}",
                f"     - ``{json.dumps(opt.default)}``",
                f"     - {' '.join(opt.doc.split())}{extra}",
            ]
        return self.parse_text_to_nodes("\n".join(rows) + "\n")


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("optional-automodule", OptionalAutomodule)
    app.add_directive("backend-options", BackendOptions)
    return {"parallel_read_safe": True}
