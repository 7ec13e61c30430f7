"""Ways to cut a byte string into chunks, for segmentation-independence tests."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c for c in cuts if 0 <= c <= len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def random_splits(data: bytes, rng: random.Random, count: int = 20) -> Iterator[list[bytes]]:
    for _ in range(count):
        k = rng.randint(1, 8)
        yield at(data, [rng.randint(0, len(data)) for _ in range(k)])


def all_splits(data: bytes, ways: int) -> Iterator[list[bytes]]:
    """Every way of cutting ``data`` into ``ways`` pieces (empty pieces included)."""
    for cuts in itertools.combinations_with_replacement(range(len(data) + 1), ways - 1):
        yield at(data, list(cuts))


def chunkings(data: bytes, seed: int = 0) -> Iterator[list[bytes]]:
    """Whole, one byte at a time, every 2-way split, and random splits."""
    yield whole(data)
    yield bytewise(data)
    yield from all_splits(data, 2)
    yield from random_splits(data, random.Random(seed))
