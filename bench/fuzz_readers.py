"""Fuzz geo.readers with mutated real sample files (tests/data): every input must come back as
layers or as a ReadError (rows it refuses as RowIssues) — never as another exception, which
would be a traceback in a harvest job.

    .venv/bin/python bench/fuzz_readers.py --minutes 10 [--seed 1]

Hypothesis draws a sample file, a declared format (right, wrong or none) and a list of
mutations (byte flips, inserted bytes from a dictionary of format tokens, deleted or
duplicated ranges, truncation, zip members rewritten). Distinct crashes (by exception type and
the innermost frame of ours) are printed at the end with one input each, saved under --out.
tests/test_fuzz_readers.py runs a short seeded version of the same property in the suite.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings, strategies as st

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geo.readers import ReadError, read_resource  # noqa: E402

SEEDS = ["csv/yaizu_222127_aed.csv", "csv/yaizu_222127_evacuation_space.csv",
         "csv/localgovjp-sjis.csv", "csv/nanao_reference_data.csv",
         "csv/takamatsu_evacuation_space_data.xlsx", "geojson/gsi_emergency_282201.json",
         "geojson/gsi_evacuation_282201.json", "json/kakogawa_12_shiteikinkyuhinanbasyokenshiteihinanjyo.json",
         "ksj/A30a5-11_4939-jgd_GML.zip", "fiware/sdm_PointOfInterest_example-normalized.json"]
DECLARED = [None, "CSV", "GeoJSON", "JSON", "ZIP", "SHP", "KML", "XLSX", "GPKG", "xls"]
TOKENS = [b",", b"\n", b"\r\n", b'"', b"{", b"}", b"[", b"]", b":", b"\x00", b"\xff\xfe",
          b"\xef\xbb\xbf", b'"type"', b'"FeatureCollection"', b'"features"', b'"geometry"',
          b'"coordinates"', b'"Point"', b'"Polygon"', b"null", b"1e999", b"NaN", b"-0",
          b"99999999999999999999", b"\x82\xa0", b"\xe3\x81", b"PK\x03\x04", b"<kml>",
          b"\xd0\xcf\x11\xe0", b"SQLite format 3\x00", b"\t", b"lat,lon", b"\xe7\xb7\xaf\xe5\xba\xa6",
          b'"crs"', b"FID", b"fid", b"geometry", b"[[[", b"]]]"]


def seeds() -> dict[str, bytes]:
    out = {name: (REPO / "tests" / "data" / name).read_bytes() for name in SEEDS}
    # KML and GeoPackage from a real GSI file (as tests/conftest.py makes them).
    import geopandas as gpd
    with tempfile.TemporaryDirectory() as tmp:
        gdf = gpd.read_file(REPO / "tests/data/geojson/gsi_emergency_282201.json")
        gdf[["施設・場所名", "住所", "geometry"]].to_file(Path(tmp) / "x.kml", driver="KML")
        gdf.to_file(Path(tmp) / "x.gpkg", driver="GPKG", layer="shelters")
        out["kasai.kml"] = (Path(tmp) / "x.kml").read_bytes()
        out["kasai.gpkg"] = (Path(tmp) / "x.gpkg").read_bytes()
    return out


SEED_BYTES = seeds()
SEEDS = sorted(SEED_BYTES)

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(TOKENS)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 4096)),
    st.tuples(st.just("duplicate"), st.floats(0, 1), st.integers(1, 4096)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
)


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, where, arg in ops:
        pos = int(where * len(buf)) if buf else 0
        if op == "flip" and buf:
            buf[min(pos, len(buf) - 1)] = arg
        elif op == "insert":
            buf[pos:pos] = arg
        elif op == "delete":
            del buf[pos:pos + arg]
        elif op == "duplicate":
            buf[pos:pos] = buf[pos:pos + arg]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def mutate_zip(data: bytes, ops) -> bytes:
    """Mutate each member's content and rebuild the archive, so the reader gets past the CRC
    check to the member's parser."""
    try:
        src = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return mutate(data, ops)
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if not info.filename.lower().endswith((".prj", ".cpg")):
                body = mutate(body, ops)
            dst.writestr(info.filename, body)
    return out.getvalue()


def check(data: bytes, declared, workdir: Path) -> tuple[str, str] | None:
    """None when the reader behaved; else (signature, traceback)."""
    path = workdir / hashlib.sha1(data).hexdigest()
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_resource(path, declared)
    except ReadError:
        return None
    except Exception as exc:   # what the property forbids
        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if str(REPO) in f.filename and "bench" not in f.filename]
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        return f"{type(exc).__name__} at {where}", "".join(traceback.format_exception(exc))
    finally:
        path.unlink(missing_ok=True)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "renkei-fuzz")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    crashes: dict[str, tuple[str, bytes, str | None]] = {}
    runs = 0
    deadline = time.monotonic() + args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        @settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(name=st.sampled_from(SEEDS), declared=st.sampled_from(DECLARED),
               ops=st.lists(mutation, min_size=1, max_size=6), as_zip=st.booleans())
        def one(name, declared, ops, as_zip):
            nonlocal runs
            runs += 1
            base = SEED_BYTES[name]
            data = mutate_zip(base, ops) if as_zip and base[:2] == b"PK" else mutate(base, ops)
            found = check(data, declared, work)
            if found and found[0] not in crashes:
                crashes[found[0]] = (found[1], data, declared)
                print(f"crash {len(crashes)}: {found[0]} ({name}, declared {declared!r})",
                      flush=True)

        batch = 0
        while time.monotonic() < deadline:
            batch += 1
            seed(args.seed * 100003 + batch)(one)()   # a new stream of inputs per batch
    print(f"{runs} inputs in {args.minutes:g} min, {len(crashes)} distinct crashes")
    for i, (sig, (tb, data, declared)) in enumerate(crashes.items(), 1):
        sample = args.out / f"crash-{i}.bin"
        sample.write_bytes(data)
        print(f"\n== {sig} (declared {declared!r}; input {sample})\n{tb[-1500:]}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
