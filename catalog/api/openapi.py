"""The published specification: OpenAPI 3 for the CKAN-compatible API and the DCAT endpoints at
/openapi.json, and the same document rendered as a Japanese page at /api (server-side HTML, no
CDN assets). The OGC API publishes its own OpenAPI at /ogcapi/openapi; both pages link to it.

The operations are data (OPERATIONS below) so the JSON and the page cannot drift apart.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

bp = Blueprint("openapi", __name__)

ACTION = "/api/3/action/"


def _p(name, description, schema, required=False, where="query"):
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema}


STR = {"type": "string"}
BOOL = {"type": "boolean"}
NAT = {"type": "integer", "minimum": 0}
ID = _p("id", "データセット・組織・リソースの ID（または名前）", {"type": "string", "minLength": 1},
        required=True)
LIST_PAGING = [_p("limit", "返す件数の上限", NAT), _p("offset", "先頭から飛ばす件数", NAT)]
ALL_FIELDS = _p("all_fields", "true で名前だけでなく全項目を返します", BOOL)
FACET_NAMES = ["organization", "owner_org", "tags", "res_format", "groups", "license_id"]
# A JSON array in one query parameter (ckanapi and CKAN's own clients send it so): OpenAPI says
# that with `content`, not a string schema.
FACET_FIELD = {"name": "facet.field", "in": "query", "required": False,
               "description": 'ファセットを数える項目の JSON 配列（例: ["organization","tags"]）',
               "content": {"application/json": {"schema": {
                   "type": "array", "items": {"type": "string", "enum": FACET_NAMES}}}}}

# (path, summary, description, parameters, result schema name)
OPERATIONS = [
    (ACTION + "status_show", "サイト情報",
     "サイト名・URL・既定の言語・対応する CKAN API の版を返します。", [], "StatusResult"),
    (ACTION + "package_search", "データセットの検索",
     "キーワード（q）と絞り込み（fq）でデータセットを検索します。fq は organization・tags・"
     "res_format・groups・license_id・name・id と、metadata_modified / metadata_created の範囲"
     "（例: metadata_modified:[2025-06-01T00:00:00Z TO *]）に対応します。metadata_modified は"
     "このカタログで最後に更新した日時なので、差分の収集に使えます。", [
         _p("q", "キーワード（日本語の表記ゆれも吸収します）", {"type": "string", "maxLength": 200}),
         _p("fq", "絞り込み条件（Solr 形式。例: organization:kakogawa-city tags:避難所）", STR),
         _p("rows", "1 ページの件数（0〜1000、既定 10）", {"type": "integer", "minimum": 0,
                                                         "maximum": 1000}),
         _p("start", "先頭から飛ばす件数（既定 0）", NAT),
         _p("sort", "並べ替え（例: metadata_modified desc, title_string asc, name asc, "
                    "score desc）", {"type": "string", "enum": [
                        "score desc, metadata_modified desc", "metadata_modified desc",
                        "metadata_modified asc", "metadata_created desc", "name asc",
                        "title_string asc", "id asc"]}),
         FACET_FIELD,
         _p("facet.limit", "ファセットごとの値の数（既定 50、-1 で無制限）",
            {"type": "integer", "minimum": -1}),
     ], "SearchResult"),
    (ACTION + "package_show", "データセット 1 件",
     "ID または名前でデータセットを返します。リソースには提供元のファイルのほか、"
     "このカタログの OGC API のコレクション（format: OGC API Features）が含まれます。", [ID],
     "Package"),
    (ACTION + "package_list", "データセット名の一覧", "公開中のデータセットの名前を返します。",
     LIST_PAGING, "NameList"),
    (ACTION + "resource_show", "リソース 1 件", "ID でリソースを返します。", [ID], "Resource"),
    (ACTION + "organization_list", "組織の一覧", "県・市町の一覧を返します。", [
        ALL_FIELDS, _p("sort", "並べ替え", {"type": "string", "enum": [
            "name asc", "title asc", "package_count desc"]}), *LIST_PAGING], "AnyList"),
    (ACTION + "organization_show", "組織 1 件",
     "組織の情報（全国地方公共団体コードは extras の lg_code）を返します。",
     [ID, _p("include_datasets", "true でその組織のデータセットも返します", BOOL)], "Object"),
    (ACTION + "group_list", "グループ（テーマ）の一覧", "テーマ（防災・施設など）を返します。",
     [ALL_FIELDS], "AnyList"),
    (ACTION + "tag_list", "タグの一覧", "公開中のデータセットのタグを返します。",
     [_p("query", "この文字を含むタグだけを返します", STR), ALL_FIELDS], "AnyList"),
    (ACTION + "license_list", "ライセンスの一覧",
     "公開中のデータセットが使っているライセンスを CKAN の形で返します。", [], "AnyList"),
    (ACTION + "current_package_list_with_resources", "最近更新されたデータセット",
     "リソースを含むデータセットを、更新の新しい順に返します。",
     [*LIST_PAGING, _p("page", "ページ番号（limit と一緒に指定）", {"type": "integer",
                                                                "minimum": 1})], "PackageList"),
    (ACTION + "help_show", "API の説明", "各 API の説明文を返します。",
     [_p("name", "API 名（例: package_search）", {"type": "string", "enum": [
         "status_show", "package_search", "package_show", "package_list", "resource_show",
         "organization_list", "organization_show", "group_list", "tag_list", "license_list",
         "current_package_list_with_resources", "help_show"]}, required=True)], "Text"),
]
RDF_TYPES = {"jsonld": "application/ld+json", "ttl": "text/turtle", "rdf": "application/rdf+xml"}
CATALOG_PARAMS = [_p("page", "ページ番号（1 ページ 100 件）", {"type": "integer", "minimum": 1}),
                  _p("modified_since", "この日時以降に更新されたデータセットだけ（ISO 8601）",
                     {"type": "string", "format": "date-time"})]


def _envelope(result_ref: str) -> dict:
    return {"type": "object", "required": ["help", "success", "result"], "properties": {
        "help": {"type": "string"}, "success": {"type": "boolean", "enum": [True]},
        "result": {"$ref": f"#/components/schemas/{result_ref}"}}}


def _responses(result: str) -> dict:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"200": {"description": "成功", "content": {"application/json": {
                "schema": _envelope(result)}}},
            "400": {"description": "指定の誤り（検索条件など）", **error},
            "404": {"description": "見つかりません", **error},
            "409": {"description": "パラメーターの誤り（Validation Error）", **error}}


def _body_schema(param: dict) -> dict:
    """A query parameter as a JSON body property: facet.field is then a real array (or, as in a
    query string, the array written as JSON text)."""
    if "content" in param:
        array = param["content"]["application/json"]["schema"]
        return {"oneOf": [array, {"type": "string"}]}
    return param["schema"]


def _rdf_schema(mimetype: str) -> dict:
    # JSON-LD is a JSON document (an object with @context and @graph); Turtle and RDF/XML text.
    return {"type": "object"} if mimetype == "application/ld+json" else STR


def _operation_id(path: str, method: str = "get") -> str:
    return path.rsplit("/", 1)[-1].replace(".", "_") + ("" if method == "get" else "_post")


def build_spec(base_url: str) -> dict:
    paths: dict = {}
    for path, summary, description, params, result in OPERATIONS:
        op = {"summary": summary, "description": description, "tags": ["CKAN 互換 API"],
              "operationId": _operation_id(path), "parameters": params,
              "responses": _responses(result)}
        paths[path] = {"get": op}
        if path.endswith("package_search"):
            props = {p["name"]: {**_body_schema(p), "description": p["description"]}
                     for p in params}
            paths[path]["post"] = {
                **op, "operationId": _operation_id(path, "post"), "parameters": [],
                "summary": summary + "（POST・JSON）",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "properties": props}}}}}
    for ext, mimetype in RDF_TYPES.items():
        paths[f"/catalog.{ext}"] = {"get": {
            "summary": f"カタログ全体の DCAT-AP 3（{ext}）", "tags": ["DCAT"],
            "operationId": f"catalog_{ext}",
            "description": "Hydra のページ送り（hydra:next など）付きで 100 件ずつ返します。",
            "parameters": CATALOG_PARAMS, "responses": {
                "200": {"description": "成功", "content": {mimetype: {
                    "schema": _rdf_schema(mimetype)}}},
                "400": {"description": "パラメーターの誤り", "content": {"text/plain": {
                    "schema": STR}}}}}}
    for ext in ("jsonld", "ttl", "rdf"):
        paths[f"/datasets/{{id}}.{ext}"] = {"get": {
            "summary": f"データセット 1 件の DCAT-AP 3（{ext}）", "tags": ["DCAT"],
            "operationId": f"dataset_{ext}",
            "parameters": [_p("id", "データセット ID", {"type": "string", "pattern": "^[^/]+$"},
                              required=True, where="path")],
            "responses": {"200": {"description": "成功", "content": {RDF_TYPES[ext]: {
                "schema": _rdf_schema(RDF_TYPES[ext])}}}, "404": {
                    "description": "見つかりません", "content": {"text/plain": {"schema": STR}}},
                "410": {"description": "公開を終了しました", "content": {
                    "text/plain": {"schema": STR}}}}}}
    ok_json = {"description": "成功", "content": {"application/json": {"schema": {
        "type": "object"}}}}
    paths["/api/hazards"] = {"get": {
        "summary": "この場所の災害リスクと避難先", "tags": ["防災"], "operationId": "hazards",
        "description": "1 地点を覆う公開中の洪水・土砂災害・津波の想定区域（意味を付けた属性）と、"
                       "それらの災害に対応した近くの指定緊急避難場所・指定避難所（近い順）を返します。",
        "parameters": [
            _p("lat", "緯度（度、WGS 84）", {"type": "number", "minimum": -90, "maximum": 90},
               required=True),
            _p("lon", "経度（度、WGS 84）", {"type": "number", "minimum": -180, "maximum": 180},
               required=True)],
        "responses": {
            "200": {"description": "成功", "content": {"application/json": {"schema": {
                "type": "object", "required": ["hazards", "shelters"],
                "properties": {"hazards": {"type": "array", "items": {"type": "object"}},
                               "shelters": {"type": "array", "items": {"type": "object"}}}}}}},
            "400": {"description": "緯度・経度の誤り", "content": {"application/json": {
                "schema": {"type": "object"}}}}}}}
    paths["/openapi.json"] = {"get": {"summary": "この仕様書（OpenAPI 3）", "tags": ["仕様"],
                                      "operationId": "openapi", "responses": {"200": ok_json}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "兵庫オープンデータ連携カタログ API", "version": "1.0.0",
                 "description": "CKAN 2.10 互換の読み取り専用 API と DCAT-AP 3 のメタデータです。"
                                "地図データ（OGC API – Features）の仕様は別の文書 "
                                f"{base_url}/ogcapi/openapi にあります。",
                 "license": {"name": "各データセットのライセンスに従います"}},
        "externalDocs": {"description": "OGC API – Features の仕様（OpenAPI）",
                         "url": f"{base_url}/ogcapi/openapi?f=json"},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict:
    obj = {"type": "object"}
    resource = {"type": "object", "required": ["id", "url", "format"], "properties": {
        "id": STR, "package_id": STR, "name": STR, "url": STR, "format": STR,
        "mimetype": {"type": "string", "nullable": True},
        "size": {"type": "integer", "nullable": True},
        "last_modified": {"type": "string", "nullable": True},
        "renkei_derived": BOOL}}
    package = {"type": "object", "required": ["id", "name", "title", "resources",
                                              "metadata_modified"], "properties": {
        "id": STR, "name": STR, "title": STR, "notes": STR, "license_id": STR,
        "metadata_created": STR, "metadata_modified": STR,
        "organization": {"type": "object", "nullable": True},
        "tags": {"type": "array", "items": obj},
        "resources": {"type": "array", "items": {"$ref": "#/components/schemas/Resource"}},
        "extras": {"type": "array", "items": obj}}}
    return {
        "Resource": resource, "Package": package, "Object": obj,
        "StatusResult": {"type": "object", "required": ["site_url", "ckan_version"]},
        "SearchResult": {"type": "object", "required": ["count", "results"], "properties": {
            "count": {"type": "integer"}, "sort": STR, "facets": obj, "search_facets": obj,
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Package"}}}},
        "NameList": {"type": "array", "items": STR}, "AnyList": {"type": "array"},
        "PackageList": {"type": "array", "items": {"$ref": "#/components/schemas/Package"}},
        "Text": STR,
        "Error": {"oneOf": [STR, {"type": "object", "required": ["success", "error"]}]},
    }


@bp.route("/openapi.json")
def openapi_json():
    resp = jsonify(build_spec(_base()))
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.route("/api")
def api_docs():
    spec = build_spec(_base())
    operations = [(path, method.upper(), op) for path, item in spec["paths"].items()
                  for method, op in item.items()]
    return render_template("api_docs.html", spec=spec, operations=operations, base=_base())


def _base() -> str:
    return current_app.config.get("RENKEI_BASE_URL") or request.url_root.rstrip("/")
