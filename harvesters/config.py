"""sources.yaml: read and validate before anything is touched (a bad config changes nothing)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from store.access import LEVELS
from store.applications import VALIDATED_DIR, validated_sources  # accepted proposals
from harvesters import auth, ckan, files, ngsi_ld, ngsi_v2, ogcapi_source
from harvesters.base import Harvester, SourceConfig, harvester_class, source_types

# The source types this installation offers: importing a module registers its harvester.
SOURCE_MODULES = (ckan, files, ngsi_v2, ngsi_ld, ogcapi_source)

NUMERIC = {"time_limit": (1, 7 * 86400), "retries": (1, 10), "backoff": (0, 60),
           "limit": (1, 10000), "rows": (1, 1000), "incremental_margin": (0, 30 * 86400),
           "max_withdraw": (0, 1), "min_row_share": (0, 1)}
DEFAULT_TIME_LIMIT = 3600  # seconds per source
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")

# 全国地方公共団体コード of the platform's members; sources.yaml may add or override.
KNOWN_ORGANIZATIONS = {
    "hyogo-pref": {"name_ja": "兵庫県", "name_en": "Hyogo Prefecture", "code": "280003"},
    "himeji-city": {"name_ja": "姫路市", "name_en": "Himeji City", "code": "282014"},
    "kakogawa-city": {"name_ja": "加古川市", "name_en": "Kakogawa City", "code": "282103"},
    "kasai-city": {"name_ja": "加西市", "name_en": "Kasai City", "code": "282201"},
    "yabu-city": {"name_ja": "養父市", "name_en": "Yabu City", "code": "282227"},
}


class ConfigError(Exception):
    pass


def load_config(path: Path) -> tuple[list[SourceConfig], dict[str, dict]]:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(doc, path, Path(path).resolve().parent)


def parse_config(doc, path, base: Path) -> tuple[list[SourceConfig], dict[str, dict]]:
    """One sources.yaml document; `path` names it in errors, `base` resolves local files."""
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'sources' list")
    orgs = dict(KNOWN_ORGANIZATIONS)
    for slug, org in (doc.get("organizations") or {}).items():
        if not isinstance(org, dict) or not org.get("name_ja"):
            raise ConfigError(f"{path}: organization {slug!r} needs at least name_ja")
        orgs[slug] = {**orgs.get(slug, {}), **org}
    sources, names = [], set()
    for i, entry in enumerate(doc["sources"], 1):
        where = f"{path}: source #{i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        name, kind = entry.get("name"), entry.get("type")
        if not isinstance(name, str) or not SLUG.match(name):
            raise ConfigError(f"{where}: 'name' must be a lower-case slug, got {name!r}")
        where = f"{path}: source {name!r}"
        if name in names:
            raise ConfigError(f"{where}: duplicate name")
        names.add(name)
        cls = harvester_class(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ConfigError(f"{where}: unknown type {kind!r} (one of {', '.join(source_types())})")
        url = entry.get("url") or ""
        if cls.needs_url and not re.match(r"^https?://", url):
            raise ConfigError(f"{where}: a {kind} source needs an http(s) 'url'")
        problem = (auth.validate(entry.get("auth"), where) or _check_options(entry, where)
                   or cls.config_problem(entry, where))
        if problem:
            raise ConfigError(problem)
        options = cls.prepare_options(
            {k: v for k, v in entry.items() if k not in ("name", "type", "url", "organization")},
            base)
        sources.append(SourceConfig(name=name, type=kind, url=url,
                                    organization=entry.get("organization"), options=options))
    return sources, orgs


def load_validated(store) -> tuple[list[SourceConfig], dict[str, dict]]:
    """Sources proposed by organizations and validated by the operator, checked exactly like
    sources.yaml: their accepted applications in PostgreSQL mode (accepted on any web server),
    one file each in `<data dir>/sources.d/` in the embedded mode. Pending proposals are in
    neither, so they never run."""
    sources, orgs = [], {}
    if store.postgresql:
        with store.session() as s:
            docs = validated_sources(s)
        found = [parse_config(doc, label, Path(store.data_dir)) for label, doc in docs]
    else:
        folder = Path(store.data_dir) / VALIDATED_DIR
        found = [load_config(path) for path in
                 (sorted(folder.glob("*.yaml")) if folder.is_dir() else [])]
    for more, more_orgs in found:
        sources += more
        orgs.update(more_orgs)
    return sources, orgs


def merge(first: tuple, second: tuple) -> tuple[list[SourceConfig], dict[str, dict]]:
    names = {s.name for s in first[0]}
    clash = sorted(s.name for s in second[0] if s.name in names)
    if clash:
        raise ConfigError(f"validated sources named like sources of the config: {', '.join(clash)}")
    return first[0] + second[0], {**second[1], **first[1]}


def _check_options(entry: dict, where: str) -> str | None:
    if "allow_private_networks" in entry and not isinstance(entry["allow_private_networks"], bool):
        return f"{where}: 'allow_private_networks' must be true or false"
    for key, (low, high) in NUMERIC.items():
        if key in entry:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                return f"{where}: {key!r} must be a number from {low} to {high}, got {value!r}"
    types = entry.get("entity_types")
    if types is not None:
        if not isinstance(types, list) or not all(
                isinstance(t, str) or (isinstance(t, dict) and isinstance(t.get("type"), str))
                for t in types):
            return f"{where}: 'entity_types' must be a list of type names or {{type: …}} mappings"
    level = entry.get("access_level")
    if level is not None and level not in LEVELS:
        return f"{where}: 'access_level' must be one of {', '.join(LEVELS)}, got {level!r}"
    cols = entry.get("collections")
    if cols is not None and not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)):
        return f"{where}: 'collections' must be a list of collection ids"
    return None


def harvester_for(source: SourceConfig, timeout: float, cache_dir: Path) -> Harvester:
    """The harvester of a source type; API harvesters write the pages they read under
    cache_dir."""
    cls = harvester_class(source.type)
    if cls is None:  # load_config refuses such a source; a SourceConfig built in code may not
        raise ValueError(f"unknown source type {source.type!r}")
    return cls(source, timeout=timeout, cache_dir=cache_dir)
