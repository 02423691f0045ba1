"""Theme schemas, each defined once as data: the fields every organization's data is translated
to, and the source column names (both 自治体標準オープンデータセット generations, GSI, KSJ and the
city-specific layouts seen in the wild) that feed each field.

Source names are written as published; geo.translate compares them after NFKC, whitespace
removal (full-width spaces included) and casefolding, never by position.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HAZARDS = (  # field, Japanese title (GSI / 定義書 wording)
    ("flood", "洪水"), ("landslide", "崖崩れ、土石流及び地滑り"), ("storm_surge", "高潮"),
    ("earthquake", "地震"), ("tsunami", "津波"), ("large_fire", "大規模な火事"),
    ("inland_flood", "内水氾濫"), ("volcano", "火山現象"),
)
KIND_EMERGENCY, KIND_SHELTER, KIND_BOTH = "指定緊急避難場所", "指定避難所", "指定緊急避難場所兼指定避難所"


@dataclass(frozen=True)
class Field:
    name: str               # ASCII snake_case: GIS-friendly, stable across languages
    type: str               # string | integer | number | boolean
    title_ja: str
    title_en: str
    description: str = ""
    sources: tuple = ()     # source column names, in order of preference (coalesced)


@dataclass(frozen=True)
class Theme:
    name: str
    title_ja: str
    title_en: str
    fields: tuple
    markers: frozenset      # fields whose source columns only this kind of data has
    keywords: tuple = ()    # words in a dataset title/tags that point to the theme
    # source column → several fields (one Yaizu column covers 地震 and 津波 at once)
    multi: dict = field(default_factory=dict)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def F(name, type_, ja, en, desc="", *sources) -> Field:
    return Field(name, type_, ja, en, desc, tuple(sources))


# Added to every theme: where a feature comes from (filled by translate, never from a column).
PROVENANCE = (
    F("publisher", "string", "提供者", "Publisher", "データを公開した組織"),
    F("source_dataset", "string", "元データセット", "Source dataset", "renkei のデータセット ID"),
    F("source_row", "integer", "元データの行番号", "Source row", "元ファイルのデータ行番号（見出しを除く）"),
    F("source_id", "string", "元データの ID", "Source id", "元データの NO・ID・共通ID など"),
)
_ID_SOURCES = ("ID", "NO", "#property", "id", "identifier")
_MUNI = F("municipality_code", "string", "全国地方公共団体コード", "Municipality code",
          "6 桁（検査数字付き）。5 桁で公開されたものは検査数字を補っています",
          "所在地_全国地方公共団体コード", "市区町村コード", "全国地方公共団体コード",
          "都道府県コード又は市区町村コード", "localGovernmentCode", "prefCode", "cid")
_NAME = F("name", "string", "名称", "Name", "", "名称", "施設・場所名", "name", "施設名", "避難所名",
          "避難場所名", "P20_002")
_KANA = F("name_kana", "string", "名称（カナ）", "Name (kana)", "", "名称_カナ", "名称カナ", "nameKana",
          "ふりがな", "フリガナ")
_ADDR = F("address", "string", "所在地", "Address", "所在地_連結表記（旧形式は住所）",
          "所在地_連結表記", "住所", "所在地", "address", "fullAddress", "P20_003")
_BLDG = F("building", "string", "建物名等（方書）", "Building", "", "建物名等(方書)", "方書")
_PHONE = F("phone", "string", "電話番号", "Phone", "", "電話番号", "telephoneNumber", "telephone number",
           "連絡先電話番号", "tel", "contactPointPhoneNumber")
_URL = F("url", "string", "URL", "URL", "", "URL", "url")
_NOTE = F("note", "string", "備考", "Note", "条件付きの指定（例: 洪水は2階以上）もここに記します",
          "備考", "note", "remarks")
_DAYS = F("available_days", "string", "利用可能曜日", "Available days", "", "利用可能曜日", "診療曜日")
_START = F("start_time", "string", "開始時間", "Opening time", "", "開始時間", "利用開始時間", "診療開始時間")
_END = F("end_time", "string", "終了時間", "Closing time", "", "終了時間", "利用終了時間", "診療終了時間")
_AVAIL = F("availability_note", "string", "利用可能日時特記事項", "Availability note", "",
           "利用可能日時特記事項", "利用可能時間特記事項", "診療日時特記事項")
_ORG = F("organization", "string", "団体名", "Organization", "設置・管理する団体", "団体名", "設置者",
         "jurisdiction")
_INSTALL = F("install_location", "string", "設置位置", "Location in the building", "", "設置位置")


def _hazard_fields():
    src = {
        "flood": ("災害種別_洪水", "洪水", "避難場所指定_洪水", "flood", "flood_L1", "flood_L2",
                  "typeOfDisasterFlood"),
        "landslide": ("災害種別_崖崩れ、土石流及び地滑り", "崖崩れ、土石流及び地滑り", "避難場所指定_土砂災害",
                      "土砂災害", "sedimentDisaster", "開設される災害の種類(土砂災害)"),
        "storm_surge": ("災害種別_高潮", "高潮", "避難場所指定_高潮", "stormSurge"),
        "earthquake": ("災害種別_地震", "地震", "避難場所指定_地震", "earthquake"),
        "tsunami": ("災害種別_津波", "津波", "避難場所指定_津波", "tunami", "tsunami"),
        "large_fire": ("災害種別_大規模な火事", "大規模な火事", "避難場所指定_大規模火災", "大規模火災", "fire"),
        "inland_flood": ("災害種別_内水氾濫", "内水氾濫", "inundation"),
        "volcano": ("災害種別_火山現象", "火山現象", "volcano", "typeOfDisasterEruption"),
    }
    return tuple(F(n, "boolean", f"災害種別_{ja}", n.replace("_", " ").capitalize(),
                   f"{ja}に対応する指定の有無（空欄の列は「指定なし」、列がない場合は不明）", *src[n])
                 for n, ja in HAZARDS)


SHELTER = Theme(
    "shelter", "指定緊急避難場所・指定避難所", "Evacuation sites and shelters",
    (F("kind", "string", "種別", "Kind",
       f"{KIND_EMERGENCY}（災害対策基本法第49条の4）・{KIND_SHELTER}（同第49条の7）・{KIND_BOTH}"),
     _NAME, _KANA, _ADDR, _MUNI,
     F("elevation", "number", "標高", "Elevation", "メートル", "標高", "elevation", "height", "標高(m)"),
     F("capacity", "number", "想定収容人数", "Capacity",
       "数値として読める場合のみ（元の記載は capacity_text）。屋内と屋外に分けて公開されたもの"
       "（収容人数_屋内・収容人数_屋外）は、その合計です（内訳は capacity_text と元の列に残ります）",
       "想定収容人数", "収容人数", "capacity", "maxCapacity", *("収容人数_屋内", "収容人数_屋外"),
       "P20_005"),
     F("capacity_text", "string", "想定収容人数（元の記載）", "Capacity (as published)"),
     *_hazard_fields(),
     F("gsi_id", "string", "共通ID", "GSI common id", "国土地理院データの共通ID", "共通ID",
       "nationalShelterId"),
     _NOTE, _PHONE, *PROVENANCE),
    markers=frozenset({"flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire",
                       "inland_flood", "volcano", "gsi_id", "capacity"}),
    keywords=("避難所", "避難場所", "hinan", "shelter", "evacuation"),
    multi={"開設される災害の種類(地震・津波)": ("earthquake", "tsunami"),
           "開設される災害の種類(風水害)": ("flood", "storm_surge", "inland_flood"),
           # NGSI EvacuationSite (datamodels.jp): one JSON array of hazard keys
           "hazardTypes": tuple(h for h, _ in HAZARDS)},
)
# Parts of one capacity (Kakogawa): capacity is their sum, the parts stay in capacity_text.
CAPACITY_PARTS = ("収容人数_屋内", "収容人数_屋外")
# Columns that say which legal kind a row is (see translate._shelter_kind).
SHELTER_ALSO_SHELTER = ("指定避難所との重複", "alsoForShelter", "alsoDesignatedShelter",
                        "evacuationSpace")
HAZARD_LIST = "hazardTypes"
HAZARD_KEYS = {"flood": "flood", "landslide": "landslide", "stormSurge": "storm_surge",
               "earthquake": "earthquake", "tsunami": "tsunami", "greatFire": "large_fire",
               "inlandFlood": "inland_flood", "eruption": "volcano"}
SHELTER_GSI_EVACUATION = ("指定緊急避難場所との住所同一", "受入対象者")
SHELTER_GSI_EMERGENCY = ("指定避難所との住所同一",)

AED = Theme(
    "aed", "AED設置箇所", "AED locations",
    (_NAME, _KANA, _ADDR, _BLDG, _MUNI, _INSTALL, _PHONE, _ORG, _DAYS, _START, _END, _AVAIL,
     F("pediatric", "boolean", "小児対応設備の有無", "Pediatric pads", "", "小児対応設備の有無"),
     _URL, _NOTE, *PROVENANCE),
    markers=frozenset({"pediatric"}), keywords=("AED",),
)
PUBLIC_FACILITY = Theme(
    "public_facility", "公共施設", "Public facilities",
    (_NAME, _KANA,
     F("name_common", "string", "名称（通称）", "Common name", "", "名称_通称"),
     F("poi_code", "string", "POIコード", "POI code", "", "POIコード"),
     _ADDR, _BLDG, _MUNI, _PHONE, _ORG, _DAYS, _START, _END, _AVAIL,
     F("description", "string", "説明", "Description", "", "説明"),
     F("barrier_free", "string", "バリアフリー情報", "Accessibility", "", "バリアフリー情報"),
     _URL, _NOTE, *PROVENANCE),
    markers=frozenset({"name_common", "poi_code", "barrier_free"}), keywords=("公共施設",),
)
MEDICAL = Theme(
    "medical_institution", "医療機関", "Medical institutions",
    (_NAME, _KANA,
     F("institution_type", "string", "医療機関の種類", "Institution type", "病院・有床診療所・無床診療所",
       "医療機関の種類", "alternativeName"),
     _ADDR, _BLDG, _MUNI, _PHONE,
     F("fax", "string", "FAX番号", "Fax", "", "FAX番号"),
     F("corporation", "string", "法人の名称", "Corporation", "", "法人の名称", "establisher"),
     F("medical_code", "string", "医療機関コード", "Institution code", "", "医療機関コード"),
     F("departments", "string", "診療科目", "Departments", "", "診療科目", "medicalSubjects"),
     F("beds", "integer", "病床数", "Beds", "", "病床数", "numberOfBeds"),
     F("opening_date", "string", "開設年月日", "Opening date", "", "openingDate", "開設年月日"),
     _DAYS, _START, _END, _AVAIL,
     F("after_hours", "string", "時間外における対応", "After-hours care", "", "時間外における対応"),
     _URL, _NOTE, *PROVENANCE),
    markers=frozenset({"institution_type", "departments", "beds", "medical_code"}),
    keywords=("医療機関", "病院", "診療所", "hospital"),
)


def _count(name, ja, en, *src):
    return F(name, "integer", ja, en, "", *src)


def _flag(name, ja, en, *src):
    return F(name, "boolean", ja, en, "有/無", *src)


PUBLIC_TOILET = Theme(
    "public_toilet", "公衆トイレ", "Public toilets",
    (_NAME, _KANA, _ADDR, _BLDG, _MUNI, _INSTALL,
     _count("male_total", "男性トイレ総数", "Men's toilets", "男性トイレ総数"),
     _count("female_total", "女性トイレ総数", "Women's toilets", "女性トイレ総数"),
     _count("unisex_total", "男女共用トイレ総数", "Unisex toilets", "男女共用トイレ総数"),
     _count("accessible_total", "バリアフリートイレ数", "Accessible toilets", "バリアフリートイレ数",
            "多機能トイレ数"),
     _flag("wheelchair", "車椅子使用者用トイレ有無", "Wheelchair accessible", "車椅子使用者用トイレ有無"),
     _flag("baby_facilities", "乳幼児用設備設置トイレ有無", "Baby facilities", "乳幼児用設備設置トイレ有無"),
     _flag("ostomate", "オストメイト設置トイレ有無", "Ostomate facilities", "オストメイト設置トイレ有無"),
     _START, _END, _AVAIL, _NOTE, *PROVENANCE),
    markers=frozenset({"male_total", "female_total", "unisex_total", "accessible_total",
                       "wheelchair", "ostomate"}),
    keywords=("トイレ", "toilet"),
)
FIRE_HYDRANT = Theme(
    "fire_hydrant", "消防水利施設", "Fire water supplies",
    (F("facility_type", "string", "種別", "Type",
       "消火栓/私設消火栓/防火水そう/プール/河川・溝等/濠・池等/海・湖/井戸/下水道/その他", "種別"),
     _ADDR, _BLDG, _MUNI,
     F("diameter", "number", "口径", "Diameter", "", "口径"),
     _NOTE, *PROVENANCE),
    markers=frozenset({"diameter"}), keywords=("消防水利", "消火栓", "防火水", "hydrant"),
)

# KSJ A31: v2.x 浸水深ランク (A31_101/201) and the v1.1 code sets, each → (min m, max m).
A31_DEPTH_V2 = {1: (0.0, 0.5), 2: (0.5, 3.0), 3: (3.0, 5.0), 4: (5.0, 10.0), 5: (10.0, 20.0),
                6: (20.0, None)}
A31_DEPTH_V1 = {11: (0.0, 0.5), 12: (0.5, 1.0), 13: (1.0, 2.0), 14: (2.0, 5.0), 15: (5.0, None),
                21: (0.0, 0.5), 22: (0.5, 1.0), 23: (1.0, 2.0), 24: (2.0, 3.0), 25: (3.0, 4.0),
                26: (4.0, 5.0), 27: (5.0, None)}
A31_DURATION = {1: "12時間未満", 2: "12時間以上24時間未満", 3: "24時間以上72時間未満",
                4: "72時間以上168時間未満", 5: "168時間以上336時間未満", 6: "336時間以上672時間未満",
                7: "672時間以上"}
A31_COLLAPSE = {1: "氾濫流", 2: "河岸浸食", 3: "氾濫流・河岸浸食"}
A33_PHENOMENON = {1: "急傾斜地の崩壊", 2: "土石流", 3: "地滑り"}
A33_ZONE = {1: "土砂災害警戒区域（指定済）", 2: "土砂災害特別警戒区域（指定済）",
            3: "土砂災害警戒区域（指定前）", 4: "土砂災害特別警戒区域（指定前）"}
SCALES = {"L1": "計画規模", "L2": "想定最大規模"}

FLOOD_AREA = Theme(
    "flood_area", "洪水浸水想定区域", "Flood inundation areas",
    (F("scale", "string", "規模", "Scale", "L1 = 計画規模、L2 = 想定最大規模"),
     F("depth_rank", "integer", "浸水深ランク", "Depth rank", "国土数値情報 A31 のランクコード",
       "A31_001", "A31_101", "A31_201", "A31a_205"),
     F("depth_range", "string", "浸水深", "Depth range", "例: 0.5m以上3.0m未満"),
     F("depth_min_m", "number", "浸水深の下限 (m)", "Minimum depth (m)"),
     F("depth_max_m", "number", "浸水深の上限 (m)", "Maximum depth (m)", "上限なしは空"),
     F("duration", "string", "浸水継続時間", "Inundation duration", "", "A31_301"),
     F("collapse_zone", "string", "家屋倒壊等氾濫想定区域", "House-collapse zone", "", "A31_401"),
     F("river_name", "string", "河川名", "River", "", "A31a_202"),
     F("designated_on", "string", "指定年月日", "Designated on", "", "A31_102", "A31_202"),
     *PROVENANCE),
    markers=frozenset({"depth_rank", "duration", "collapse_zone"}),
    keywords=("浸水想定", "洪水浸水", "A31"),
)
LANDSLIDE_AREA = Theme(
    "landslide_area", "土砂災害警戒区域", "Sediment-disaster warning zones",
    (F("phenomenon", "string", "現象の種類", "Phenomenon", "急傾斜地の崩壊・土石流・地滑り", "A33_001"),
     F("zone_type", "string", "区域区分", "Zone type", "警戒区域・特別警戒区域（指定済／指定前）", "A33_002"),
     F("pref_code", "string", "都道府県コード", "Prefecture code", "", "A33_003"),
     F("zone_number", "string", "区域番号", "Zone number", "", "A33_004"),
     F("zone_name", "string", "区域名", "Zone name", "", "A33_005"),
     F("address", "string", "所在地", "Address", "", "A33_006"),
     F("notified_on", "string", "告示日", "Notified on", "", "A33_007"),
     F("special_zone_pending", "boolean", "特別警戒区域未指定", "Special zone not yet designated",
       "A33_008 が 1", "A33_008"),
     *PROVENANCE),
    markers=frozenset({"phenomenon", "zone_type"}), keywords=("土砂災害警戒", "A33"),
)
TSUNAMI_AREA = Theme(
    "tsunami_area", "津波浸水想定", "Tsunami inundation areas",
    (F("depth_class", "string", "津波浸水深の区分", "Depth class", "報告書の記載のまま", "A40_003"),
     F("depth_min_m", "number", "浸水深の下限 (m)", "Minimum depth (m)"),
     F("depth_max_m", "number", "浸水深の上限 (m)", "Maximum depth (m)", "上限なしは空"),
     F("pref_name", "string", "都道府県名", "Prefecture", "", "A40_001"),
     F("pref_code", "string", "都道府県コード", "Prefecture code", "", "A40_002"),
     *PROVENANCE),
    markers=frozenset({"depth_class"}), keywords=("津波浸水", "A40"),
)

THEMES = {t.name: t for t in (SHELTER, AED, PUBLIC_FACILITY, MEDICAL, PUBLIC_TOILET, FIRE_HYDRANT,
                              FLOOD_AREA, LANDSLIDE_AREA, TSUNAMI_AREA)}
MERGED_TITLE_PREFIX = "兵庫県"
SOURCES_FIELD = F("sources", "string", "出典（統合元）", "Sources",
                  "統合レイヤーで同じ施設をまとめた元データ（提供者: データセット）を「; 」区切りで記します")

_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}


def merged_fields(theme: Theme) -> tuple:
    return theme.fields + (SOURCES_FIELD,)


def json_schema(theme: Theme | str, merged: bool = False) -> dict:
    """JSON Schema of a theme's features (OGC API Features Part 5 style), titles in Japanese."""
    theme = THEMES[theme] if isinstance(theme, str) else theme
    props = {"geometry": {"format": "geometry-any", "x-ogc-role": "primary-geometry"}}
    for f in (merged_fields(theme) if merged else theme.fields):
        props[f.name] = {"type": _JSON_TYPES[f.type], "title": f.title_ja,
                         "x-title-en": f.title_en, **({"description": f.description}
                                                      if f.description else {})}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "title": theme.title_ja, "x-title-en": theme.title_en, "properties": props}


def field_info(theme: Theme | str, columns=None, merged: bool = False) -> dict:
    """{field: {type, title, description}} for Collection.fields: ogcapi.provider merges the title
    and description into /queryables and /schema."""
    theme = THEMES[theme] if isinstance(theme, str) else theme
    out = {}
    for f in (merged_fields(theme) if merged else theme.fields):
        if columns is None or f.name in columns:
            out[f.name] = {"type": f.type, "title": f.title_ja,
                           "description": f.description or f.title_en}
    return out


def collection_id(theme: str) -> str:
    """The merged prefecture-wide collection of a theme (also its Dataset id)."""
    return f"theme-{theme}"
