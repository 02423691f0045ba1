"""What the catalogue records about a written version, whichever store holds it (a GeoPackage,
store.versions; a PostGIS table, store.features_pg)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import geopandas as gpd


@dataclass
class WrittenVersion:
    """What the catalogue records about a version that is complete on disk."""
    path: str                  # relative to the data dir, or `postgis:<table>`
    layer: str
    feature_count: int
    bbox: list[float] | None
    fields: dict = field(default_factory=dict)


def field_types(frame: "gpd.GeoDataFrame") -> dict[str, str]:
    """JSON-schema-ish type per column, for queryables and the dataset page."""
    out = {}
    for name, dtype in frame.dtypes.items():
        if name == frame.geometry.name:
            continue
        kind = getattr(dtype, "kind", "O")
        out[str(name)] = {"i": "integer", "u": "integer", "f": "number",
                          "b": "boolean", "M": "string"}.get(kind, "string")
    return out
