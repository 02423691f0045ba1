"""Append-only numpy buffers that successive snapshots of the search arrays share.

A publish appends its documents past the end of a snapshot's arrays instead of copying them
(store.search_arrays, store.facet_bits): the buffers keep spare room, and grow by doubling.
"""
from __future__ import annotations

import numpy as np


def spare(n: int) -> int:
    """Capacity for n items plus room for the publishes to come (see grown)."""
    return n + max(1024, n // 8)


def grown(buf: np.ndarray, n: int, k: int) -> np.ndarray:
    """``buf`` with room for n + k items, the same array while it has room. Only items >= n
    are written afterwards, and a snapshot never reads past its own n, so snapshots share
    append-only buffers (doubling: a publish costs no copy of a million rows)."""
    if n + k <= len(buf):
        return buf
    new = np.zeros((max(2 * len(buf), n + k, 64),) + buf.shape[1:], dtype=buf.dtype)
    new[:n] = buf[:n]
    return new


def buffer(values: np.ndarray, dtype, fill=0) -> np.ndarray:
    """``values`` in a fresh append-only buffer with spare room (see grown)."""
    out = np.full((spare(len(values)),) + values.shape[1:], fill, dtype=dtype)
    out[:len(values)] = values
    return out
