"""The suite's mutation check (tests/mutations.py, `make mutate`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import mutations

ROOT = Path(__file__).resolve().parent.parent


def test_catalogue_applies_to_the_library():
    """Every mutation's text is in the library exactly once (the catalogue follows the code),
    changes it, and names tests that exist."""
    names = set()
    for m in mutations.CATALOGUE:
        assert m.name not in names, m.name
        names.add(m.name)
        text = (ROOT / m.path).read_text()
        for old, new in m.edits:
            assert text.count(old) == 1, (m.name, old)
            assert old != new
        for test in m.tests:
            assert (ROOT / test.split("::")[0]).is_file(), (m.name, test)
    assert len(mutations.CATALOGUE) >= 11  # the 7 audited bugs and at least 4 more


@pytest.mark.slow
def test_every_catalogued_mutation_is_caught(tmp_path):
    """`make mutate`: each known bug, applied to a copy, fails at least one fast test."""
    out = tmp_path / "mutations.md"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mutations", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "**NO**" not in out.read_text()
