"""Prefecture-wide theme layers: every organization's features of one theme in one collection.

Pure geo: member frames (already in the theme schema, see geo.translate) in, one merged frame
or chunks out. Writing the version and the catalogue switch live in store.theme_layers.

A shelter published twice — by the prefecture's copy of the GSI registry and by the city — is
kept once with both sources listed. Same facility = the same GSI 共通ID; or the same 共通ID
site group ("E" + 5-digit municipality code + 5-digit number: the GSI files number a site's
指定緊急避難場所 2xx and its 指定避難所 1xx, and one site may hold several facilities, e.g.
両荘公民館 and 両荘みらい学園) with the same normalised name; else the same normalised name less
than 50 m apart. Only rows of different source datasets are merged: one publisher's two
AEDs in one building are two AEDs.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from .stream import read_batches
from .themes import KIND_BOTH, KIND_EMERGENCY, KIND_SHELTER, THEMES, merged_fields

MATCH_METRES = 50.0
_GSI_FACILITY = re.compile(r"^(E\d{10})")
_EARTH_M_PER_DEG = 111_320.0
CHUNK = 25_000   # features per batch: peak memory of a rebuild


def member_frame(theme: str, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """One member's features in the merged schema (columns of the theme + `sources`)."""
    fields = merged_fields(THEMES[theme])
    out = pd.DataFrame(index=frame.index)
    for f in fields:
        values = frame[f.name] if f.name in frame.columns else pd.Series(None, index=frame.index)
        out[f.name] = _as_type(values, f.type)
    pub = frame.get("publisher", pd.Series(None, index=frame.index)).astype("string")
    src = frame.get("source_dataset", pd.Series(None, index=frame.index)).astype("string")
    out["sources"] = (pub.fillna("") + ": " + src.fillna("")).astype(object)
    return gpd.GeoDataFrame(out, geometry=frame.geometry.values, crs="EPSG:4326")


def _as_type(values: pd.Series, type_: str) -> pd.Series:
    """Each field as its theme type whatever a member's file holds, so that members (and a
    member without the field, all None) concatenate to the declared type: a column of None
    alone would make `elevation` text in the merged GeoPackage."""
    if type_ == "boolean":
        return _as_boolean(values)
    if type_ == "number":
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if type_ == "integer":
        return pd.to_numeric(values, errors="coerce").round().astype("Int64")
    return values.astype(object).where(values.notna(), None)


def _as_boolean(values: pd.Series) -> pd.Series:
    """GeoPackage has no boolean type: a member's flags come back as bools, 0/1 integers or
    0.0/1.0/NaN floats, and members must agree before they are concatenated."""
    return values.map(_flag).astype("boolean")


def _flag(v):
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return pd.NA
    return True if v is True or v == 1 else False if v is False or v == 0 else pd.NA


