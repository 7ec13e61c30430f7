"""The fuzz harness's check, run on random inputs in the normal suite (no atheris needed)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_hotpath.py"


@pytest.fixture(scope="module")
def harness():  # type: ignore[no-untyped-def]
    if not HARNESS.exists():
        pytest.skip("fuzz harness not present (installed without the source tree)")
    spec = importlib.util.spec_from_file_location("fuzz_hotpath", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_seeds_and_random_inputs_agree(harness, both_twins) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(2026)
    inputs = [*harness.seed_inputs(), *(harness.random_input(rng) for _ in range(500))]
    for data in inputs:
        harness.check(data)  # raises AssertionError on any divergence
