"""A short, seeded run of bench/fuzz_readers.py's property: mutated real sample files come
back from geo.readers as layers or a ReadError, never as another exception (which would be a
traceback in a harvest job). The 10-minute run is `python bench/fuzz_readers.py`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_readers", REPO / "bench" / "fuzz_readers.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(fuzz.SEEDS), declared=st.sampled_from(fuzz.DECLARED),
       ops=st.lists(fuzz.mutation, min_size=1, max_size=6), as_zip=st.booleans())
def test_mutated_files_are_read_or_refused_never_crash(tmp_path_factory, name, declared, ops,
                                                       as_zip):
    base = fuzz.SEED_BYTES[name]
    data = fuzz.mutate_zip(base, ops) if as_zip and base[:2] == b"PK" else fuzz.mutate(base, ops)
    found = fuzz.check(data, declared, tmp_path_factory.mktemp("fuzz"))
    assert found is None, found[1]


def test_the_dbf_and_zlib_damage_found_by_fuzzing_is_a_read_error(tmp_path):
    """Inputs the 10-minute run found (a cut DBF header, a member whose deflate stream is
    damaged) are ReadErrors."""
    import io
    import zipfile
    from geo.readers import ReadError, read_resource
    src = (REPO / "tests/data/ksj/A30a5-11_4939-jgd_GML.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(src)) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    dbf = next(n for n in members if n.lower().endswith(".dbf"))
    for damage in (members[dbf][:20], members[dbf][:12] + b"\xff" * 20):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for n, data in members.items():
                zf.writestr(n, damage if n == dbf else data)
        path = tmp_path / "damaged.zip"
        path.write_bytes(out.getvalue())
        try:
            read_resource(path, "ZIP")
        except ReadError:
            pass
    # A member whose compressed bytes are overwritten: zlib.error inside zipfile.
    raw = bytearray(src)
    start = raw.find(b"PK\x03\x04") + 30 + len(members and next(iter(members))) + 5
    raw[start:start + 40] = b"\x00" * 40
    path = tmp_path / "zlib.zip"
    path.write_bytes(bytes(raw))
    try:
        read_resource(path, "ZIP")
    except ReadError:
        pass
