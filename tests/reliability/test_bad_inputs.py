"""Every row of the bad-input catalogue, tested; and the docs page matches it.

The cases live in :mod:`tests.reliability.bad_inputs`; ``docs/bad-inputs.rst``
is generated from the same list.  Each case must raise exactly its exception
type, with the gist in the message, and change nothing that
:meth:`~tests.reliability.bad_inputs.World.snapshot` can see.  Cases that
involve a context run on every backend.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiocore import PluginRegistry

from .bad_inputs import CASES, Case, World, cases, render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _run(case: Case, backend: str, registry: PluginRegistry, mp: pytest.MonkeyPatch) -> None:
    world = World(backend, registry, mp.setenv)
    try:
        before = world.snapshot()
        with pytest.raises(case.exc) as info:
            case.call(world)
        assert type(info.value) is case.exc, f"{type(info.value).__name__}: {info.value}"
        assert case.gist in str(info.value), str(info.value)
        assert world.snapshot() == before, "a refused call changed something"
    finally:
        world.close()


@pytest.mark.parametrize("case", list(cases(True)), ids=lambda c: c.id)
def test_bad_input_on_every_backend(
    case: Case, backend: str, registry: PluginRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(case, backend, registry, monkeypatch)


@pytest.mark.parametrize("case", list(cases(False)), ids=lambda c: c.id)
def test_bad_input(case: Case, registry: PluginRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(case, "poll", registry, monkeypatch)


def test_every_case_is_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


def test_docs_page_is_generated_from_the_cases() -> None:
    page = DOCS / "bad-inputs.rst"
    assert page.read_text() == render(), (
        "docs/bad-inputs.rst is out of date: "
        "python -m tests.reliability.bad_inputs > docs/bad-inputs.rst"
    )


def test_docs_link_the_page() -> None:
    """index -> reliability -> bad-inputs, so the page is in a toctree."""
    index = DOCS / "index.rst"
    if not index.exists():
        pytest.skip("no docs/index.rst")
    assert "   reliability\n" in index.read_text()
    assert "   bad-inputs\n" in (DOCS / "reliability.rst").read_text()
