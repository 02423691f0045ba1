"""A read Layer → the theme schema of geo.themes, with a report a reviewer can follow.

The theme is recognised from column NAMES (NFKC, whitespace incl. full-width removed,
casefolded; cities reorder columns, so never by position), the dataset title and tags break
ties. Values are normalised column by column with vectorised pandas (hazard layers have a
million rows). A layer that matches no theme keeps its columns and is published as it is.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from . import lgcodes
from . import themes as T
from .crs import JAPAN_LAT, JAPAN_LON
from .csvread import coordinate_columns
from .layers import Layer, RowIssue

TRUE = {"1", "1.0", "○", "◯", "〇", "◎", "●", "有", "有り", "あり", "true", "yes", "y", "t"}
FALSE = {"", "0", "0.0", "×", "✕", "✖", "x", "無", "無し", "なし", "false", "no", "n", "f",
         "-", "−", "ー", "―", "‐", "—", "nan", "none"}
_PAREN_TAIL = re.compile(r"\(([^()]*)\)$")
_ONE_NUMBER = re.compile(r"^[^\d.-]*(-?\d+(?:\.\d+)?)[^\d]*$")


@dataclass
class Translated:
    frame: "gpd.GeoDataFrame | pd.DataFrame"
    theme: str | None
    theme_reason: str
    rows_in: int
    rejected: list[RowIssue]
    fields_mapped: dict[str, str] = field(default_factory=dict)    # source column → field
    fields_unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    published: int | None = None     # set when the frame is a sample (geo.stream)

    @property
    def rows_published(self) -> int:
        return len(self.frame) if self.published is None else self.published

    def report(self) -> dict:
        """Keys merged into the layer's quality dict (the dataset page shows scalars)."""
        mapped = "、".join(f"{s} → {d}" for s, d in self.fields_mapped.items())
        return {"theme": self.theme, "theme_reason": self.theme_reason,
                "fields_mapped": dict(self.fields_mapped),
                "fields_unmapped": list(self.fields_unmapped),
                "mapping": mapped or None,
                "unmapped": "、".join(self.fields_unmapped) or None}


def norm(name) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(name))).casefold()


def translate(layer: Layer, *, title: str = "", tags=(), publisher: str | None = None,
              source_dataset: str | None = None, municipality_code: str | None = None,
              theme: str | None = None) -> Translated:
    """`theme` forces a theme already decided (geo.stream: every chunk like the first)."""
    frame, rows = layer.frame, _source_rows(layer)
    issues, warns = list(layer.rejected), []
    if layer.spatial:
        frame, rows = _check_geometry(frame, rows, issues)
    columns = [c for c in frame.columns if not (layer.spatial and c == frame.geometry.name)]
    index = _column_index(columns)
    theme, reason = ((T.THEMES[theme], "最初の部分で判定したテーマ") if theme
                     else detect(index, title, tags))
    coords = _coordinate_columns(layer, columns)
    if theme is None:
        return Translated(frame, None, reason, layer.rows_in, _sorted(issues), {},
                          [c for c in columns if c not in coords], warns)
    ctx = _Ctx(frame, index, theme, warns, title, layer.name)
    out = pd.DataFrame({f.name: ctx.value(f) for f in theme.fields}, index=frame.index)
    if "municipality_code" in out:
        out["municipality_code"] = _municipality(ctx, out, municipality_code)
    STEPS.get(theme.name, lambda c, o: None)(ctx, out)
    if "note" in out and ctx.notes:
        out["note"] = _join_rows([out["note"], *ctx.notes])
    out["publisher"], out["source_dataset"] = publisher, source_dataset
    out["source_row"] = rows
    out["source_id"] = ctx.coalesce(T._ID_SOURCES, "source_id")[0]
    for f in theme.fields:
        out[f.name] = _typed(out[f.name], f.type)
    mapped = {**{c: "geometry" for c in coords}, **ctx.mapped}
    unmapped = [c for c in columns if c not in mapped]
    out = with_source_columns(out, frame, columns)
    if layer.spatial:
        out = gpd.GeoDataFrame(out, geometry=frame.geometry.values, crs=frame.crs)
    return Translated(out.reset_index(drop=True), theme.name, reason, layer.rows_in,
                      _sorted(issues), mapped, unmapped, warns)


# ---------------------------------------------------------------------------------------------
# theme detection

# Column names a GeoPackage layer holds itself (its FID and geometry columns); SQLite compares
# column names without case.
RESERVED_COLUMNS = ("fid", "geometry", "geom")
SOURCE_PREFIX = "元_"


