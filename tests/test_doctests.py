"""The ``>>>`` examples in the package's docstrings run and show what they say."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
WITH_EXAMPLES = sorted(
    ".".join(p.relative_to(SRC).with_suffix("").parts)
    for p in (SRC / "cablecar").rglob("*.py")
    if ">>>" in p.read_text()
)


def test_some_modules_have_examples() -> None:
    """The search below finds the modules (a moved tree would silently test nothing)."""
    assert "cablecar._naming" in WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name: str) -> None:
    """Every example in the module's docstrings gives the output written under it."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has '>>>' but doctest found no example"
    assert result.failed == 0
