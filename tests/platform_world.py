"""A small platform for the 申請窓口 / metering / fee tests: two datasets harvested from real GSI
files by the `files` harvester — Yabu's shelters at `members` level, Kakogawa's evacuation
sites public — an operator (sysadmin), and helpers to drive the forms with CSRF tokens."""
from __future__ import annotations

import contextlib
import email
import io
import html
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from email import policy
from pathlib import Path

import requests

from tests import pg_mode
from tests.accounts import PASSWORD, add_user
from tests.servers import REPO

EXAMPLES = REPO / "catalog" / "examples"
SHARED = "yabu-shared--emergency-282227"
OPEN = "kakogawa-open--evacuation-282103"
OPERATOR = "ops@pref.hyogo.example"
CONFIG = """
sources:
  - name: yabu-shared
    type: files
    organization: yabu-city
    access_level: members
    files:
      - id: emergency-282227
        title: 養父市 会員共有テスト避難場所
        url: gsi_emergency_282227.json
        license: gsi
  - name: kakogawa-open
    type: files
    organization: kakogawa-city
    files:
      - id: evacuation-282103
        title: 加古川市 公開テスト避難所
        url: gsi_evacuation_282103.json
        license: gsi
"""


_template: list[Path] = []   # the first harvest of the session, copied by later builds


def build(root: Path) -> Path:
    """root/data with the two datasets and the operator; returns the data dir. The harvest runs
    once per test session; later calls copy its data dir (each test gets its own)."""
    data_dir = root / "data"
    if _template and _template[0].exists():
        shutil.copytree(_template[0], data_dir)
        return data_dir
    _harvest(root)
    # In the PostgreSQL mode the catalogue is the data dir's schema, which a copy of the folder
    # does not carry: every world is harvested there.
    if not pg_mode.active():
        _template.append(root / "template")
        shutil.copytree(data_dir, _template[0])
    return data_dir


def _harvest(root: Path) -> None:
    from store.db import Store
    for name in ("gsi_emergency_282227.json", "gsi_evacuation_282103.json"):
        shutil.copy(EXAMPLES / name, root / name)
    (root / "sources.yaml").write_text(CONFIG, encoding="utf-8")
    data_dir = root / "data"
    proc = run_cli(data_dir, "harvest", "--config", str(root / "sources.yaml"))
    assert proc.returncode == 0, proc.stderr
    store = Store(data_dir)
    add_user(store, OPERATOR, sysadmin=True)
    store.engine.dispose()   # last connection closed: the WAL is checkpointed before a copy


def run_cli(data_dir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data_dir),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(data_dir: Path, *args: str) -> CliResult:
    """`renkei --data-dir D args…` through its real entry point, in this process (a subprocess
    would spend seconds importing the stack again on a busy machine)."""
    from catalog.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--data-dir", str(data_dir), *args])
        except SystemExit as exc:   # argparse refusing the arguments
            code = exc.code
    return CliResult(code, out.getvalue(), err.getvalue())


def csrf(session: requests.Session, url: str) -> str:
    page = session.get(url, timeout=30)
    assert page.status_code == 200, (url, page.status_code)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)


def sign_in(base: str, email_: str, password: str = PASSWORD) -> requests.Session:
    s = requests.Session()
    r = s.post(base + "/login", data={"csrf_token": csrf(s, base + "/login"), "email": email_,
                                      "password": password}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return s


def outbox(data_dir: Path) -> list[email.message.EmailMessage]:
    """The mail sent so far, oldest first: `.eml` files in the embedded mode, the database's
    outbox in PostgreSQL mode (there is no SMTP server in these tests)."""
    from sqlalchemy import select
    from store.db import Store
    from store.outbox import MailMessage
    store = Store(data_dir)
    try:
        if store.postgresql:
            with store.session() as s:
                raw = list(s.scalars(select(MailMessage.message).where(
                    MailMessage.message.is_not(None)).order_by(MailMessage.id)))
        else:
            folder = data_dir / "outbox"
            raw = [f.read_bytes() for f in sorted(folder.glob("*.eml"))] \
                if folder.exists() else []
    finally:
        store.engine.dispose()
    return [email.message_from_bytes(bytes(m), policy=policy.default) for m in raw]


def mail_to(data_dir: Path, to: str) -> list[email.message.EmailMessage]:
    return [m for m in outbox(data_dir) if m["To"] == to]


def link_in(msg, kind: str) -> str:
    """The path of the first /join/<kind>/ link in a mail body."""
    body = msg.get_body(("plain",)).get_content()
    return re.search(rf"https?://[^/\s]+(/join/{kind}/[A-Za-z0-9_-]+)", body).group(1)


def unescape(text: str) -> str:
    return html.unescape(text)
