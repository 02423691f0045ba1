"""`renkei db size`: what the served feature versions weigh, beside the memory that keeps a bbox
page fast (README, PostgreSQL mode: Memory), checked against what the store itself says: the
GeoPackages' sizes on disk, or PostgreSQL's own sizes of each version's tables and indexes."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import Point
from sqlalchemy import text

from store import features_pg, point_grid, versions
from store.db import Store
from tests.platform_world import cli


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _pg_size(store: Store, table: str) -> int:
    """A version's bytes as PostgreSQL counts them: its table, tile pyramid and grid, each with
    its indexes and TOAST."""
    names = [table, "t_" + table[2:], *point_grid.companions(table)]
    with store.engine.connect() as conn:
        return conn.execute(text(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(quote_ident(n)))), 0) "
            "FROM unnest(CAST(:names AS text[])) n WHERE to_regclass(quote_ident(n)) IS NOT NULL"),
            {"names": names}).scalar()


def test_db_size_states_what_the_served_versions_weigh(hazard_dir):
    store = Store(hazard_dir)
    served = store.active_collections()
    assert len(served) >= 4   # flood, landslide, the two shelter lists (and the theme layers)
    if store.postgresql:
        sizes = {c.id: _pg_size(store, features_pg.table_of(c.path)) for c in served}
    else:
        sizes = {c.id: Path(hazard_dir, c.path).stat().st_size for c in served}
    largest = sorted(sizes, key=lambda cid: (-sizes[cid], cid))

    said = cli(hazard_dir, "db", "size")
    assert said.returncode == 0, said.stderr
    lines = said.stdout.splitlines()
    assert lines[0].startswith(f"served: {len(served)} collections, {_mib(sum(sizes.values()))}")
    listed = [line.split()[2] for line in lines[1:1 + min(5, len(served))]]
    assert listed == largest[:5]
    assert lines[1].split()[:2] == _mib(sizes[largest[0]]).split()
    if store.postgresql:
        with store.engine.connect() as conn:
            buffers = conn.execute(text(
                "SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar()
        assert lines[-1].startswith(f"PostgreSQL shared_buffers: {_mib(buffers)}, ")
        assert ("holds what is served" in lines[-1]) == (buffers >= sum(sizes.values()))


@pytest.mark.pg_only(reason="superseded versions wait for a sweep only in PostgreSQL mode")
def test_db_size_counts_superseded_and_unserved_tables_apart(tmp_path, monkeypatch):
    """Versions no collection serves (a collection written but never published here) and
    versions superseded but within their grace period are told apart from what is served, and
    the sweep that drops the superseded one takes it off the list."""
    monkeypatch.setenv("RENKEI_DROP_GRACE", "300")
    store = Store(tmp_path)

    def points(n):
        return gpd.GeoDataFrame({"名称": [f"避難所{i}" for i in range(n)]},
                                geometry=[Point(135.0 + i * 0.001, 34.8) for i in range(n)],
                                crs="EPSG:4326")

    v1 = versions.write_version(points(30), tmp_path, "w", 1)
    v2 = versions.write_version(points(50), tmp_path, "w", 2)
    assert versions.remove_stale_versions(tmp_path, "w", v2.path) == 0   # v1 marked
    size1, size2 = _pg_size(store, v1.layer), _pg_size(store, v2.layer)
    assert size1 > 0 and size2 > 0

    lines = cli(tmp_path, "db", "size").stdout.splitlines()
    assert lines[0].startswith("served: 0 collections, 0.0 MiB")
    assert lines[1] == f"not served (no collection names it): 1 version, {_mib(size2)}"
    assert lines[2] == ("superseded, dropped by a sweep after the grace period: 1 version, "
                        f"{_mib(size1)}")
    assert cli(tmp_path, "db", "sweep", "--grace", "0").stdout.strip() == \
        "superseded feature tables dropped: 1"
    lines = cli(tmp_path, "db", "size").stdout.splitlines()
    assert lines[2] == "superseded, dropped by a sweep after the grace period: 0 versions, 0.0 MiB"
