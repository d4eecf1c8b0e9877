"""docs/backends.rst describes the backends that exist, not plans.

The ``optional-automodule`` sections show their own prose where the module
cannot be imported while the docs are built; that prose once called the
io_uring and kqueue backends "being written (issue 3)" after both had been
written.  A backend a built-in plugin registers must not be described so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import aiocore

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.rst"
STALE = re.compile(r"being written|not yet (written|implemented)|will be listed|\(issue \d+\)")


def _sections(text: str) -> dict[str, str]:
    """Section title -> its text, for the ``----``-underlined sections."""
    parts = re.split(r"^(\S[^\n]*)\n-{3,}\n", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.skipif(not DOC.is_file(), reason="docs/ is not in this tree")
def test_no_backend_section_calls_an_existing_backend_unwritten(
    registry: aiocore.PluginRegistry,
) -> None:
    sections = _sections(DOC.read_text())
    checked = [name for name in registry.backends if name in sections]
    assert {"io_uring", "kqueue"} <= set(checked)
    stale = {name: m.group(0) for name in checked if (m := STALE.search(sections[name]))}
    assert not stale, f"docs/backends.rst describes existing backends as unwritten: {stale}"