def source_column_names(columns, taken) -> list[str]:
    """The names source columns are published under in the dataset's own collection, in order:
    as published, unless a theme field (or a GeoPackage column, or an earlier source column)
    has that name regardless of case; then 「元_」 + the name (元_name: the source's own `name`
    beside the theme's)."""
    used = {str(c).casefold() for c in taken} | set(RESERVED_COLUMNS)
    names = []
    for c in columns:
        name = str(c)
        while name.casefold() in used:
            name = SOURCE_PREFIX + name
        used.add(name.casefold())
        names.append(name)
    return names


def with_source_columns(out: pd.DataFrame, frame, columns) -> pd.DataFrame:
    """Theme fields first, then every source column with its values as read: a dataset's own
    collection loses nothing the source published (only the merged theme layer is restricted to
    the theme schema, see geo.theme_layers)."""
    wanted = set(columns)
    positions = [i for i, c in enumerate(frame.columns) if c in wanted]
    names = source_column_names([frame.columns[i] for i in positions], out.columns)
    extra = pd.DataFrame({name: _storable(frame.iloc[:, i])
                          for name, i in zip(names, positions)}, index=out.index)
    return pd.concat([out, extra], axis=1)


def _storable(values: pd.Series):
    """A column GeoPackage can hold: numbers, booleans and dates as read; an object column that
    is not all text (mixed numbers and text, lists, dicts from JSON sources) as text, lists and
    dicts as JSON."""
    if values.dtype != object:
        return values.to_numpy()
    present = values.dropna()
    if present.map(lambda v: isinstance(v, str)).all():
        return values.to_numpy()
    return values.map(lambda v: v if v is None or (isinstance(v, float) and v != v) else
                      json.dumps(v, ensure_ascii=False, default=str)
                      if isinstance(v, (list, dict)) else str(v)).to_numpy()


def _column_index(columns) -> dict[str, str]:
    """normalised name → column; a name with a trailing note ("標高(m)") also answers to its
    bare form, unless a column already has that bare name."""
    index = {}
    for c in columns:
        index.setdefault(norm(c), c)
    for c in columns:
        bare = _PAREN_TAIL.sub("", norm(c))
        if bare and bare != norm(c):
            index.setdefault(bare, c)
    return index


def _sources_present(theme: T.Theme, index) -> dict[str, list[str]]:
    present: dict[str, list[str]] = {}
    for f in theme.fields:
        cols = [index[norm(s)] for s in f.sources if norm(s) in index]
        if cols:
            present[f.name] = list(dict.fromkeys(cols))
    for src, fields in theme.multi.items():
        if norm(src) in index:
            for f in fields:
                present.setdefault(f, []).append(index[norm(src)])
    return present


def detect(index: dict[str, str], title: str = "", tags=()) -> tuple[T.Theme | None, str]:
    """(theme, reason). Columns decide: the theme with most distinctive fields found wins;
    title/tag keywords break ties and, with a name column, decide when no column is
    distinctive."""
    meta = norm(" ".join([title or "", *map(str, tags or ())]))
    scored = []
    for theme in T.THEMES.values():
        present = _sources_present(theme, index)
        markers = sorted(set(present) & theme.markers)
        keyword = next((k for k in theme.keywords if norm(k) in meta), None)
        scored.append((len(markers), keyword is not None, len(present), theme, markers, keyword))
    scored.sort(key=lambda s: s[:3], reverse=True)
    best = scored[0]
    n, has_kw, _, theme, markers, keyword = best
    if n:
        cols = sorted({c for f in markers for c in _sources_present(theme, index)[f]})
        why = f"列名から判定: {', '.join(cols[:6])}{' …' if len(cols) > 6 else ''}"
        tied = [s for s in scored[1:] if s[0] == n]
        if tied:
            why += (f"（{', '.join(s[3].name for s in tied)} と同点のため、タイトル・タグの"
                    f"「{keyword}」で決定）" if has_kw else f"（{', '.join(s[3].name for s in tied)}"
                    " と同点、列の一致数で決定）")
        return theme, why
    for _, has_kw, _, theme, _, keyword in scored:
        if has_kw and "name" in _sources_present(theme, index):
            return theme, f"タイトル・タグの「{keyword}」と名称の列から判定（特徴的な列はありません）"
    return None, "どのテーマの列構成にも一致しないため、元の列のまま公開します"


# ---------------------------------------------------------------------------------------------
# values

