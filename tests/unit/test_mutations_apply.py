"""tests/mutate.py breaks each rule by an exact text replacement: when the code it breaks moves,
the mutation would say "pattern not found" only when someone runs it. This keeps every mutation
applicable, and every test it names existing, as the code changes (the mutation run itself, ten
minutes, stays out of the suite)."""

from __future__ import annotations

import pytest
from mutate import MUTATIONS, ROOT, applies


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name[:60])
def test_every_mutation_still_applies_to_the_code_it_breaks(mutation):
    assert applies(ROOT, mutation) is None
    for node in mutation.tests:
        path, _, name = node.partition("::")
        assert (ROOT / path).is_file(), node
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / path).read_text(), node
