"""The code that docs/fastapi.md, docs/django.md and docs/turbo.md show from the examples is the code in
the examples: every ```python block whose first line names an example file appears in
that file verbatim."""

from __future__ import annotations

import re

import pytest

from ..servers import ROOT

BLOCK = re.compile(r"```python\n# (examples/\S+)\n(.*?)```", re.S)


@pytest.mark.parametrize("page", ["docs/fastapi.md", "docs/django.md", "docs/turbo.md"])
def test_doc_excerpts_are_verbatim_from_the_examples(page: str) -> None:
    """The code excerpts of the docs pages are verbatim in the example files they name."""
    blocks = BLOCK.findall((ROOT / page).read_text())
    assert len(blocks) >= 3
    for path, code in blocks:
        source = (ROOT / path).read_text()
        assert code in source, f"{page}: this excerpt is not in {path}:\n{code}"
