"""DCAT-AP 3 for the whole catalogue and per dataset, with rdflib, as ckanext-dcat publishes it.

Routes: /catalog.jsonld|.ttl|.rdf (100 datasets a page, Hydra paging, `modified_since`) and
/datasets/<id>.jsonld|.ttl|.rdf. The dataset routes are more specific than the HTML page rule
/datasets/<path:id>, so Werkzeug matches them first for these suffixes.

Mapping: each harvested resource is a dcat:Distribution (accessURL and downloadURL = the
original file), each published layer a Distribution whose dcat:accessService is the OGC API
(one dcat:DataService) plus one Distribution per translated download (GeoJSON, CSV, GeoPackage;
downloadURL = our download route, the Distribution's URI that URL + "#distribution"), publishers are foaf:Agent with the 全国地方公共団体コード as
dct:identifier, licences are URIs where the licence is recognised (CC BY 4.0, CC0,
政府標準利用規約 2.0, 公共データ利用規約 1.0), else the source's licence URL, else a labelled node.
`dct:modified` of a dataset is our last change (as in the CKAN API's metadata_modified).
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, current_app, request
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, SKOS, XSD
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from catalog import auth
from catalog.api.ckan_dicts import DOWNLOADS, MIMETYPES, ckan_time, download_url
from store.db import Dataset, Organization
from catalog.public_text import iri, public_url, xml_text

bp = Blueprint("dcat", __name__)
_UNSAFE = re.compile(r'[\x00-\x20<>"{}|\\^`]')

HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
SPDX = Namespace("http://spdx.org/rdf/terms#")
LOCN = Namespace("http://www.w3.org/ns/locn#")
ADMS_PUBLISHER = Namespace("http://purl.org/adms/publishertype/")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")
JAPANESE = URIRef("http://publications.europa.eu/resource/authority/language/JPN")
DCATAP = Namespace("http://data.europa.eu/r5r/")
# EU planned-availability vocabulary (DCAT-AP's dcatap:availability): what we serve stays.
STABLE = URIRef("http://publications.europa.eu/resource/authority/planned-availability/STABLE")
# Hyogo prefecture's extent (CRS84), the catalogue's dct:spatial.
HYOGO_BBOX = (134.25, 34.15, 135.47, 35.68)
CATALOGUE_LICENSE = "http://creativecommons.org/licenses/by/4.0/"   # of the metadata
OGC_FEATURES = URIRef("http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core")
SQLITE_MAX_INT = 2**63 - 1
PER_PAGE = 100  # as ckanext-dcat; RENKEI_DCAT_PAGE_SIZE in the app config overrides it
FORMATS = {"jsonld": ("json-ld", "application/ld+json"), "ttl": ("turtle", "text/turtle"),
           "rdf": ("xml", "application/rdf+xml")}
EU_FILE_TYPES = {"CSV": "CSV", "GEOJSON": "GEOJSON", "JSON": "JSON", "ZIP": "ZIP", "SHP": "SHP",
                 "KML": "KML", "KMZ": "KMZ", "GPKG": "GPKG", "XLSX": "XLSX", "XLS": "XLS",
                 "PDF": "PDF", "XML": "XML", "GML": "GML", "TXT": "TXT", "HTML": "HTML"}
CC_BY_4 = "http://creativecommons.org/licenses/by/4.0/"
GOV_STANDARD_TERMS = "https://www.digital.go.jp/resources/open_data"
LICENSES = [  # (substrings of id/title/url, casefolded) -> URI
    (("cc-by-2.1", "by/2.1"), "http://creativecommons.org/licenses/by/2.1/jp/"),
    (("cc-by", "cc by", "creativecommons.org/licenses/by/", "クリエイティブ・コモンズ 表示",
      "クリエイティブ・コモンズ表示"), CC_BY_4),
    (("cc0", "cc-zero", "publicdomain/zero"), "http://creativecommons.org/publicdomain/zero/1.0/"),
    (("公共データ利用規約", "pdl", "public_data_license"),
     "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0"),
    # 政府標準利用規約 2.0 has no stable page of its own; the Digital Agency's open data page
    # hosts it, and the terms are declared compatible with CC BY 4.0 (rdfs:seeAlso below).
    (("政府標準利用規約", "gov-2.0", "gov_std"), GOV_STANDARD_TERMS),
]
CONTEXT = {"dcat": str(DCAT), "dct": str(DCTERMS), "foaf": str(FOAF), "hydra": str(HYDRA),
           "vcard": str(VCARD), "spdx": str(SPDX), "locn": str(LOCN), "xsd": str(XSD),
           "rdfs": str(RDFS), "skos": str(SKOS), "dcatap": str(DCATAP)}


# -- routes ---------------------------------------------------------------------------------------

@bp.route("/catalog.<fmt>")
def catalog(fmt: str):
    if fmt not in FORMATS:
        return _plain(404, "形式は .jsonld / .ttl / .rdf のいずれかです。")
    per_page = int(current_app.config.get("RENKEI_DCAT_PAGE_SIZE", PER_PAGE))
    try:
        page = int(request.args.get("page") or 1)
        # SQLite's OFFSET is a 64-bit integer: a larger page is a client error, not a 500.
        if page < 1 or (page - 1) * per_page > SQLITE_MAX_INT:
            raise ValueError
    except ValueError:
        return _plain(400, "page は 1 以上の整数で指定してください（大きすぎる値は使えません）。")
    since_text = request.args.get("modified_since") or ""
    since = None
    if since_text:
        try:
            since = datetime.fromisoformat(since_text.strip().replace("Z", "+00:00"))
        except ValueError:
            return _plain(400, "modified_since は ISO 8601 の日時（例: 2025-06-01T00:00:00Z）で"
                               "指定してください。")
        if since.tzinfo is not None:
            since = since.astimezone(timezone.utc).replace(tzinfo=None)
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        where = [Dataset.status == "active", auth.read_where()] + (
            [Dataset.updated_at >= since] if since else [])
        total = s.scalar(select(func.count()).select_from(Dataset).where(*where)) or 0
        datasets = list(s.scalars(
            select(Dataset).where(*where).order_by(Dataset.updated_at.desc(), Dataset.id)
            .offset((page - 1) * per_page).limit(per_page)
            .options(selectinload(Dataset.resources), selectinload(Dataset.collections))))
        orgs = {o.id: o for o in s.scalars(select(Organization))}
        last_change = s.scalar(select(func.max(Dataset.updated_at)).where(auth.read_where()))
        first = s.scalar(select(func.min(Dataset.created_at)).where(auth.read_where()))
        g = catalog_graph(_base(), datasets, orgs, last_change, first)
    _add_paging(g, _base(), fmt, page, total, since_text, per_page)
    return _graph_response(g, fmt)


@bp.route("/datasets/<path:dataset_id>.jsonld", defaults={"fmt": "jsonld"})
@bp.route("/datasets/<path:dataset_id>.ttl", defaults={"fmt": "ttl"})
@bp.route("/datasets/<path:dataset_id>.rdf", defaults={"fmt": "rdf"})
def dataset(dataset_id: str, fmt: str):
    store = current_app.extensions["renkei_store"]
    with store.session() as s:
        ds = s.get(Dataset, dataset_id, options=[selectinload(Dataset.resources),
                                                 selectinload(Dataset.collections)])
        if not auth.may_read(ds):
            return _plain(404, f"「{dataset_id}」というデータセットはありません。")
        if ds.status != "active":
            return _plain(410, f"「{ds.title}」は公開を終了しました。")
        org = s.get(Organization, ds.organization_id) if ds.organization_id else None
        g = _graph()
        add_dataset(g, _base(), ds, org)
    return _graph_response(g, fmt)


def _plain(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _graph_response(g: Graph, fmt: str) -> Response:
    rdf_format, mimetype = FORMATS[fmt]
    _publishable(g)
    kwargs = {"context": CONTEXT, "auto_compact": True} if rdf_format == "json-ld" else {}
    body = g.serialize(format=rdf_format, **kwargs)
    resp = Response(body, content_type=f"{mimetype}; charset=utf-8")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def _publishable(g: Graph) -> None:
    """One dataset's bad value never breaks the catalogue: literals lose the characters XML
    cannot carry (RDF/XML would be malformed), and any IRI an exporter would refuse is
    percent-encoded, or the triple dropped."""
    for s, p, o in list(g):
        new = [_clean_term(t) for t in (s, p, o)]
        if new != [s, p, o]:
            g.remove((s, p, o))
            if None not in new:
                g.add(tuple(new))


def _clean_term(term):
    if isinstance(term, Literal):
        text = str(term)
        clean = xml_text(text)
        return term if clean == text else Literal(clean, lang=term.language,
                                                  datatype=term.datatype)
    if isinstance(term, URIRef) and _UNSAFE.search(str(term)):
        fixed = iri(str(term))
        return URIRef(fixed) if fixed else None
    return term


def _base() -> str:
    return current_app.config.get("RENKEI_BASE_URL") or request.url_root.rstrip("/")


# -- the graph ------------------------------------------------------------------------------------

def _graph() -> Graph:
    g = Graph()
    for prefix, ns in CONTEXT.items():
        g.bind(prefix, Namespace(ns))
    return g


def catalog_graph(base: str, datasets: list[Dataset], orgs: dict, last_change,
                  first_issued=None) -> Graph:
    g = _graph()
    cat = URIRef(base + "/")
    g.add((cat, RDF.type, DCAT.Catalog))
    g.add((cat, DCTERMS.title, Literal("兵庫オープンデータ連携カタログ", lang="ja")))
    g.add((cat, DCTERMS.title, Literal("Hyogo Open Data Hub (renkei)", lang="en")))
    g.add((cat, DCTERMS.description, Literal(
        "兵庫県と県内市町のオープンデータを集約し、検索できるカタログと OGC API – Features、"
        "CKAN 互換 API で提供しています。", lang="ja")))
    g.add((cat, FOAF.homepage, _document(g, cat)))
    g.add((cat, DCTERMS.language, _language(g)))
    if last_change is not None:
        g.add((cat, DCTERMS.modified, _datetime(last_change)))
    if first_issued is not None:
        g.add((cat, DCTERMS.issued, _datetime(first_issued)))
    lic = URIRef(CATALOGUE_LICENSE)
    g.add((lic, RDF.type, DCTERMS.LicenseDocument))
    g.add((cat, DCTERMS.license, lic))
    g.add((cat, DCTERMS.spatial, _location(g, HYOGO_BBOX)))
    g.add((cat, DCAT.themeTaxonomy, _theme_scheme(g, base)))
    hub = orgs.get("hyogo-pref")
    publisher = add_agent(g, base, hub) if hub else _hub_agent(g, base)
    g.add((cat, DCTERMS.publisher, publisher))
    ogc, ckan = _ogc_service(g, base), _ckan_service(g, base)
    for service in (ogc, ckan):
        g.add((cat, DCAT.service, service))
        g.add((service, DCTERMS.publisher, publisher))
        g.add((service, DCAT.contactPoint, _contact(g, "兵庫県")))
    for ds in datasets:
        node = add_dataset(g, base, ds, orgs.get(ds.organization_id))
        g.add((cat, DCAT.dataset, node))
        g.add((ckan, DCAT.servesDataset, node))   # every record is in the CKAN API
    return g


# -- typed objects: DCAT-AP 3's range shapes want each object to say what it is ----------------

def _document(g: Graph, node) -> URIRef:
    g.add((node, RDF.type, FOAF.Document))
    return node


def _language(g: Graph) -> URIRef:
    g.add((JAPANESE, RDF.type, DCTERMS.LinguisticSystem))
    return JAPANESE


def _standard(g: Graph, node) -> URIRef:
    g.add((node, RDF.type, DCTERMS.Standard))
    return node


def _file_type(g: Graph, fmt: str):
    """dct:format: the EU file-type authority's URI, else a labelled node; either typed."""
    node = FILE_TYPE[EU_FILE_TYPES[fmt]] if fmt in EU_FILE_TYPES else BNode()
    g.add((node, RDF.type, DCTERMS.MediaTypeOrExtent))
    if fmt not in EU_FILE_TYPES:
        g.add((node, RDFS.label, Literal(fmt)))
    return node


