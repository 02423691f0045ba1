"""Real HTTP servers on 127.0.0.1 for tests: a CKAN-compatible catalogue fixture, and a
helper to run any WSGI app in a thread."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from contextlib import contextmanager
from pathlib import Path

import requests
from flask import Flask, abort, jsonify, request, send_file
from werkzeug.serving import WSGIRequestHandler, make_server

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"  # real public sample files; provenance in its README.md


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def renkei_serve(data_dir: Path, workers: int = 2, extra_args: tuple = ()):
    """`renkei serve` in its own process (GDAL's OAPIF client holds the GIL, so a server thread
    of the test process would hang); yields (base URL, master pid)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                             "serve", "--port", str(port), "--workers", str(workers),
                             *extra_args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            # 429 is the app answering too: a test's own tiny rate limit, shared through Redis
            # by two servers, can be spent by these probes while the second one starts.
            if requests.get(base + "/ogcapi/collections?f=json", timeout=5).status_code in (
                    200, 429):
                break
        except requests.RequestException:  # not up yet, or still importing
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"renkei serve did not start: {proc.stderr.read()}")
        time.sleep(0.3)
    try:
        yield base, proc.pid
    finally:
        # gunicorn stops its workers gracefully; on a loaded CI machine that has taken more
        # than 10 s. A server that will not stop is killed rather than left running.
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class _KeepAliveHandler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # what real catalogue servers speak: connections are reused


@contextmanager
def live_server(app, *, keep_alive: bool = False):
    """Serve a WSGI app on a free 127.0.0.1 port; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True,
                         request_handler=_KeepAliveHandler if keep_alive else None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


class FakeCKAN:
    """A CKAN Action API site: package_search with a server-side rows cap, files with ETags.

    `packages` are CKAN package dicts; resource URLs may use the placeholder `{base}` and
    files are served from `files` (name → path) at `{base}/files/<name>`.
    """

    def __init__(self, packages: list[dict], files: dict[str, Path], *, max_rows: int = 5):
        self.packages, self.files, self.max_rows = packages, files, max_rows
        self.downloads: Counter = Counter()      # name → full (200) downloads
        self.not_modified: Counter = Counter()   # name → 304 answers
        self.fail_search = False                 # answer success:false with HTTP 200
        self.empty_at_start: int | None = None   # answer an empty page at this start
        self.calls: list[tuple[str, dict]] = []  # (action, params) of every API call
        self.on_file = None                      # called with the name before a file is served
        self.base = ""
        self.app = self._make_app()

    def _make_app(self) -> Flask:
        app = Flask("fake_ckan")

        @app.route("/api/3/action/package_search", methods=["GET", "POST"])
        @app.route("/api/action/package_search", methods=["GET", "POST"])
        def package_search():
            params = request.get_json(silent=True) or request.values
            if self.fail_search:
                return jsonify({"help": "", "success": False,
                                "error": {"__type": "Search Query Error",
                                          "message": "Search Query Error: solr is down"}})
            self.calls.append(("package_search", dict(params)))
            rows = min(int(params.get("rows", 10)), self.max_rows)
            start = int(params.get("start", 0))
            matching = [p for p in self.packages if _matches(p, params.get("fq"))]
            page = [self._expand(p) for p in matching[start:start + rows]]
            if start == self.empty_at_start:
                page = []
            return jsonify({"help": "https://ckan.example/api/3/action/help_show?name=package_search",
                            "success": True,
                            "result": {"count": len(matching), "results": page,
                                       "sort": "score desc, metadata_modified desc",
                                       "facets": {}, "search_facets": {}}})

        @app.route("/api/3/action/package_list", methods=["GET", "POST"])
        @app.route("/api/action/package_list", methods=["GET", "POST"])
        def package_list():
            params = request.get_json(silent=True) or request.values
            self.calls.append(("package_list", dict(params)))
            offset, limit = int(params.get("offset", 0)), params.get("limit")
            names = [p["name"] for p in self.packages][offset:]
            return jsonify({"success": True,
                            "result": names[:int(limit)] if limit is not None else names})

        @app.route("/api/3/action/package_show", methods=["GET", "POST"])
        @app.route("/api/action/package_show", methods=["GET", "POST"])
        def package_show():
            params = request.get_json(silent=True) or request.values
            self.calls.append(("package_show", dict(params)))
            for p in self.packages:
                if params.get("id") in (p["id"], p["name"]):
                    return jsonify({"success": True, "result": self._expand(p)})
            return jsonify({"success": False, "error": {"__type": "Not Found Error",
                                                        "message": "Not found"}}), 404

        @app.route("/files/<name>")
        def files(name):
            if name not in self.files:
                abort(404)
            if self.on_file is not None:
                self.on_file(name)
            resp = send_file(self.files[name], conditional=True, etag=True)
            if resp.status_code == 304:
                self.not_modified[name] += 1
            else:
                self.downloads[name] += 1
            return resp

        return app

    def _expand(self, pkg: dict) -> dict:
        out = dict(pkg)
        out["resources"] = [dict(r, url=r["url"].replace("{base}", self.base))
                            for r in pkg.get("resources", [])]
        return out

    @contextmanager
    def running(self, *, keep_alive: bool = False):
        with live_server(self.app, keep_alive=keep_alive) as url:
            self.base = url
            yield url


def _matches(pkg: dict, fq: str | None) -> bool:
    """Solr's `metadata_modified:[T TO *]`, the only filter query the harvester sends."""
    m = re.search(r"metadata_modified:\[(\S+) TO \*\]", fq or "")
    if not m:
        return True
    since = datetime.fromisoformat(m.group(1).replace("Z", ""))
    return datetime.fromisoformat(pkg["metadata_modified"]) >= since


def package(pid: str, title: str, resources: list[tuple[str, str]], *, org=("kakogawa-city", "加古川市"),
            notes: str = "", tags=(), license_id="cc-by-4.0") -> dict:
    """A CKAN package dict as package_search returns it; resources are (file name, format)."""
    return {
        "id": f"uuid-{pid}", "name": pid, "title": title, "notes": notes,
        "license_id": license_id, "license_title": "クリエイティブ・コモンズ 表示 4.0",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "metadata_created": "2024-04-01T00:00:00.000000",
        "metadata_modified": "2025-06-01T09:30:00.000000",
        "organization": {"name": org[0], "title": org[1]},
        "tags": [{"name": t, "display_name": t} for t in tags],
        "url": f"https://www.city.example.lg.jp/{pid}.html",
        "resources": [{"id": f"res-{pid}-{i}", "name": name, "format": fmt,
                       "url": "{base}/files/" + name, "last_modified": "2025-06-01T09:30:00"}
                      for i, (name, fmt) in enumerate(resources)],
    }
