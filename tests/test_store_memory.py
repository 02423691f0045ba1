"""store.memory.give_back returns a harvest's freed heap to the system before the version's
commit steps (the R-tree copy, tippecanoe beside the harvest), measured in a fresh process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# 300 MB of 1 KB blocks (glibc's heap, not mmap), every 64th kept alive so the heap cannot
# shrink from its top: what the freed chunks of a translation leave behind.
CHILD = """
import json, sys
from store import memory
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
blocks = [bytearray(1000) for _ in range(300_000)]
kept = blocks[::64]
del blocks
before = rss()
if sys.argv[1] == "give_back":
    memory.give_back()
print(json.dumps([before, rss()]))
"""


def freed_after(step: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, step], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    before, after = json.loads(out)
    return before - after


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_goes_back_to_the_system():
    assert freed_after("nothing") < 50 * 1024 ** 2      # glibc keeps the pages by itself
    assert freed_after("give_back") > 150 * 1024 ** 2