class _Ctx:
    def __init__(self, frame, index, theme, warns, title, layer_name):
        self.frame, self.index, self.theme, self.warns = frame, index, theme, warns
        self.meta = norm(f"{title or ''} {layer_name or ''}")
        self.present = _sources_present(theme, index)
        self.mapped: dict[str, str] = {}
        self.notes: list[pd.Series] = []

    def none(self) -> pd.Series:
        return pd.Series(pd.NA, index=self.frame.index, dtype="string")

    def has(self, names) -> bool:
        return any(norm(n) in self.index for n in names)

    def cols(self, names) -> list[str]:
        return list(dict.fromkeys(self.index[norm(n)] for n in names if norm(n) in self.index))

    def map(self, col: str, field_name: str) -> None:
        old = self.mapped.get(col)
        self.mapped[col] = field_name if not old or field_name in old.split(", ") \
            else f"{old}, {field_name}"

    def coalesce(self, names, field_name=None):
        """First non-blank text over the columns present, in order; also which column gave it."""
        cols = self.cols(names)
        if not cols:
            return self.none(), pd.Series(None, index=self.frame.index, dtype=object)
        result = _text(self.frame[cols[0]])
        which = pd.Series(np.where(result.notna(), cols[0], None), index=self.frame.index)
        for c in cols[1:]:
            v = _text(self.frame[c])
            fill = (result.isna() & v.notna()).to_numpy()
            if fill.any():
                result, which = result.where(~fill, v), which.where(~fill, c)
        for c in cols if field_name else ():
            self.map(c, field_name)
        return result, which

    def value(self, f: T.Field):
        if f.type == "boolean" and self.present.get(f.name):
            return self.flag(f)
        if not f.sources or f.name in ("capacity", "municipality_code"):
            return self.none()          # provenance, or filled by a theme step
        values, _ = self.coalesce(f.sources, f.name)
        return number(values) if f.type in ("integer", "number") else values

    def flag(self, f: T.Field):
        cols = self.present[f.name]
        result = pd.Series(False, index=self.frame.index, dtype="boolean")
        for c in cols:
            self.map(c, f.name)
            if norm(c) == norm(T.HAZARD_LIST):
                continue                # a JSON array: see _hazard_list
            val, partial, text = parse_flags(self.frame[c])
            result = result | val
            if partial.any():
                label = dict(T.HAZARDS).get(f.name, f.title_ja)
                label += f"（{c}）" if len(cols) > 1 else ""
                self.notes.append((label + ": " + text).where(partial))
        return result


def _text(s: pd.Series) -> pd.Series:
    """Text ('string' dtype) with blanks missing; integral floats lose their '.0' (1.0 → '1')."""
    if s.dtype.kind == "f":
        out = pd.Series(pd.NA, index=s.index, dtype="string")
        ok = s.notna().to_numpy()
        integral = ok & (np.mod(s.fillna(0).to_numpy(), 1) == 0)
        out[integral] = s[integral].astype("int64").astype(str)
        out[ok & ~integral] = s[ok & ~integral].astype(str)
        return out
    if s.dtype.kind == "b":
        return s.map({True: "1", False: "0"}).astype("string")
    out = s.astype("string").str.strip()
    return out.mask(out == "")


def parse_flags(s: pd.Series):
    """(boolean Series, partial mask, text): designated, and where only partly (2階以上, △)."""
    raw = _text(s)
    key = raw.fillna("").str.normalize("NFKC").str.strip().str.casefold()
    yes, no = key.isin({norm(v) for v in TRUE}), key.isin({norm(v) for v in FALSE})
    partial = (~yes & ~no).to_numpy(dtype=bool)
    return (pd.Series(yes.to_numpy(dtype=bool) | partial, index=s.index, dtype="boolean"),
            partial, raw)


def number(s: pd.Series) -> pd.Series:
    """A number when the text holds exactly one ("1,371人", "1.7m"), else missing."""
    if s.dtype.kind in "iuf":
        return s.astype("float64")
    text = _text(s).fillna("").str.normalize("NFKC").str.replace(",", "", regex=False)
    return pd.to_numeric(text.str.extract(_ONE_NUMBER, expand=False), errors="coerce") \
        .astype("float64")


def check_digit(code5: str) -> str:
    d = [int(c) for c in code5]
    return str((11 - sum(x * w for x, w in zip(d, (6, 5, 4, 3, 2))) % 11) % 10)


