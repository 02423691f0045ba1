"""`renkei` command line: harvest, serve, jobs, demo, user, org, token, applications, usage,
db, mail, terms (the contract in DESIGN.md). In PostgreSQL mode only `harvest` (its download
cache), `demo` and `token create` (its key, without RENKEI_TOKEN_SECRET) make a data dir: the
other commands run from any machine with RENKEI_DATABASE_URL (`Store(make_dir=False)`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent / "examples"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="renkei", description="兵庫県オープンデータ連携基盤 renkei")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("RENKEI_DATA", "renkei-data")),
                        help="data directory (default: $RENKEI_DATA or ./renkei-data)")
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("harvest", help="harvest the sources of a sources.yaml")
    h.add_argument("--config", type=Path, default=Path("sources.yaml"))
    h.add_argument("--source", action="append", default=[], help="only this source (repeatable)")
    h.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    s = sub.add_parser("serve", help="serve the catalogue and the OGC API")
    _serve_args(s)
    j = sub.add_parser("jobs", help="past harvest jobs and their errors")
    j.add_argument("--source")
    j.add_argument("--limit", type=int, default=20)
    j.add_argument("--tracebacks", action="store_true",
                   help="also print each error's traceback (kept in the job record)")
    d = sub.add_parser("demo", help="harvest the bundled examples offline, then serve")
    _serve_args(d)
    u = sub.add_parser("user", help="accounts of members").add_subparsers(dest="action",
                                                                           required=True)
    ua = u.add_parser("add", help="add a user (or update one): password from standard input "
                                  "when it is not a terminal, else generated and printed once")
    ua.add_argument("email")
    ua.add_argument("--org", help="organization slug to make the user a member of")
    ua.add_argument("--role", choices=("admin", "editor", "member"))
    ua.add_argument("--sysadmin", action="store_true")
    ua.add_argument("--oidc", action="store_true",
                    help="the account signs in through the identity provider of "
                         "RENKEI_OIDC_ISSUER (its first sign-in with this e-mail, verified, "
                         "claims it); no password is read or generated")
    ua.add_argument("--oidc-subject", metavar="SUB",
                    help="with --oidc: bind the account to this subject of the provider now "
                         "(for providers that do not send email_verified)")
    o = sub.add_parser("org", help="organizations").add_subparsers(dest="action", required=True)
    oa = o.add_parser("add", help="add an organization (or update one)")
    oa.add_argument("slug")
    oa.add_argument("name_ja")
    oa.add_argument("--name-en")
    oa.add_argument("--code", help="全国地方公共団体コード (6 digits)")
    oa.add_argument("--kind", choices=("prefecture", "municipality", "partner", "company"),
                    default="municipality")
    oa.add_argument("--upload-limit-mb", type=int, help="largest uploaded file, in MB")
    t = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    tc = t.add_parser("create", help="create an API token; it is printed once")
    tc.add_argument("email")
    tc.add_argument("--name", default="")
    tc.add_argument("--scope", choices=("read", "write"), default="read")
    tc.add_argument("--expires", type=int, default=180, metavar="DAYS",
                    help="days until it expires (default 180, at most 365)")
    tl = t.add_parser("list", help="a user's tokens (prefix, scope, expiry, last use)")
    tl.add_argument("email")
    tr = t.add_parser("revoke", help="revoke a token by its id (see token list)")
    tr.add_argument("token_id", type=int)
    ap = sub.add_parser("applications", help="applications to join, for membership, for API "
                                             "keys, and proposed harvest sources (申請窓口)"
                        ).add_subparsers(dest="action", required=True)
    al = ap.add_parser("list", help="applications, newest first")
    al.add_argument("--status", choices=("pending", "accepted", "refused", "canceled",
                                         "retired"))
    verbs = {"approve": "approve a pending application (mails the applicant)",
             "refuse": "refuse a pending application (mails the applicant)",
             "retire": "stop harvesting an accepted source (removes its sources.d file in the "
                       "embedded mode; mails the organization that proposed it). What it "
                       "published stays published until withdrawn from the dataset's page"}
    for verb, text in verbs.items():
        a = ap.add_parser(verb, help=text, description=text)
        a.add_argument("app_id", type=int, metavar="ID")
        a.add_argument("--base-url", default=os.environ.get("RENKEI_BASE_URL",
                                                            "http://127.0.0.1:8000"),
                       help="the site's address, for links in mails ($RENKEI_BASE_URL)")
        if verb == "refuse":
            a.add_argument("--reason", required=True, help="why (sent to the applicant)")
        elif verb == "approve":
            a.add_argument("--allow-private-networks", action="store_true",
                           help="a source on an intranet: let its harvest reach loopback and "
                                "private addresses (allow_private_networks of sources.yaml)")
        elif verb == "retire":
            a.add_argument("--reason", help="why (recorded, and sent to the organization)")
    us = sub.add_parser("usage", help="usage of the open APIs and fees (利用料)").add_subparsers(
        dest="action", required=True)
    ur = us.add_parser("report", help="one row per organization: every input and the fee")
    ur.add_argument("--month", required=True, help="YYYY-MM")
    ur.add_argument("--format", choices=("csv", "json"), default="csv")
    ur.add_argument("--by", choices=("organization", "dataset"), default="organization",
                    help="dataset: one row per dataset and consumer instead")
    db = sub.add_parser("db", help="the catalogue database").add_subparsers(dest="action",
                                                                         required=True)
    db.add_parser("upgrade", help="migrate the database schema to this version of renkei "
                                  "(SQLite or RENKEI_DATABASE_URL); every command also does it")
    sw = db.add_parser("sweep", help="drop the superseded feature tables of PostgreSQL mode "
                                     "whose grace period is over (every harvest run also does "
                                     "it); for cron")
    sw.add_argument("--grace", type=float, metavar="SECONDS",
                    help="how long a superseded version stays for readers that chose it "
                         "(default $RENKEI_DROP_GRACE, else 300)")
    db.add_parser("size", help="what the served feature versions weigh, beside PostgreSQL's "
                               "shared_buffers (or the GeoPackages in the embedded mode)")
    ml = sub.add_parser("mail", help="the outbox of mail the platform sends").add_subparsers(
        dest="action", required=True)
    mo = ml.add_parser("outbox", help="messages, newest first: queued, sent, failed (and why)")
    mo.add_argument("--status", choices=("queued", "sending", "sent", "failed"))
    mo.add_argument("--limit", type=int, default=50)
    msh = ml.add_parser("show", help="one message not yet delivered (--raw: as RFC 5322)")
    msh.add_argument("message_id", type=int, metavar="ID")
    msh.add_argument("--raw", action="store_true")
    ms = ml.add_parser("send", help="deliver the queued and failed messages through "
                                    "RENKEI_SMTP_URL; exit 1 if any fails (it stays queued)")
    ms.add_argument("--limit", type=int, help="at most this many, oldest first")
    purge = ("delete the outbox rows of messages delivered more than DAYS ago (never a queued "
             "or failed one) and print how many; the embedded mode's outbox/*.eml files are "
             "delivered mail and stay")
    mp = ml.add_parser("purge", help=purge, description=purge)
    mp.add_argument("--older-than", type=int, default=90, metavar="DAYS",
                    help="days since delivery (default 90)")
    te = sub.add_parser("terms", help="versions of the terms of use (要綱)").add_subparsers(
        dest="action", required=True)
    te.add_parser("list", help="every version, oldest first; * marks the one in force")
    ta = te.add_parser("add", help="publish new versions from YAML files (checked first; a "
                                   "published version is never replaced)")
    ta.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)
    from store.migrate import SchemaError
    try:
        return _dispatch(args)
    except SchemaError as exc:
        print(f"renkei: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    if args.command in ("mail", "terms") or (args.command, getattr(args, "action", None)) in (
            ("db", "sweep"), ("db", "size")):
        from catalog import cli_operator
        return getattr(cli_operator, f"cmd_{args.command}_{args.action}")(args)
    if args.command == "db":
        return cmd_db_upgrade(args)
    if args.command == "applications":
        return {"list": cmd_applications_list, "approve": cmd_applications_decide,
                "refuse": cmd_applications_decide,
                "retire": cmd_applications_decide}[args.action](args)
    if args.command == "usage":
        return cmd_usage_report(args)
    if args.command in ("user", "org", "token"):
        from catalog import cli_accounts
        return getattr(cli_accounts, f"cmd_{args.command}_{args.action}")(args)
    return {"harvest": cmd_harvest, "serve": cmd_serve, "jobs": cmd_jobs,
            "demo": cmd_demo}[args.command](args)


def cmd_db_upgrade(args) -> int:
    import store.db
    from store import migrate
    url = store.db.database_url(args.data_dir)
    if not store.db.is_postgresql(url):
        args.data_dir.mkdir(parents=True, exist_ok=True)
    engine = store.db.make_engine(url)
    try:
        before, after = migrate.upgrade(engine, args.data_dir)
    finally:
        engine.dispose()
    # What start-up does beside (search tokens).
    store.db.Store(args.data_dir, make_dir=False).engine.dispose()
    if before == after:
        print(f"database schema: already at {after}")
    else:
        print(f"database schema: {before or 'none (new, or made before migrations)'} -> {after}")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8,
                   help="threads per worker: each serves one client, slow or not (default 8)")
    p.add_argument("--timeout", type=int, default=120,
                   help="seconds a worker may stay silent before it is restarted (default 120);"
                        " a long download does not count")


def _settings(**overrides):
    """The harvest settings (RENKEI_MAX_DOWNLOAD, RENKEI_STREAM_BYTES, …), read once as the
    command starts; None, said why, if a value is bad."""
    from harvesters.context import HarvestSettings, SettingsError
    try:
        return HarvestSettings.from_environ(**overrides)
    except SettingsError as exc:
        print(f"renkei: {exc}", file=sys.stderr)
        return None


def cmd_harvest(args) -> int:
    from harvesters.config import ConfigError, load_config, load_validated, merge
    settings = _settings(timeout=args.timeout)
    if settings is None:
        return 2
    from store.db import Store
    try:
        config = load_config(args.config)   # a bad config touches nothing, not even the store
        store = Store(args.data_dir)
        sources, orgs = merge(config, load_validated(store))
    except ConfigError as exc:
        print(f"renkei: {exc}", file=sys.stderr)
        return 2
    if args.source:
        unknown = set(args.source) - {s.name for s in sources}
        if unknown:
            print(f"renkei: no such source in {args.config}: {', '.join(sorted(unknown))}",
                  file=sys.stderr)
            return 2
        sources = [s for s in sources if s.name in args.source]
    return _harvest(store, sources, orgs, settings)


def _harvest(store, sources, orgs, settings) -> int:
    """Errors are in the job record (with tracebacks, for staff) and in the summary (without):
    nothing of a failed job reaches the terminal as a traceback."""
    from catalog.public_text import redact_text
    from harvesters.runner import exit_code, run_harvest, summary
    reports = run_harvest(store, sources, orgs, settings=settings)
    print(summary(reports, redact=redact_text), file=sys.stderr)
    return exit_code(reports)


def cmd_serve(args) -> int:
    from catalog.server import serve
    return serve(args.data_dir, host=args.host, port=args.port, workers=args.workers,
                 threads=args.threads, timeout=args.timeout)


def cmd_jobs(args) -> int:
    from sqlalchemy import select

    from catalog.public_text import redact_text
    from store.db import HarvestJob, Store
    store = Store(args.data_dir, make_dir=False)
    with store.session() as s:
        stmt = select(HarvestJob).order_by(HarvestJob.id.desc()).limit(args.limit)
        if args.source:
            stmt = stmt.where(HarvestJob.source_name == args.source)
        jobs = list(s.scalars(stmt))
        print(f"{'job':>5} {'source':20} {'status':7} {'started (UTC)':20} {'added':>6} "
              f"{'updated':>8} {'unchanged':>10} {'withdrawn':>10} {'failed':>7} {'errors':>7}")
        for job in jobs:
            print(f"{job.id:>5} {job.source_name:20} {job.status:7} "
                  f"{job.started_at:%Y-%m-%d %H:%M:%S}  {job.added:>6} {job.updated:>8} "
                  f"{job.unchanged:>10} {job.withdrawn:>10} {job.failed:>7} {len(job.errors):>7}")
            # Source URLs redacted as on the pages: the output lands in mails and logs.
            for warning in (job.message or "").splitlines():
                print(f"      warning: {redact_text(warning)}")
            for err in job.errors:
                where = " / ".join(redact_text(x) for x in (err.dataset, err.resource) if x)
                row = f" row {err.row}" if err.row is not None else ""
                print(f"      [{err.stage}] {where}{row}: {redact_text(err.message)}")
                if args.tracebacks and err.traceback:
                    print("        " + err.traceback.rstrip().replace("\n", "\n        "))
    return 0


def cmd_demo(args) -> int:
    from harvesters.config import load_config
    settings = _settings()
    if settings is None:
        return 2
    sources, orgs = load_config(EXAMPLES / "sources.yaml")
    from store.db import Store
    code = _harvest(Store(args.data_dir), sources, orgs, settings)
    if code == 2:
        return code
    # The demo is the offline quick start: no GSI base map unless asked for explicitly.
    os.environ.setdefault("RENKEI_BASEMAP", "none")
    return cmd_serve(args)


def cmd_applications_list(args) -> int:
    from store import applications as apps
    from store.access import Principal
    from store.db import Store
    store = Store(args.data_dir, make_dir=False)
    operator = Principal(via="cli", is_sysadmin=True)
    with store.session() as s:
        rows = apps.listing(s, operator, args.status)
        print(f"{'id':>5} {'kind':12} {'status':9} {'received (UTC)':17} {'terms':8} "
              f"{'organization':20} email / details")
        for a in rows:
            detail = "; ".join(f"{k}={v}" for k, v in (a.payload or {}).items() if v is not None)
            print(f"{a.id:>5} {a.kind:12} {a.status:9} {a.created_at:%Y-%m-%d %H:%M} "
                  f"{a.terms_version or '-':8} {a.organization_id or '-':20} {a.email}"
                  + (f" ({detail})" if detail else "")
                  + (f" reason: {a.reason}" if a.reason else ""))
    return 0


def cmd_applications_decide(args) -> int:
    from catalog import mail
    from store import accounts
    from store import applications as apps
    from store.access import Principal
    from store.db import Store
    store = Store(args.data_dir, make_dir=False)
    operator = Principal(via="cli", is_sysadmin=True, email="cli")
    base = args.base_url.rstrip("/")
    try:
        with store.session() as s, s.begin():
            if args.action == "approve":
                notices = apps.accept(s, args.app_id, by="cli", base_url=base,
                                      data_dir=store.data_dir,
                                      allow_private_networks=args.allow_private_networks)
            elif args.action == "retire":
                notices = apps.retire(s, args.app_id, by="cli", reason=args.reason,
                                      base_url=base, data_dir=store.data_dir)
            else:
                notices = apps.refuse(s, args.app_id, by="cli", reason=args.reason,
                                      base_url=base)
            app = s.get(apps.Application, args.app_id)
            accounts.audit(s, operator, f"application_{args.action}", "application",
                           str(args.app_id), organization_id=app.organization_id)
            mail_ids = mail.queue_notices(s, notices)
    except apps.ApplicationError as exc:
        print(f"renkei: {exc}", file=sys.stderr)
        return 2
    outcomes = mail.deliver(store, mail_ids)
    verb = {"approve": "approved", "refuse": "refused",
            "retire": "retired (its datasets stay published until withdrawn)"}[args.action]
    print(f"application {args.app_id} {verb}; {mail.summary(outcomes)}", file=sys.stderr)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_usage_report(args) -> int:
    import json
    import re
    from store import applications  # noqa: F401 (its tables, before the Store)
    from store import fees, terms
    from store.db import Store
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", args.month):
        print("renkei: --month is YYYY-MM", file=sys.stderr)
        return 2
    store = Store(args.data_dir, make_dir=False)
    version = terms.for_month(store, args.month)
    with store.session() as s, s.begin():
        if args.by == "dataset":
            rows = fees.dataset_rows(s, args.month)
        else:
            rows = [r.as_dict() for r in fees.report(s, args.month, version.fees,
                                                     version.version)]
    if args.format == "json":
        print(json.dumps({"month": args.month, "terms_version": version.version,
                          "fee_rule": version.fees.as_dict(), "rows": rows},
                         ensure_ascii=False, indent=1))
    else:
        sys.stdout.write(fees.to_csv(rows, None if rows else fees.FIELDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