def merge(theme: str, frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """Concatenate members and merge duplicates (point themes with a name)."""
    parts = [member_frame(theme, f) for f in frames if len(f)]
    if not parts:
        return member_frame(theme, gpd.GeoDataFrame({"geometry": []}, crs="EPSG:4326"))
    merged = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
    if "name" not in merged.columns or not (merged.geom_type == "Point").all():
        return merged
    groups = duplicate_groups(merged)
    return _collapse(theme, merged, groups)


def duplicate_groups(frame: gpd.GeoDataFrame) -> np.ndarray:
    """Group label per row (union-find over the two matching rules). Only `source_dataset`,
    `name`, `gsi_id` and the point geometries are read (merged_chunks hands in just those)."""
    n = len(frame)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    dataset = frame["source_dataset"].astype("string").fillna("").to_numpy()
    names = frame["name"].astype("string").fillna("").map(normalise_name)
    if "gsi_id" in frame.columns:
        gsi = frame["gsi_id"].astype("string")
        site = gsi.str.extract(_GSI_FACILITY, expand=False)
        for key in (gsi, site + "|" + names):
            key = key[key.notna() & (names != "")] if key is not gsi else key.dropna()
            for idx in _repeated(key):
                for j in idx[1:]:
                    if dataset[j] != dataset[idx[0]]:
                        union(idx[0], j)
    x, y = shapely.get_x(frame.geometry.values), shapely.get_y(frame.geometry.values)
    for idx in _repeated(names[names != ""]):
        for a, b in _close_pairs(x[idx], y[idx], dataset[idx]):
            union(idx[a], idx[b])
    return np.array([find(i) for i in range(n)])


def _repeated(key: pd.Series):
    """Positions (in the frame) of each value that occurs more than once: a million distinct
    keys would otherwise cost an index object each."""
    key = key[key.duplicated(keep=False)]
    for idx in key.groupby(key).groups.values():
        yield np.asarray(idx)


_PAIRWISE = 1024   # rows of one name compared all against all; a longer list uses a tree


def _close_pairs(x: np.ndarray, y: np.ndarray, dataset: np.ndarray):
    """(a, b) with a < b of points of one name less than MATCH_METRES apart, from different
    datasets. Equirectangular metres: exact enough at 50 m and any Japanese latitude. A name
    shared by tens of thousands of rows (「AED」, 「消火栓」) would make the all-pairs matrix
    gigabytes: an STRtree of the points answers it in n log n."""
    lat = np.radians(np.nanmean(y)) if len(y) else 0.0
    px, py = x * _EARTH_M_PER_DEG * np.cos(lat), y * _EARTH_M_PER_DEG
    if len(x) <= _PAIRWISE:
        dist = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
        close = (dist < MATCH_METRES) & (dataset[:, None] != dataset[None, :])
        yield from zip(*np.nonzero(np.triu(close, 1)))
        return
    points = shapely.points(px, py)
    tree = shapely.STRtree(points)
    a, b = tree.query(points, predicate="dwithin", distance=MATCH_METRES)
    keep = (a < b) & (dataset[a] != dataset[b])
    a, b = a[keep], b[keep]
    # dwithin is <=; the rule is strictly closer than MATCH_METRES.
    near = np.hypot(px[a] - px[b], py[a] - py[b]) < MATCH_METRES
    yield from zip(a[near], b[near])


def normalise_name(name: str) -> str:
    """NFKC, no spaces, casefolded: 「県立加古川東高等学校」 and 「県立加古川東高等学校 」 match."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", name)).casefold()


def _collapse(theme: str, frame: gpd.GeoDataFrame, groups: np.ndarray) -> gpd.GeoDataFrame:
    counts = np.bincount(groups, minlength=len(frame))
    dup = counts[groups] > 1
    single, multi = frame[~dup], frame[dup]
    if not len(multi):
        return frame
    # The GSI record leads a group (national registry, stable id); the rest fill its gaps.
    no_gsi = (multi["gsi_id"].isna().to_numpy() if "gsi_id" in multi.columns
              else np.ones(len(multi), bool))
    order = multi.assign(_g=groups[dup], _nogsi=no_gsi).sort_values(["_g", "_nogsi"],
                                                                     kind="stable")
    rows = []
    bools = [f.name for f in merged_fields(THEMES[theme]) if f.type == "boolean"]
    for _, g in order.groupby("_g", sort=False):
        row = g.iloc[0].copy()
        for col in frame.columns:
            if col == "geometry":
                continue
            vals = g[col]
            if col in bools:
                known = vals.dropna()
                row[col] = bool(known.astype(bool).any()) if len(known) else None
            elif col in ("note", "sources"):
                row[col] = "; ".join(dict.fromkeys(v for v in vals.dropna().astype(str) if v)) \
                    or None
            elif col == "kind":
                row[col] = merge_kinds(vals.dropna())
            elif row[col] is None or (np.isscalar(row[col]) and pd.isna(row[col])):
                nonnull = vals.dropna()
                row[col] = nonnull.iloc[0] if len(nonnull) else None
        rows.append(row.drop(["_g", "_nogsi"]))
    merged = gpd.GeoDataFrame(rows, columns=frame.columns, crs="EPSG:4326")
    out = pd.concat([single, merged], ignore_index=True)
    for f in merged_fields(THEMES[theme]):
        out[f.name] = _as_type(out[f.name], f.type)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


def merge_kinds(kinds) -> str | None:
    kinds = set(kinds)
    if KIND_BOTH in kinds or {KIND_EMERGENCY, KIND_SHELTER} <= kinds:
        return KIND_BOTH
    return next(iter(kinds), None)


def _theme_columns(path: Path, layer: str, theme: str) -> list[str]:
    """The member's columns the merged schema takes: its own collection also holds every source
    column (geo.translate), which the theme layer leaves out."""
    wanted = {f.name for f in merged_fields(THEMES[theme])}
    return [c for c in pyogrio.read_info(path, layer=layer)["fields"] if c in wanted]


def read_member(path: Path, layer: str, theme: str | None = None) -> gpd.GeoDataFrame:
    columns = _theme_columns(path, layer, theme) if theme else None
    frame = pyogrio.read_dataframe(path, layer=layer, columns=columns)
    if frame.geometry.name != "geometry":
        frame = frame.rename_geometry("geometry")
    return frame


def streams(theme: str) -> bool:
    """Area themes have no duplicates to merge and can be a million polygons: they are copied
    in chunks. Point themes are merged in memory (tens of thousands of rows at most)."""
    return theme in ("flood_area", "landslide_area", "tsunami_area")


def merged_frame(theme: str, members: list[tuple[Path, str]]) -> gpd.GeoDataFrame:
    """The theme layer of a point theme from its members' files (path, layer), in memory."""
    return merge(theme, [read_member(p, lyr, theme) for p, lyr in members])


_KEYS = ("source_dataset", "name", "gsi_id")


def merged_chunks(theme: str, members: list[tuple[Path, str]], *, chunk: int = CHUNK
                  ) -> Iterator[gpd.GeoDataFrame]:
    """The theme layer of a point theme, as `merge` makes it, in chunks: a member of a million
    rows read whole (every theme column) held ~2 GB. The files are read twice in batches:
    first only the matching keys and points of every row, to find the duplicate groups; then
    in full, rows without a duplicate handed on as they come and duplicates kept aside (a
    small share) to be collapsed last — the order `merge` gives (singles, then merged)."""
    keys, count = [], 0
    for path, layer in members:
        wanted = [c for c in _theme_columns(path, layer, theme) if c in _KEYS]
        for batch in read_batches(path, layer=layer, batch_size=chunk, columns=wanted):
            part = member_frame(theme, batch)     # the key columns as `merge` sees them
            keys.append(part[[c for c in _KEYS if c in part.columns] + ["geometry"]])
            count += len(part)
    if not count:
        yield member_frame(theme, gpd.GeoDataFrame({"geometry": []}, crs="EPSG:4326"))
        return
    key = gpd.GeoDataFrame(pd.concat(keys, ignore_index=True), crs="EPSG:4326")
    del keys
    # As `merge`: duplicates are looked for among points with a name only.
    matching = "name" in key.columns and bool((key.geom_type == "Point").all())
    groups = duplicate_groups(key) if matching else np.arange(count)
    del key
    dup = (np.bincount(groups, minlength=count) > 1)[groups]
    aside, start = [], 0
    for path, layer in members:
        for batch in read_batches(path, layer=layer, batch_size=chunk,
                                  columns=_theme_columns(path, layer, theme)):
            part = member_frame(theme, batch)
            mask = dup[start:start + len(part)]
            start += len(part)
            if mask.any():
                aside.append(part[mask])
                part = part[~mask]
            if len(part):
                yield part.reset_index(drop=True)
    if aside:
        rows = gpd.GeoDataFrame(pd.concat(aside, ignore_index=True), crs="EPSG:4326")
        yield _collapse(theme, rows, groups[dup])


def member_chunks(theme: str, members: list[tuple[Path, str]]) -> Iterator[gpd.GeoDataFrame]:
    """The theme layer of an area theme, chunk by chunk, in the merged schema; an empty frame
    in that schema when the members hold no feature."""
    count = 0
    for path, layer in members:
        for batch in read_batches(path, layer=layer, batch_size=CHUNK,
                                  columns=_theme_columns(path, layer, theme)):
            part = member_frame(theme, batch)
            count += len(part)
            yield part
    if not count:
        yield member_frame(theme, gpd.GeoDataFrame({"geometry": []}, crs="EPSG:4326"))
