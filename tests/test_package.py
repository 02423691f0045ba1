"""The real package: built from the tree, installed into a new virtualenv, run outside the tree.

A wheel is built offline (`pip wheel --no-build-isolation`, with this venv's setuptools, wheel
and Babel: pyproject's build requirements) from a copy of the tree that has no compiled .mo, so
the build itself must compile them. It is installed with --no-deps into a new virtualenv whose
dependencies are this venv's site-packages, reached through a .pth file (nothing copied, no
index). `renkei demo` then runs there from a temporary directory, with the source tree on no
path, and must serve the catalogue, its CSS, English and the OGC API from the installed files.
The editable install (`pip install -e .`, the README's quick start) is checked the same way:
it too must leave compiled catalogues, beside their .po, without any compile at run time.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import requests
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

REPO = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.parent.name for p in REPO.glob("*/__init__.py")
                  if p.parent.name not in {"tests", "bench"})
PROJECT_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}
           and not k.startswith("PIP_")}
    # No index, no self-check against one: everything comes from this machine.
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _pip(*args, cwd: Path) -> None:
    """This venv's pip (its setuptools, wheel and Babel build; `--python` installs elsewhere)."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, env=_env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                          check=False)
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout[-4000:]}"


def _copy_tree(dest: Path) -> Path:
    """What a clone has that a build needs: project files and packages; no .mo, no caches."""
    dest.mkdir()
    for name in PROJECT_FILES:
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=IGNORE)
    return dest


def _source_files() -> list[str]:
    """Every file a package holds in the tree, as a path inside a wheel (.po → also .mo)."""
    files = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*")):
            rel = path.relative_to(REPO)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".mo":
                files.append(rel.as_posix())
                if path.suffix == ".po":
                    files.append(rel.with_suffix(".mo").as_posix())
    return files


def _catalogues(root: Path) -> list[Path]:
    return sorted(po for package in PACKAGES for po in (root / package).rglob("LC_MESSAGES/*.po"))


def _installed(site: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for package in PACKAGES for p in (site / package).rglob("*")}


def _new_venv(path: Path) -> Path:
    """A virtualenv without pip whose imports fall back on this venv's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True,
                   env=_env(), timeout=120)
    python = path / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    own = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True,
                         env=_env()).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    assert REPO not in {Path(p) for p in ours}
    # A plain path line: this venv's own .pth files (its editable install of the tree) stay out.
    Path(own, "zz_renkei_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    return python


def _where(python: Path, cwd: Path) -> dict:
    code = ("import json, sys, importlib; mods = " + repr(PACKAGES) + "; "
            "print(json.dumps({'path': sys.path, **{m: importlib.import_module(m).__file__ "
            "for m in mods}}))")
    out = subprocess.run([str(python), "-c", code], cwd=cwd, env=_env(), check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End the demo: its gunicorn master and workers (its own session), SIGKILL if need be."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(30)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait(30)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = _copy_tree(root / "src")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src),
         cwd=root)
    (built,) = (root / "dist").glob("renkei-*.whl")
    assert not [mo for package in PACKAGES for mo in (src / package).rglob("*.mo")], \
        "the wheel build wrote into the source packages"
    return built


def test_wheel_holds_every_module_and_data_file_and_the_compiled_catalogues(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [f for f in _source_files() if f not in names]
        assert not missing, f"not in the wheel (packages.find / package_data): {missing}"
        assert not [n for n in names if n.startswith(("tests/", "bench/")) or ".pyc" in n]
        for po in _catalogues(REPO):
            rel = po.relative_to(REPO).with_suffix(".mo").as_posix()
            with open(po, "rb") as fh, zf.open(rel) as mo:
                want = {m.id: m.string for m in read_po(fh) if m.id}
                have = {m.id: m.string for m in read_mo(io.BytesIO(mo.read())) if m.id}
            assert want == have, rel
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt")))
        assert b"renkei = catalog.cli:main" in entry_points


def test_installed_wheel_serves_the_demo_outside_the_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    python = _new_venv(venv)
    _pip("--python", str(python), "install", "--no-deps", str(wheel), cwd=tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    where = _where(python, work)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    for package in PACKAGES:  # the installed copy, not the tree
        assert Path(where[package]).is_relative_to(site), (package, where[package])
    assert str(REPO) not in where["path"] and "" in where["path"]  # '' is the cwd: work
    installed = _installed(site)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "demo.log", "wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "renkei"), "--data-dir",
                                 str(tmp_path / "data"), "demo", "--port", str(port),
                                 "--workers", "1"],
                                cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text(errors="replace")
            try:
                home = requests.get(base + "/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "renkei demo did not start serving"
                time.sleep(0.5)
        assert home.status_code == 200
        assert "兵庫県と市町のオープンデータを探す" in home.text and "renkei.css" in home.text
        english = requests.get(base + "/", params={"lang": "en"}, timeout=30)
        assert english.status_code == 200 and "Recently updated datasets" in english.text

        css = requests.get(base + "/static/renkei.css", timeout=30)
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.content == (REPO / "catalog" / "static" / "renkei.css").read_bytes()

        landing = requests.get(base + "/ogcapi/", timeout=30)
        assert landing.status_code == 200
        assert any(link["rel"] == "data" for link in landing.json()["links"])
        collections = requests.get(base + "/ogcapi/collections", timeout=30).json()
        assert collections["collections"], "the demo published no collection"
        page = requests.get(base + "/ogcapi/collections", params={"f": "html"}, timeout=30)
        assert page.status_code == 200 and "コレクション" in page.text  # ogcapi's locale/ja
    finally:
        _stop(proc)
    assert _installed(site) == installed  # nothing compiled or written there at run time


def test_editable_install_compiles_the_catalogues_beside_their_po(tmp_path):
    src = _copy_tree(tmp_path / "src")
    python = _new_venv(tmp_path / "venv")
    _pip("--python", str(python), "install", "--no-deps", "--no-build-isolation", "-e", str(src),
         cwd=tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    where = _where(python, work)
    for package in PACKAGES:
        assert Path(where[package]).is_relative_to(src), (package, where[package])
    pos = _catalogues(src)
    assert len(pos) >= 2  # catalog's pages and ogcapi's templates
    for po in pos:
        with open(po, "rb") as fh, open(po.with_suffix(".mo"), "rb") as mo:
            assert {m.id: m.string for m in read_po(fh) if m.id} == \
                   {m.id: m.string for m in read_mo(mo) if m.id}, po
