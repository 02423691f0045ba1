"""全国地方公共団体コード: the list shipped as package data (geo/data/local_government_codes.csv,
provenance in geo/data/README.md), and the lookups translation needs when a file has no code
column — by an organization's Japanese name or slug, and by the head of an address.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

DATA = Path(__file__).with_name("data") / "local_government_codes.csv"
_SPACE = re.compile(r"\s+")
_COUNTY = re.compile(r"^[^市区町村郡]{1,6}郡")
# The platform's prefecture: a slug that is a municipality's web-domain label ("kasai" in
# city.kasai.hyogo.jp) is read within it, where such labels are unique.
HOME_PREFECTURE = "兵庫県"


@dataclass(frozen=True)
class LocalGovernment:
    code: str            # 6 digits with check digit
    prefecture: str
    municipality: str    # "" for the prefecture itself; wards as 神戸市東灘区
    website: str

    @property
    def name(self) -> str:
        return self.prefecture + self.municipality


def _key(text: str) -> str:
    return _SPACE.sub("", unicodedata.normalize("NFKC", text or ""))


@lru_cache(maxsize=1)
def all_codes() -> tuple[LocalGovernment, ...]:
    with open(DATA, encoding="utf-8", newline="") as fh:
        return tuple(LocalGovernment(r["code"], r["prefecture"], r["municipality"], r["website"])
                     for r in csv.DictReader(fh))


@lru_cache(maxsize=1)
def _by_name() -> tuple[dict, dict, dict]:
    full, city_only, by_pref = {}, {}, {}
    counts: dict[str, int] = {}
    for lg in all_codes():
        full[_key(lg.name)] = lg
        if lg.municipality:
            counts[lg.municipality] = counts.get(lg.municipality, 0) + 1
            by_pref.setdefault(lg.prefecture, {})[lg.municipality] = lg
    for lg in all_codes():
        if lg.municipality and counts[lg.municipality] == 1:
            city_only[lg.municipality] = lg
    return full, city_only, by_pref


def by_code(code: str | None) -> LocalGovernment | None:
    return next((lg for lg in all_codes() if lg.code == code), None) if code else None


def by_name(name: str | None) -> LocalGovernment | None:
    """「加西市」「兵庫県加西市」「兵庫県」 → its entry; a city name shared by two prefectures
    (府中市) only with its prefecture."""
    key = _key(name or "")
    if not key:
        return None
    full, city_only, _ = _by_name()
    return full.get(key) or city_only.get(key)


@lru_cache(maxsize=1)
def _slugs() -> dict[str, LocalGovernment]:
    """Web-domain labels of the home prefecture's municipalities (city.kasai.hyogo.jp → kasai)."""
    seen: dict[str, list] = {}
    for lg in all_codes():
        if lg.prefecture != HOME_PREFECTURE or not lg.municipality or not lg.website:
            continue
        host = (urlsplit(lg.website).hostname or "").split(".")
        if len(host) >= 3 and host[0] == "www":
            host = host[1:]
        if len(host) >= 3 and host[0] in ("city", "town", "vill"):
            seen.setdefault(host[1], []).append(lg)
    return {label: lgs[0] for label, lgs in seen.items() if len(lgs) == 1}


def of_organization(name_ja: str | None = None, slug: str | None = None
                    ) -> LocalGovernment | None:
    """An organization's entry by its Japanese name (CKAN title), else its slug ("kasai",
    "kasai-city", "city-kasai")."""
    found = by_name(name_ja)
    if found or not slug:
        return found
    label = re.sub(r"(^(city|town|vill)[-_])|([-_](city|town|shi|cho|machi)$)", "",
                   slug.strip().lower())
    return _slugs().get(label)


def from_address(address: str | None) -> LocalGovernment | None:
    """The municipality an address starts with: 「兵庫県加西市北条町…」, 「美方郡香美町…」,
    「加西市…」 (a city name alone only where it is unique in Japan)."""
    text = _key(address or "")
    if not text:
        return None
    full, city_only, by_pref = _by_name()
    pref = next((p for p in by_pref if text.startswith(p)), None)
    rest = text[len(pref):] if pref else text
    table = by_pref[pref] if pref else city_only
    for head in dict.fromkeys((rest, _COUNTY.sub("", rest))):
        # longest name first: 神戸市東灘区 before 神戸市
        for n in range(min(len(head), 10), 1, -1):
            lg = table.get(head[:n])
            if lg:
                return lg
    return None
