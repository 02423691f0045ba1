"""`renkei mail …`, `renkei terms …`, `renkei db sweep` and `renkei db size`: the operator's view
of what lives in the catalogue database rather than on a web server's disk (the outbox, the
terms versions, the feature tables of PostgreSQL mode and the memory they ask for). None of
them needs a data dir in PostgreSQL mode, so they run from any machine (or cron) with
RENKEI_DATABASE_URL."""
from __future__ import annotations

import sys
from pathlib import Path


def _store(args):
    from store.db import Store
    return Store(args.data_dir, make_dir=False)


def cmd_mail_outbox(args) -> int:
    from store import outbox
    store = _store(args)
    with store.session() as s:
        rows = outbox.listing(s, args.status, args.limit)
    print(f"{'id':>6} {'status':7} {'queued (UTC)':16} {'tries':>5}  to / subject / outcome")
    for r in rows:
        print(f"{r.id:>6} {r.status:7} {r.created_at:%Y-%m-%d %H:%M} {r.attempts:>5}  "
              f"{r.recipient}  {r.subject}")
        if r.status == "sent":
            print(f"{'':38}delivered {r.sent_at:%Y-%m-%d %H:%M} by {r.delivery}")
        elif r.last_error:
            print(f"{'':38}error: {r.last_error}")
    return 0


def cmd_mail_show(args) -> int:
    import email
    from email import policy
    from store.outbox import MailMessage
    store = _store(args)
    with store.session() as s:
        row = s.get(MailMessage, args.message_id)
    if row is None:
        print(f"renkei: no mail {args.message_id} in the outbox", file=sys.stderr)
        return 2
    if row.message is None:
        print(f"renkei: mail {args.message_id} was delivered ({row.delivery}); its body is not "
              "kept", file=sys.stderr)
        return 1
    if args.raw:   # RFC 5322, for a mail client or `sendmail -t`
        sys.stdout.buffer.write(bytes(row.message))
        return 0
    msg = email.message_from_bytes(bytes(row.message), policy=policy.default)
    for header in ("From", "To", "Subject", "Date"):
        print(f"{header}: {msg[header]}")
    print()
    print(msg.get_body(("plain",)).get_content().rstrip())
    return 0


def cmd_mail_send(args) -> int:
    from catalog import mail
    from store import outbox
    store = _store(args)
    if mail.transport(store) is None:
        print("renkei: RENKEI_SMTP_URL is not set: the outbox stays in the database "
              "(`renkei mail outbox`, `renkei mail show ID`)", file=sys.stderr)
        return 2
    with store.session() as s:
        ids = outbox.undelivered(s, retry_failed=True, limit=args.limit)
    outcomes = mail.deliver(store, ids, retry_failed=True)
    for o in outcomes:
        if o.status != "skipped":
            print(f"mail {o.id}: {o.status}" + (f": {o.error}" if o.error else ""))
    print(mail.summary(outcomes), file=sys.stderr)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_mail_purge(args) -> int:
    from datetime import timedelta

    from store import outbox
    if args.older_than < 0:
        print("renkei: --older-than is a number of days, 0 or more", file=sys.stderr)
        return 2
    store = _store(args)
    purged = outbox.purge_sent(store.engine, timedelta(days=args.older_than))
    print(f"delivered messages purged (sent more than {args.older_than} days ago): {purged}")
    return 0


def cmd_terms_list(args) -> int:
    from store import terms
    store = _store(args)
    try:
        versions = terms.load_all(store)
    except terms.TermsError as exc:
        print(f"renkei: {exc}", file=sys.stderr)
        return 2
    now = terms.in_force(versions)
    for t in versions:
        mark = "*" if t.version == now.version else " "
        print(f"{mark} {t.version:20} effective {t.effective}  {t.file}  {t.title.get('ja', '')}")
    return 0


def cmd_terms_add(args) -> int:
    from store import terms
    store = _store(args)
    for path in args.files:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"renkei: {path.name}: cannot read it ({exc.__class__.__name__})",
                  file=sys.stderr)
            return 2
        try:
            added = terms.add(store, text, path.name)
        except terms.TermsError as exc:
            print(f"renkei: {exc}", file=sys.stderr)
            return 2
        print(f"terms {added.version} published, effective {added.effective}")
    return 0


def cmd_db_sweep(args) -> int:
    from store import features_pg
    store = _store(args)
    if not store.postgresql:
        print("nothing to sweep: the embedded mode removes superseded GeoPackages at the switch")
        return 0
    dropped = features_pg.drop_superseded(store.engine, args.grace)
    print(f"superseded feature tables dropped: {dropped}")
    return 0


# Collections listed by `db size`, largest first.
SIZE_LISTED = 5


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _versions(n: int) -> str:
    return f"{n} version" + ("" if n == 1 else "s")


def cmd_db_size(args) -> int:
    """What the served feature versions weigh, beside the memory that keeps them fast: in
    PostgreSQL mode the version tables with their grids, tile pyramids and indexes against
    shared_buffers (README, PostgreSQL mode: Memory); in the embedded mode the GeoPackages,
    which the OS page cache holds."""
    from store import features_pg
    store = _store(args)
    served = {c.path: c for c in store.active_collections()}
    if not store.postgresql:
        sizes = []
        for path, c in served.items():
            try:
                sizes.append((Path(store.data_dir, path).stat().st_size, c))
            except OSError:
                continue   # a file gone is the harvest's to report, not a size
        sizes.sort(key=lambda r: (-r[0], r[1].id))
        print(f"served: {len(sizes)} collections, {_mib(sum(n for n, _ in sizes))} of "
              "GeoPackages in the data dir (read through the OS page cache)")
        for n, c in sizes[:SIZE_LISTED]:
            print(f"  {_mib(n):>14}  {c.id}  {c.title}")
        return 0
    versions, buffers = features_pg.footprint(store.engine)
    by_table = {features_pg.table_of(p): c for p, c in served.items()
                if features_pg.is_postgis(p)}
    live = [(n, by_table[t]) for t, n, _ in versions if t in by_table]
    kept = [n for t, n, marked in versions if t not in by_table and not marked]
    superseded = [n for t, n, marked in versions if t not in by_table and marked]
    total = sum(n for n, _ in live)
    print(f"served: {len(live)} collections, {_mib(total)} (version tables with their grids, "
          "tile pyramids and indexes)")
    for n, c in live[:SIZE_LISTED]:
        print(f"  {_mib(n):>14}  {c.id}  {c.title}")
    print(f"not served (no collection names it): {_versions(len(kept))}, {_mib(sum(kept))}")
    print("superseded, dropped by a sweep after the grace period: "
          f"{_versions(len(superseded))}, {_mib(sum(superseded))}")
    verdict = "holds what is served" if buffers >= total else (
        "less than what is served: a bbox page reads the rest from the OS page cache or the "
        "disk (README, PostgreSQL mode: Memory)")
    print(f"PostgreSQL shared_buffers: {_mib(buffers)}, {verdict}")
    return 0
