"""Padded sizes: little waste, few distinct shapes, sizes that paired edges can split in half."""

import numpy as np

from so3krates.graph import bucket


def test_bucket_bounds_padding_and_keeps_sizes_even():
    sizes = [bucket(n) for n in range(1, 200_001)]
    n = np.arange(1, 200_001)
    size = np.asarray(sizes)
    assert np.all(size >= n)
    assert np.all(size % 8 == 0)  # even: paired edges put the reverse half at capacity // 2
    assert np.all(np.diff(size) >= 0)
    large = n >= 64
    assert np.max(size[large] / n[large]) <= 1.125  # at most 12.5 % padding
    assert np.all(size[~large] - n[~large] < 8)
    # Few distinct shapes: eight per doubling.
    assert len(set(sizes[1024:2048])) == 8
    assert bucket(5, minimum=16) == 16
