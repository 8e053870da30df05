"""The examples of RFC 5228 and of each extension's RFC, as data (`*.cases`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .sieve_casefile import load_cases, run_case

HERE = Path(__file__).parent
CASES = [(path.stem, case) for path in sorted(HERE.glob("*.cases")) for case in load_cases(path)]


@pytest.mark.parametrize("case", [c for _, c in CASES],
                         ids=[f"{stem}:{c.name}" for stem, c in CASES])
def test_case(case):
    assert run_case(case) == case.expect