def restore_code(value) -> str | None:
    """6-digit 全国地方公共団体コード from 6 digits (check digit verified) or 5 (check digit added)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    digits = re.sub(r"\.0+$", "", unicodedata.normalize("NFKC", str(value)).strip())
    if not digits.isdigit():
        return None
    if len(digits) == 5:
        return digits + check_digit(digits)
    if len(digits) == 6 and check_digit(digits[:5]) == digits[5]:
        return digits
    return None


def restore_codes(s: pd.Series, warns: list[str], column: str) -> pd.Series:
    """Per column, because a 5-digit value is either a code without its check digit (28210)
    or one whose leading zero a spreadsheet dropped (92011 = 092011): when no 5-digit value
    starts with a prefecture number (01–47) and all pass the check digit zero-padded, the column
    lost its zeros."""
    text = _text(s)
    five = text[text.str.len() == 5].dropna().unique()
    if len(five) and all(restore_code("0" + v) for v in five) \
            and not any(1 <= int(v[:2]) <= 47 for v in five):
        text = text.mask(text.str.len() == 5, "0" + text)
    uniq = {v: restore_code(v) for v in text.dropna().unique()}
    codes = text.map(uniq).astype(object)
    codes = codes.where(codes.notna(), None)
    bad = int((text.notna() & codes.isna()).sum())
    if bad:
        warns.append(f"{column}: 全国地方公共団体コードとして正しくない値が {bad} 件あり、空にしました")
    return codes


def _typed(s: pd.Series, type_: str):
    if type_ == "boolean":
        return s.astype("boolean")
    if type_ == "integer":
        return pd.to_numeric(s, errors="coerce").round().astype("Int64")
    if type_ == "number":
        return pd.to_numeric(s, errors="coerce").astype("float64")
    return s.astype(object).where(s.notna(), None)


# ---------------------------------------------------------------------------------------------
# rows and geometry

def _source_rows(layer: Layer) -> np.ndarray:
    """Data row numbers of the frame's rows: readers keep order and report rejected rows."""
    rejected = {i.row for i in layer.rejected}
    rows = np.array([r for r in range(1, layer.rows_in + 1) if r not in rejected])
    return rows if len(rows) == len(layer.frame) else np.arange(1, len(layer.frame) + 1)


def _check_geometry(frame, rows, issues):
    geoms = frame.geometry.to_numpy()
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    b = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        outside = ~empty & ((b[:, 2] < JAPAN_LON[0]) | (b[:, 0] > JAPAN_LON[1])
                            | (b[:, 3] < JAPAN_LAT[0]) | (b[:, 1] > JAPAN_LAT[1]))
    for mask, reason in ((empty, "ジオメトリが空です"),
                         (outside, "位置が日本の範囲外です (北緯20〜46度・東経122〜154度の外)")):
        issues.extend(RowIssue(int(r), reason) for r in rows[mask])
    keep = ~(empty | outside)
    if not keep.all():
        frame, rows = frame[keep], rows[keep]
    return frame, rows


def _coordinate_columns(layer, columns) -> list[str]:
    if not layer.spatial or not (layer.crs_source or "").startswith("EPSG:4326 ("):
        return []
    pair = coordinate_columns(columns)
    return list(pair) if pair and "columns)" in layer.crs_source else []


def _sorted(issues):
    return sorted(issues, key=lambda i: i.row)




# ---------------------------------------------------------------------------------------------
# theme-specific steps: what cannot be said as "column → field"

def _join_rows(parts: list[pd.Series]) -> pd.Series:
    frame = pd.concat([p.astype("string") for p in parts], axis=1, ignore_index=True)
    stacked = frame.stack().dropna()
    if not len(stacked):
        return parts[0]
    joined = stacked.groupby(level=0).agg("; ".join)
    return joined.reindex(parts[0].index).astype("string")


def _municipality(ctx: _Ctx, out, default):
    code = pd.Series(None, index=ctx.frame.index, dtype=object)
    for c in ctx.cols(T._MUNI.sources):
        ctx.map(c, "municipality_code")
        code = code.where(code.notna(), restore_codes(ctx.frame[c], ctx.warns, c))
    if "gsi_id" in out:   # GSI 共通ID = "E" + 5-digit code + facility number + kind suffix
        from_id = out["gsi_id"].astype("string").str.extract(r"^E(\d{5})", expand=False)
        code = code.where(code.notna(), from_id.map(restore_code, na_action="ignore"))
    if code.isna().any() and "address" in out:   # 兵庫県加西市… → 282201
        addresses = out["address"].where(code.isna()).dropna().astype(str)
        found = {a: getattr(lgcodes.from_address(a), "code", None) for a in addresses.unique()}
        code = code.where(code.notna(), addresses.map(found).reindex(code.index))
    if default:
        code = code.where(code.notna(), restore_code(default))
    return code.where(code.notna(), None)


