"""Facet counts of a large match set from one bitmap per common facet value.

Counting by gathering each matched document's row of value ids (store.search_arrays) costs
~30 ns per match: 14.5 ms for the 470,000 datasets of 1M that a common word such as 防災
matches, most of such a search (issue 17). A value held by a 128th of the catalogue or
more has a bitmap of the positions holding it; a count is then one AND and popcount per such
value over words of 64 positions, ~3 ms for the same search.
Rarer values are counted from their positions, kept in one array, the matched ones picked out
with a mask.

Like the other arrays of a snapshot, the bitmaps are append-only buffers shared between
snapshots: a publish sets the bits of its new positions, which older snapshots never ask about
(their match sets lie below their own size), and values' common/rare split is made again when
the snapshot is compacted.
"""
from __future__ import annotations

import numpy as np

from store.snapshot_buffers import buffer, grown

# A value is common when its documents are at least 1/COMMON of the catalogue: a bitmap word
# (64 positions) costs a count less than half a rare value's position does, so a bitmap pays
# from ~1/150 of the catalogue on; at 1/128 it is at most 4x the size of the posting list
# (n/8 bytes against 4 bytes a document). At most MAX_COMMON of them, the longest (32 MB at
# 1M datasets): the 1M-dataset bench corpus has 115 values, 31 above 1/32, 84 between.
COMMON = 128
MAX_COMMON = 256
# Rough nanoseconds per unit of work, for choosing between bitmaps and row gathers (measured at
# 1M datasets: a row gather 3-8 per value id, growing with the match set; a bitmap word 1.3, a
# mask bit 0.5, a rare pair 3).
_NS_GATHER, _NS_WORD, _NS_MASK, _NS_RARE = 4.0, 1.3, 0.5, 3.0
_WORD = np.dtype("<u8")   # little-endian, as np.packbits(bitorder="little") lays bits out


def _words(n: int) -> int:
    return (n + 63) // 64


def _mask(positions: np.ndarray, words: int) -> np.ndarray:
    """One bool per position of ``words`` 64-bit words, true at ``positions``."""
    mask = np.zeros(words * 64, dtype=bool)
    mask[positions] = True
    return mask


def _packed(mask: np.ndarray) -> np.ndarray:
    """The bitmap of ``mask``, in 64-bit words."""
    return np.packbits(mask, bitorder="little").view(_WORD)


class FacetBits:
    """Bitmaps of the common facet values of a snapshot and the positions of the rare ones."""

    def __init__(self, postings: list[np.ndarray], n: int, capacity: int):
        """From the snapshot's posting lists (sorted positions per value id, all < n);
        ``capacity``: positions the bitmaps have room for before a publish must copy them."""
        lengths = np.fromiter(map(len, postings), dtype=np.int64, count=len(postings))
        common = np.flatnonzero(lengths * COMMON >= max(n, 1))
        longest = np.argsort(-lengths[common], kind="stable")[:MAX_COMMON]
        self.common = np.sort(common[longest])
        self.slot = np.full(len(postings), -1, dtype=np.int64)
        self.slot[self.common] = np.arange(len(self.common))
        # A row per value (not a column): a count ANDs and sums each row in one run of memory,
        # 20 % faster than across columns; so these grow along rows, not as
        # store.snapshot_buffers' buffers do.
        words = _words(max(capacity, n))
        self.bits = np.zeros((len(self.common), words), dtype=_WORD)
        for row, vid in enumerate(self.common.tolist()):
            self.bits[row] = _packed(_mask(postings[vid], words))
        rare = np.flatnonzero(self.slot < 0)
        parts = [postings[v] for v in rare.tolist()]
        rare_pos = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.rare_pos = buffer(rare_pos, np.int64)
        self.rare_val = buffer(np.repeat(rare, lengths[rare]), np.int64)
        self.nrare = len(rare_pos)

    def added(self, pos: np.ndarray, val: np.ndarray, first: int, n: int) -> "FacetBits":
        """A new snapshot's: this one plus the (position, value id) pairs of positions
        ``first`` to ``n`` - 1, just added. Values first seen since count as rare."""
        new = object.__new__(FacetBits)
        new.__dict__.update(self.__dict__)
        if _words(n) > self.bits.shape[1]:
            new.bits = np.zeros((len(self.common), max(2 * self.bits.shape[1], _words(n))),
                                dtype=_WORD)
            new.bits[:, :self.bits.shape[1]] = self.bits
        # Bits an apply that failed half-way may have set for these positions: cleared, those
        # below ``first`` kept (older snapshots read them).
        w = first >> 6
        if w < new.bits.shape[1]:
            new.bits[:, w] &= np.uint64((1 << (first & 63)) - 1)
            new.bits[:, w + 1:_words(n)] = 0
        slot = np.full(len(val), -1, dtype=np.int64)
        known = val < len(self.slot)
        slot[known] = self.slot[val[known]]
        common = slot >= 0
        p = pos[common]
        np.bitwise_or.at(new.bits, (slot[common], p >> 6),
                         np.left_shift(np.uint64(1), (p & 63).astype(np.uint64)))
        rare_pos, rare_val = pos[~common], val[~common]
        end = self.nrare + len(rare_pos)
        new.rare_pos = grown(self.rare_pos, self.nrare, len(rare_pos))
        new.rare_val = grown(self.rare_val, self.nrare, len(rare_pos))
        new.rare_pos[self.nrare:end], new.rare_val[self.nrare:end] = rare_pos, rare_val
        new.nrare = end
        return new

    def cheaper(self, matches: int, width: int, n: int) -> bool:
        """Whether counting ``matches`` positions here costs less than gathering their rows
        (``width`` value ids each) in a catalogue of ``n``."""
        here = _NS_WORD * len(self.common) * _words(n) + _NS_MASK * n + _NS_RARE * self.nrare
        return _NS_GATHER * matches * width > here

    def count(self, idx: np.ndarray, n: int, nvalues: int) -> np.ndarray:
        """Documents per value id among positions ``idx`` (sorted, < n)."""
        words = _words(n)
        mask = _mask(idx, words)
        counts = np.zeros(nvalues, dtype=np.int64)
        if len(self.common):
            counts[self.common] = np.bitwise_count(
                self.bits[:, :words] & _packed(mask)).sum(axis=1, dtype=np.int64)
        rare_pos = self.rare_pos[:self.nrare]
        counts += np.bincount(self.rare_val[:self.nrare][mask[rare_pos]],
                              minlength=nvalues)[:nvalues]
        return counts
