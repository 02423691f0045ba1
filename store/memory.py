"""Give freed memory back to the system before a step that runs beside this process.

A harvest that translated a large file has freed its frames, but glibc's malloc and Arrow's
pool keep the pages (a 7.4M-point CSV left the harvest at ~360 MB while tippecanoe ran
beside it, and the two together are what the machine pays; bench/bomb_bench.py). Called
between the translation and the version's commit steps; a no-op where neither exists.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def give_back() -> None:
    """Collect garbage, then return free heap pages to the system (glibc ``malloc_trim``,
    Arrow's pool ``release_unused``)."""
    gc.collect()
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):   # not glibc (musl has no malloc_trim)
        return None