def _shelter(ctx: _Ctx, out) -> None:
    cols = ctx.cols(T.SHELTER.field("capacity").sources)
    parts = ctx.cols(T.CAPACITY_PARTS)
    whole = [c for c in cols if c not in parts]
    for c in cols:
        ctx.map(c, "capacity")
    if whole:     # 想定収容人数 and its synonyms: the first one given
        text, _ = ctx.coalesce(whole)
        out["capacity_text"] = text
        out["capacity"] = number(text)
    if parts:     # 収容人数_屋内 / 収容人数_屋外: capacity is their sum (see themes.SHELTER)
        texts = [_text(ctx.frame[c]) for c in parts]
        nums = pd.concat([number(t) for t in texts], axis=1)
        total = nums.sum(axis=1, min_count=1)
        labelled = _join_rows([(c + ": " + t).astype("string") for c, t in zip(parts, texts)])
        if whole:
            out["capacity"] = out["capacity"].where(out["capacity"].notna(), total)
            out["capacity_text"] = out["capacity_text"].where(out["capacity_text"].notna(),
                                                              labelled)
        else:
            out["capacity"], out["capacity_text"] = total, labelled
    out["kind"] = _shelter_kind(ctx)
    _hazard_list(ctx, out)
    if out["address"].notna().any() and out["address"].str.startswith("{").any():
        out["address"] = out["address"].map(_address_text, na_action="ignore")


def _hazard_list(ctx: _Ctx, out) -> None:
    """NGSI `hazardTypes` (["flood", "earthquake", ...]) → one boolean per hazard."""
    col = ctx.index.get(norm(T.HAZARD_LIST))
    if col is None:
        return
    keys = _text(ctx.frame[col]).map(_json_list, na_action="ignore")
    for key, fname in T.HAZARD_KEYS.items():
        has = keys.map(lambda v, k=key: k in v if isinstance(v, list) else pd.NA)
        out[fname] = (out[fname].astype("boolean") if fname in out else pd.NA) | \
            has.astype("boolean")


def _json_list(v):
    try:
        got = json.loads(v)
    except ValueError:
        return None
    return got if isinstance(got, list) else None


def _address_text(v):
    """NGSI PostalAddress as JSON text → its addressText, else the parts joined."""
    try:
        obj = json.loads(v)
    except ValueError:
        return v
    if not isinstance(obj, dict):
        return v
    return obj.get("addressText") or "".join(str(obj[k]) for k in (
        "addressRegion", "addressLocality", "streetAddress") if obj.get(k)) or v


def _shelter_kind(ctx: _Ctx) -> pd.Series:
    """Legally distinct kinds: a per-row column says it best, then the GSI layout, then the
    title, then the columns (hazard flags are what a 指定緊急避難場所 is designated by)."""
    idx = ctx.frame.index
    also = ctx.cols(T.SHELTER_ALSO_SHELTER)
    if also:
        ctx.map(also[0], "kind")
        both = parse_flags(ctx.frame[also[0]])[0].fillna(False).to_numpy(dtype=bool)
        return pd.Series(np.where(both, T.KIND_BOTH, T.KIND_EMERGENCY), index=idx)
    hazards = any(ctx.present.get(h) for h, _ in T.HAZARDS)
    if ctx.has(T.SHELTER_GSI_EVACUATION) and not hazards:
        kind = T.KIND_SHELTER
    elif "兼" in ctx.meta or ("避難場所" in ctx.meta and "避難所" in ctx.meta):
        kind = T.KIND_BOTH
    elif "避難場所" in ctx.meta:
        kind = T.KIND_EMERGENCY
    elif "避難所" in ctx.meta or any(norm(m) in ctx.index for m in T.SHELTER.multi
                                     if m != T.HAZARD_LIST):
        kind = T.KIND_SHELTER
    elif hazards:
        kind = T.KIND_EMERGENCY
    else:
        ctx.warns.append("指定緊急避難場所か指定避難所かを判定できないため、種別を空にしました")
        kind = None
    return pd.Series(kind, index=idx, dtype=object)


