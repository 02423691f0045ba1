"""What the authorization check adds to a request: `items?limit=1000` on the OGC API and a
search (page and CKAN package_search), asked anonymously (the baseline: no token, public labels)
and with a member's API token (HMAC of the token, one indexed lookup, the member's roles, the
per-label OGC API and the label mask in the search arrays), interleaved in the same run so the
shared machine's noise hits both alike. Also the rule itself, timed alone (can_read, labels,
read_filter). Prints medians and the added latency; never part of pass/fail.

Sign-in (`--sign-in`, alone and fast): POST /login with the right password and with a wrong one
(argon2 verification either way), through the failed-sign-in limits; set RENKEI_REDIS_URL to
count them in Redis. Each attempt comes from its own address and a wrong one names its own
account, so no limit is reached and only the counting is timed.

    .venv/bin/python bench/auth_bench.py [--features 5000] [--rounds 40]
    [RENKEI_REDIS_URL=redis://127.0.0.1:6379/0] .venv/bin/python bench/auth_bench.py --sign-in
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _points(path: Path, n: int) -> None:
    feats = [{"type": "Feature", "geometry": {"type": "Point",
                                              "coordinates": [134.8 + (i % 100) / 1000,
                                                              34.7 + (i // 100) / 1000]},
              "properties": {"名称": f"地点{i}", "所在地": f"加西市{i}番地"}} for i in range(n)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats},
                               ensure_ascii=False), encoding="utf-8")


def _harvest(root: Path, n: int) -> Path:
    _points(root / "points.geojson", n)
    (root / "sources.yaml").write_text(
        "sources:\n"
        "  - name: bench-public\n    type: files\n    organization: kasai-city\n    files:\n"
        "      - id: points\n        title: 加西市 ベンチ用地点（公開）\n"
        "        url: points.geojson\n        tags: [避難所]\n"
        "  - name: bench-private\n    type: files\n    organization: kasai-city\n"
        "    access_level: organization\n    files:\n"
        "      - id: points\n        title: 加西市 ベンチ用地点（組織内）\n"
        "        url: points.geojson\n        tags: [避難所]\n", encoding="utf-8")
    data = root / "data"
    subprocess.run([sys.executable, "-m", "catalog.cli", "--data-dir", str(data), "harvest",
                    "--config", str(root / "sources.yaml")], cwd=REPO, check=True,
                   capture_output=True)
    return data


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def sign_in(rounds: int) -> None:
    from catalog.app import create_app
    from store import accounts
    from store.db import Store

    data = Path(tempfile.mkdtemp(prefix="auth-bench-signin-"))
    store = Store(data)
    password = "a long enough password"
    with store.session() as s, s.begin():
        accounts.add_user(s, "bench@city.kasai.example", password)
    os.environ.setdefault("RENKEI_RATE_LIMIT_PREFIX", f"renkei-bench-{os.getpid()}")
    app = create_app(data)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    limiter = app.extensions["renkei_limiter"]
    times = {(on, ok): [] for on in (False, True) for ok in (True, False)}
    for i in range(rounds):
        for on in (False, True):        # interleaved: the machine's noise hits both alike
            limiter.enabled = on
            for ok in (True, False):
                email = "bench@city.kasai.example" if ok else f"nobody{i}.{on}@city.kasai.example"
                env = {"REMOTE_ADDR": f"10.{i // 250}.{i % 250}.{1 + on * 2 + ok}"}
                t = time.perf_counter()
                resp = client.post("/login", data={"email": email,
                                                   "password": password if ok else "wrong one",
                                                   "csrf_token": csrf}, environ_base=env)
                times[on, ok].append(time.perf_counter() - t)
                assert resp.status_code == (302 if ok else 401), resp.status_code
    limiter.enabled = True
    storage = os.environ.get("RENKEI_REDIS_URL") and "redis" or "memory"
    print(f"sign-in, {rounds} rounds, medians (argon2 verification dominates; limits counted "
          f"in {storage}):")
    for ok, what in ((True, "right password"), (False, "wrong password")):
        off, on = _median_ms(times[False, ok]), _median_ms(times[True, ok])
        print(f"  {what:15} limits off {off:8.2f} ms  on {on:8.2f} ms  added {on - off:7.2f} ms"
              f"  ratio {on / off:.3f}")
    # The limit alone, without argon2's noise around it.
    from limits import parse
    item, n = parse("10 per 15 minutes"), 2000
    t = time.perf_counter()
    for i in range(n):
        limiter.limiter.test(item, "bench", f"k{i}")
        limiter.limiter.hit(item, "bench", f"k{i}")
    per = (time.perf_counter() - t) / n * 1e6
    print(f"one limit, test + hit ({storage}): {per:.0f} µs; a sign-in checks two limits "
          f"and counts a failure in both")
    if storage == "redis":
        import redis
        r = redis.Redis.from_url(os.environ["RENKEI_REDIS_URL"])
        for k in r.scan_iter(f"*{os.environ['RENKEI_RATE_LIMIT_PREFIX']}*"):
            r.delete(k)
        for k in r.scan_iter("*LIMITER/bench/*"):
            r.delete(k)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--sign-in", action="store_true", help="time sign-in only")
    args = ap.parse_args()
    if args.sign_in:
        sign_in(args.rounds)
        return 0

    from catalog.app import create_app
    from store import access, accounts
    from store.db import Dataset, Store

    root = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    data = _harvest(root, args.features)
    store = Store(data)
    with store.session() as s, s.begin():
        # The timed comparison uses a member of an organization with no restricted data here,
        # so both callers get the same answer and only the check differs; Kasai's member
        # reads the organization-level copy at the end.
        accounts.add_user(s, "bench@city.himeji.example", "a long enough password",
                          org="himeji-city", role="member")
        token = accounts.create_token(s, accounts.token_secret(data), "bench@city.himeji.example",
                                      scope="read", days=30).token
        accounts.add_user(s, "bench@city.kasai.example", "a long enough password",
                          org="kasai-city", role="member")
        kasai_token = accounts.create_token(s, accounts.token_secret(data),
                                            "bench@city.kasai.example", scope="read",
                                            days=30).token
    app = create_app(data)
    client = app.test_client()
    public = "bench-public--points"
    private = "bench-private--points"
    with store.session() as s:
        cid_public = s.get(Dataset, public).collections[0].id
        cid_private = s.get(Dataset, private).collections[0].id
    member = {"Authorization": token}
    cases = {
        "status_show (the check alone)": "/api/3/action/status_show",
        "items?limit=1000 (public collection)": f"/ogcapi/collections/{cid_public}/items?f=json&limit=1000",
        "search page /datasets?q=避難所": "/datasets?q=%E9%81%BF%E9%9B%A3%E6%89%80",
        "package_search q=避難所": "/api/3/action/package_search?q=%E9%81%BF%E9%9B%A3%E6%89%80",
    }
    print(f"auth_bench: {args.features} features, {args.rounds} rounds, interleaved "
          f"(data in {root})")
    print("member token: a member of another organization (same answers as anonymous)")
    print(f"{'request':42} {'anonymous ms':>13} {'member token ms':>16} {'added ms':>9} {'ratio':>6}")
    for name, path in cases.items():
        for headers in ({}, member):       # warm both caches (API per label set, arrays)
            assert client.get(path, headers=headers).status_code == 200
        anon, tok = [], []
        for _ in range(args.rounds):
            for headers, out in (({}, anon), (member, tok)):
                t = time.perf_counter()
                resp = client.get(path, headers=headers)
                resp.get_data()
                out.append(time.perf_counter() - t)
        a, b = _median_ms(anon), _median_ms(tok)
        print(f"{name:42} {a:13.2f} {b:16.2f} {b - a:9.2f} {b / a:6.3f}")
    # The restricted copy, read with Kasai's token: the same work as the public one.
    kasai = {"Authorization": kasai_token}
    path = f"/ogcapi/collections/{cid_private}/items?f=json&limit=1000"
    assert client.get(path).status_code == 404 and client.get(path, headers=member).status_code == 404
    assert client.get(path, headers=kasai).status_code == 200
    samples = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        client.get(path, headers=kasai).get_data()
        samples.append(time.perf_counter() - t)
    print(f"{'items?limit=1000 (organization level, token)':42} {'-':>13} "
          f"{_median_ms(samples):16.2f}")

    # The rule alone, per call.
    p = access.Principal(user_id=2, roles={"kasai-city": "member"}, via="token", scope="read")
    with store.session() as s:
        ds = s.get(Dataset, private)
        n = 100_000
        t = time.perf_counter()
        for _ in range(n):
            access.can_read(p, ds)
        per_read = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(n):
        access.labels(p)
    per_labels = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(10_000):
        access.read_filter(p)
    per_filter = (time.perf_counter() - t) / 10_000 * 1e6
    secret = accounts.token_secret(data)
    t = time.perf_counter()
    for _ in range(500):
        accounts.resolve_token(store.engine, secret, token)
    per_token = (time.perf_counter() - t) / 500 * 1e6
    print(f"rule alone: can_read {per_read:.2f} µs, labels {per_labels:.2f} µs, "
          f"read_filter {per_filter:.1f} µs, token lookup (HMAC + one joined SELECT) "
          f"{per_token:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
