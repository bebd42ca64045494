"""Small vectorized helpers over flat arrays cut into segments (a volunteer's sessions, a session's tasks)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_strings(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    """n random lowercase hex strings of `width` characters, as one array (never chunked: pyarrow
    splits an array it converts from numpy bytes past 16 MB, which `concat_arrays` then refuses)."""
    digits = np.ascontiguousarray(_HEX_DIGITS[rng.integers(0, 16, size=(n, width), dtype=np.uint8)])
    large = n * width >= 2**31
    offsets = np.arange(n + 1, dtype=np.int64 if large else np.int32) * width
    kind = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(digits)])


def segment_starts(lengths: np.ndarray) -> np.ndarray:
    """Index of the first element of each segment of a flat array."""
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return starts


def segments(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For segments of `lengths`: each element's segment, each segment's first index, each element's position."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = segment_starts(lengths)
    position = np.arange(int(lengths.sum())) - np.repeat(first, lengths)
    return owner, first, position


def segmented_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each segment."""
    cs = np.cumsum(values)
    starts = segment_starts(lengths)
    base = np.repeat(cs[starts] - values[starts], lengths)
    return cs - base


def ar1(rng: np.random.Generator, n: int, lengths: np.ndarray, rho: float, sd: float) -> np.ndarray:
    """An AR(1) series per segment (restarting at 0 before each segment's start)."""
    y = rng.normal(0.0, sd, n)
    # y_t = sum_j rho^j e_{t-j}, by doubling: after each step y sums twice as many lags
    shift, coef = 1, rho
    while shift < n and coef > 1e-9:
        y[shift:] += coef * y[:-shift]
        shift, coef = 2 * shift, coef * coef
    # y runs through segment boundaries; remove what the previous segment carries in.
    starts = segment_starts(lengths)
    carry = np.where(starts > 0, y[np.maximum(starts - 1, 0)], 0.0)
    pos = np.arange(n) - np.repeat(starts, lengths)
    return y - np.repeat(carry, lengths) * rho ** (pos + 1.0)


def categorical(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """n draws of an index with probabilities proportional to `weights`."""
    cdf = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(weights) - 1)