def _depth_text(lo, hi) -> pd.Series:
    lo_s = lo.map(lambda v: f"{v:g}m以上", na_action="ignore")
    hi_s = hi.map(lambda v: f"{v:g}m未満", na_action="ignore")
    return (lo_s.fillna("") + hi_s.fillna("")).replace("", None)


def _coded(ctx: _Ctx, name: str, table: dict, field_name: str):
    col = ctx.index.get(norm(name))
    if col is None:
        return None, None
    ctx.map(col, field_name)
    codes = pd.to_numeric(ctx.frame[col], errors="coerce")
    return codes, codes.map(table)


def _flood_area(ctx: _Ctx, out) -> None:
    scale_hint = "L2" if "想定最大" in ctx.meta else "L1" if "計画" in ctx.meta else None
    rank = pd.Series(np.nan, index=ctx.frame.index)
    lo, hi = rank.copy(), rank.copy()
    scale = pd.Series(None, index=ctx.frame.index, dtype=object)
    # v1.1 (A31_001) predates 想定最大規模 (2015), so it is 計画規模.
    for name, table, sc in (("A31_101", T.A31_DEPTH_V2, "L1"), ("A31_201", T.A31_DEPTH_V2, "L2"),
                            ("A31_001", T.A31_DEPTH_V1, "L1"),
                            ("A31a_205", T.A31_DEPTH_V2, scale_hint)):
        codes, ranges = _coded(ctx, name, table, "depth_rank")
        if codes is None:
            continue
        fill = (rank.isna() & codes.notna()).to_numpy()
        rank[fill] = codes[fill]
        lo[fill] = ranges[fill].str[0]
        hi[fill] = ranges[fill].str[1]
        scale[fill] = sc
    out["depth_rank"], out["depth_min_m"], out["depth_max_m"] = rank, lo, hi
    out["depth_range"], out["scale"] = _depth_text(lo, hi), scale
    out["duration"] = _coded(ctx, "A31_301", T.A31_DURATION, "duration")[1]
    out["collapse_zone"] = _coded(ctx, "A31_401", T.A31_COLLAPSE, "collapse_zone")[1]


def _landslide_area(ctx: _Ctx, out) -> None:
    out["phenomenon"] = _coded(ctx, "A33_001", T.A33_PHENOMENON, "phenomenon")[1]
    out["zone_type"] = _coded(ctx, "A33_002", T.A33_ZONE, "zone_type")[1]
    pending = _coded(ctx, "A33_008", {1: True, 0: False}, "special_zone_pending")[1]
    out["special_zone_pending"] = pending


def _tsunami_area(ctx: _Ctx, out) -> None:
    text = out["depth_class"].astype("string").str.normalize("NFKC")
    lo = pd.to_numeric(text.str.extract(r"([\d.]+)\s*m以上", expand=False), errors="coerce")
    hi = pd.to_numeric(text.str.extract(r"([\d.]+)\s*m未満", expand=False), errors="coerce")
    out["depth_min_m"] = lo.where(lo.notna() | hi.isna(), 0.0)   # "0.3m未満" starts at 0
    out["depth_max_m"] = hi


STEPS = {"shelter": _shelter, "flood_area": _flood_area, "landslide_area": _landslide_area,
         "tsunami_area": _tsunami_area}


def as_layer(layer: Layer, t: Translated) -> Layer:
    """The reader's Layer with the translated frame, so publishing code reads one shape."""
    return Layer(layer.name, t.frame, layer.spatial, layer.encoding, layer.crs_source,
                 layer.rows_in, list(t.rejected), [*layer.warnings, *t.warnings])


def collection_extras(t: Translated) -> dict:
    """Theme of a collection and its fields with Japanese titles (for /queryables, /schema)."""
    if t.theme is None:
        return {"theme": None}
    return {"theme": t.theme, "fields": T.field_info(t.theme, set(t.frame.columns))}


def publisher_of(org_id: str | None, orgs: dict, remote_org: dict | None) -> dict:
    """publisher / municipality_code keywords for translate from the catalogue's organizations;
    a prefecture's own code is not a default for its features' municipality."""
    known = orgs.get(org_id or "", {})
    name = known.get("name_ja") or (remote_org or {}).get("title") or org_id
    # Not only our own slugs: a CKAN organization 「加西市」 or named `kasai` is 加西市 too.
    listed = lgcodes.of_organization(name, org_id)
    code = str(known.get("code") or "") or (listed.code if listed else None)
    return {"publisher": name,
            "municipality_code": code if code and code[2:5] != "000" else None}