def _contact(g: Graph, name: str) -> BNode:
    contact = BNode()
    g.add((contact, RDF.type, VCARD.Kind))
    g.add((contact, RDF.type, VCARD.Organization))
    g.add((contact, VCARD.fn, Literal(name, lang="ja")))
    return contact


def _location(g: Graph, bbox) -> BNode:
    w, s, e, n = bbox
    place = BNode()
    g.add((place, RDF.type, DCTERMS.Location))
    g.add((place, DCAT.bbox, Literal(
        f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))", datatype=GSP.wktLiteral)))
    g.add((place, DCAT.centroid, Literal(f"POINT({(w + e) / 2} {(s + n) / 2})",
                                         datatype=GSP.wktLiteral)))
    return place


def _theme_scheme(g: Graph, base: str) -> URIRef:
    scheme = URIRef(f"{base}/themes")
    g.add((scheme, RDF.type, SKOS.ConceptScheme))
    g.add((scheme, DCTERMS.title, Literal("renkei のテーマ（共通の項目に変換する分類）", lang="ja")))
    return scheme


def _theme(g: Graph, base: str, theme: str) -> URIRef:
    node = URIRef(f"{base}/themes/{quote(theme, safe='')}")
    g.add((node, RDF.type, SKOS.Concept))
    g.add((node, SKOS.inScheme, _theme_scheme(g, base)))
    g.add((node, SKOS.prefLabel, Literal(_theme_title(theme), lang="ja")))
    return node


def _theme_title(theme: str) -> str:
    from geo.themes import THEMES
    return THEMES[theme].title_ja if theme in THEMES else theme


def dataset_uri(base: str, dataset_id: str) -> URIRef:
    return URIRef(f"{base}/datasets/{quote(dataset_id, safe='')}")


def add_dataset(g: Graph, base: str, ds: Dataset, org: Organization | None) -> URIRef:
    node = dataset_uri(base, ds.id)
    g.add((node, RDF.type, DCAT.Dataset))
    g.add((node, DCTERMS.identifier, Literal(ds.id)))
    g.add((node, DCTERMS.title, Literal(ds.title, lang="ja")))
    # dct:description is mandatory in DCAT-AP; the title stands in when the source gave none.
    g.add((node, DCTERMS.description, Literal(ds.description or ds.title, lang="ja")))
    g.add((node, DCAT.landingPage, _document(g, node)))
    if iri(ds.landing_page):
        g.add((node, FOAF.page, _document(g, URIRef(iri(ds.landing_page)))))
    for tag in dict.fromkeys(ds.tags or []):
        if tag:
            g.add((node, DCAT.keyword, Literal(tag, lang="ja")))
    if ds.theme:
        g.add((node, DCAT.theme, _theme(g, base, ds.theme)))
    g.add((node, DCTERMS.language, _language(g)))
    period = temporal_coverage(ds.raw)
    if period:
        when = BNode()
        g.add((node, DCTERMS.temporal, when))
        g.add((when, RDF.type, DCTERMS.PeriodOfTime))
        if period[0]:
            g.add((when, DCAT.startDate, Literal(period[0], datatype=XSD.date)))
        if period[1]:
            g.add((when, DCAT.endDate, Literal(period[1], datatype=XSD.date)))
    if ckan_time(ds.issued):
        g.add((node, DCTERMS.issued, _datetime(ds.issued)))
    g.add((node, DCTERMS.modified, _datetime(ds.updated_at)))
    if org is not None:
        g.add((node, DCTERMS.publisher, add_agent(g, base, org)))
        g.add((node, DCAT.contactPoint, _contact(g, org.name_ja)))
    if ds.bbox:
        g.add((node, DCTERMS.spatial, _location(g, ds.bbox)))
    lic = license_node(g, ds)
    for r in ds.resources:
        _add_distribution(g, node, f"{node}/resources/{quote(r.id, safe='')}", lic, r)
    service = None
    for col in ds.collections:
        if col.status != "active":
            continue
        service = service or _ogc_service(g, base)
        g.add((service, DCAT.servesDataset, node))
        url = URIRef(f"{base}/ogcapi/collections/{quote(col.id, safe='')}")
        dist = _distribution(
            g, node, URIRef(f"{node}/collections/{quote(col.id, safe='')}"), lic,
            f"{col.title}（OGC API Features）",
            f"地図データ {col.feature_count} 件（EPSG:4326）を OGC API – Features で提供しています。")
        g.add((dist, DCAT.accessURL, url))
        g.add((dist, DCAT.accessService, service))
        g.add((dist, DCTERMS.conformsTo, _standard(g, OGC_FEATURES)))
        g.add((dist, DCAT.mediaType, _media_type(g, "application/geo+json")))
        g.add((dist, DCTERMS.modified, _datetime(col.published_at)))
        for ext in DOWNLOADS:
            _add_download(g, base, node, col, ext, lic)
    return node


def _add_download(g: Graph, base: str, ds_node, col, ext: str, lic) -> None:
    """A translated download of a published layer (catalog.pages.downloads), a file like any other."""
    fmt, mimetype, label = DOWNLOADS[ext]
    url = URIRef(download_url(base, col.dataset_id, col.id, ext))
    dist = _distribution(
        g, ds_node, URIRef(f"{url}#distribution"), lic, f"{col.title}（{label}）",
        f"連携カタログで変換した地図データ {col.feature_count} 件の {label} ファイルです。")
    g.add((dist, DCAT.accessURL, url))
    g.add((dist, DCAT.downloadURL, url))
    g.add((dist, DCTERMS.format, _file_type(g, fmt.upper())))
    g.add((dist, DCAT.mediaType, _media_type(g, mimetype)))
    g.add((dist, DCTERMS.modified, _datetime(col.published_at)))


def _distribution(g: Graph, ds_node, dist: URIRef, lic, title: str,
                  description: str | None) -> URIRef:
    """What every distribution of a dataset states: its link, class, title, text, licence."""
    g.add((ds_node, DCAT.distribution, dist))
    g.add((dist, RDF.type, DCAT.Distribution))
    g.add((dist, DCTERMS.title, Literal(title, lang="ja")))
    if description:
        g.add((dist, DCTERMS.description, Literal(description, lang="ja")))
    if lic is not None:
        g.add((dist, DCTERMS.license, lic))
    g.add((dist, DCATAP.availability, STABLE))
    g.add((STABLE, RDF.type, SKOS.Concept))
    g.add((STABLE, SKOS.prefLabel, Literal("stable", lang="en")))
    return dist


def _add_distribution(g: Graph, ds_node, uri: str, lic, r) -> None:
    dist = _distribution(g, ds_node, URIRef(uri), lic, r.name or public_url(r.url).rsplit("/", 1)[-1],
                         r.description)
    url = iri(r.url)
    # accessURL is mandatory; a non-http source path is not a link, so the dataset page stands in.
    g.add((dist, DCAT.accessURL, URIRef(url) if url else ds_node))
    if url:
        g.add((dist, DCAT.downloadURL, URIRef(url)))
    fmt = (r.format or r.detected_format or "").upper()
    if fmt:
        g.add((dist, DCTERMS.format, _file_type(g, fmt)))
    if fmt in MIMETYPES:
        g.add((dist, DCAT.mediaType, _media_type(g, MIMETYPES[fmt])))
    if r.size is not None:
        g.add((dist, DCAT.byteSize, Literal(r.size, datatype=XSD.nonNegativeInteger)))
    modified = r.remote_modified if ckan_time(r.remote_modified) else r.last_modified
    if ckan_time(modified):
        g.add((dist, DCTERMS.modified, _datetime(modified)))
    if r.sha256:
        checksum = BNode()
        g.add((dist, SPDX.checksum, checksum))
        g.add((checksum, RDF.type, SPDX.Checksum))
        g.add((checksum, SPDX.algorithm, SPDX.checksumAlgorithm_sha256))
        g.add((SPDX.checksumAlgorithm_sha256, RDF.type, SPDX.ChecksumAlgorithm))
        g.add((checksum, SPDX.checksumValue, Literal(r.sha256, datatype=XSD.hexBinary)))


def license_uri(license_id, title, url) -> str | None:
    text = " ".join(str(v) for v in (license_id, title, url) if v).casefold()
    for keys, uri in LICENSES:
        if any(k.casefold() in text for k in keys):
            return uri
    return iri(url)


def license_node(g: Graph, ds: Dataset):
    if not (ds.license_id or ds.license_title or ds.license_url):
        return None
    uri = license_uri(ds.license_id, ds.license_title, ds.license_url)
    node = URIRef(uri) if uri else BNode()
    g.add((node, RDF.type, DCTERMS.LicenseDocument))
    if ds.license_title or ds.license_id:
        g.add((node, RDFS.label, Literal(ds.license_title or ds.license_id, lang="ja")))
    if uri == GOV_STANDARD_TERMS:
        g.add((node, RDFS.seeAlso, URIRef(CC_BY_4)))
    return node


def add_agent(g: Graph, base: str, org: Organization) -> URIRef:
    node = URIRef(f"{base}/organizations/{quote(org.id, safe='')}")
    g.add((node, RDF.type, FOAF.Agent))
    g.add((node, RDF.type, FOAF.Organization))
    g.add((node, FOAF.name, Literal(org.name_ja, lang="ja")))
    if org.name_en:
        g.add((node, FOAF.name, Literal(org.name_en, lang="en")))
    if org.code:  # 全国地方公共団体コード (6 digits, with check digit)
        g.add((node, DCTERMS.identifier, Literal(org.code)))
        g.add((node, DCTERMS.type, ADMS_PUBLISHER.LocalAuthority))
        g.add((ADMS_PUBLISHER.LocalAuthority, RDF.type, SKOS.Concept))
        g.add((ADMS_PUBLISHER.LocalAuthority, SKOS.prefLabel, Literal("Local Authority",
                                                                     lang="en")))
        g.add((ADMS_PUBLISHER.LocalAuthority, SKOS.inScheme, URIRef(str(ADMS_PUBLISHER))))
    return node


def _hub_agent(g: Graph, base: str) -> URIRef:
    node = URIRef(f"{base}/organizations/hyogo-pref")
    g.add((node, RDF.type, FOAF.Agent))
    g.add((node, FOAF.name, Literal("兵庫県", lang="ja")))
    g.add((node, DCTERMS.identifier, Literal("280003")))
    return node


def _ogc_service(g: Graph, base: str) -> URIRef:
    node = URIRef(f"{base}/ogcapi")
    g.add((node, RDF.type, DCAT.DataService))
    g.add((node, DCTERMS.title, Literal("兵庫オープンデータ連携 OGC API – Features", lang="ja")))
    _endpoint(g, node, URIRef(f"{base}/ogcapi/"), URIRef(f"{base}/ogcapi/openapi"))
    g.add((node, DCTERMS.conformsTo, _standard(g, OGC_FEATURES)))
    return node


def _ckan_service(g: Graph, base: str) -> URIRef:
    node = URIRef(f"{base}/api/3/action")
    g.add((node, RDF.type, DCAT.DataService))
    g.add((node, DCTERMS.title, Literal("CKAN 互換 API（読み取り専用）", lang="ja")))
    _endpoint(g, node, URIRef(f"{base}/api/3/action/"), URIRef(f"{base}/openapi.json"))
    return node


def _endpoint(g: Graph, service, url: URIRef, description: URIRef) -> None:
    g.add((service, DCAT.endpointURL, url))
    g.add((service, DCAT.endpointDescription, description))
    for node in (url, description):   # the range shapes ask for the class, even rdfs:Resource
        g.add((node, RDF.type, RDFS.Resource))


def _add_paging(g: Graph, base: str, fmt: str, page: int, total: int, since: str,
                per_page: int) -> None:
    """Both Hydra forms: PartialCollectionView (hydra:next …, read by udata and current
    ckanext-dcat) and the older PagedCollection (hydra:nextPage …) on the same node."""
    last = max(1, math.ceil(total / per_page))

    def url(n: int) -> str:
        params = {"modified_since": since} if since else {}
        return f"{base}/catalog.{fmt}?" + urlencode({**params, "page": n})
    node = URIRef(url(page))
    g.add((node, RDF.type, HYDRA.PartialCollectionView))
    g.add((node, RDF.type, HYDRA.PagedCollection))
    g.add((node, HYDRA.totalItems, Literal(total, datatype=XSD.integer)))
    g.add((node, HYDRA.itemsPerPage, Literal(per_page, datatype=XSD.integer)))
    links = {"first": 1, "last": last, "next": page + 1 if page < last else None,
             "previous": page - 1 if page > 1 else None}
    for name, n in links.items():
        if n is not None:
            g.add((node, HYDRA[name], URIRef(url(n))))
            g.add((node, HYDRA[name + "Page"], Literal(url(n))))
    g.add((URIRef(base + "/"), HYDRA.view, node))


def _datetime(value) -> Literal:
    # Our times and CKAN's are UTC without an offset; RDF gets the explicit Z.
    return Literal(ckan_time(value) + "Z", datatype=XSD.dateTime)


def _media_type(g: Graph, mimetype: str) -> URIRef:
    node = URIRef(f"https://www.iana.org/assignments/media-types/{mimetype}")
    g.add((node, RDF.type, DCTERMS.MediaType))
    return node


def temporal_coverage(raw) -> tuple[str | None, str | None] | None:
    """(start, end) dates the source says its data covers: ckanext-dcat's temporal_start /
    temporal_end (as keys or CKAN extras), or DCAT's dct:temporal harvested as text."""
    if not isinstance(raw, dict):
        return None
    values = {k: raw.get(k) for k in ("temporal_start", "temporal_end")}
    for extra in raw.get("extras") or []:
        if isinstance(extra, dict) and extra.get("key") in values and not values[extra["key"]]:
            values[extra["key"]] = extra.get("value")
    start, end = (_date(values["temporal_start"]), _date(values["temporal_end"]))
    return (start, end) if start or end else None


def _date(value) -> str | None:
    text = str(value or "").strip()[:10]
    try:
        return datetime.strptime(text, "%Y-%m-%d").date().isoformat()
    except ValueError:
        return None

