"""利用料: one month's fee of every organization, from the month's roll-ups and the fee rule of
the terms version in force on the month's first day (store.terms).

  fee = 均等割   fixed_per_member                       (organizations of fixed_kinds)
      + 人口割   pool × pop^k / Σ pop^k                  (organizations with a population)
      + 利用量割 per_1000_requests × requests_made / 1000
                + per_gib_transferred × bytes_made / 2^30
                + per_gib_stored × storage_bytes / 2^30
                + per_dataset × datasets

Requests and bytes are counted on the consumer's side (made with the organization's keys or by
its signed-in members); datasets and storage on the owner's side. The served side (requests
to the organization's data by anyone, anonymous included) is reported beside them. With
k = 0.585, twice the population pays 2^0.585 ≈ 1.5 times (Hokkaido HARP's 処理費逓減方式).
Every input is in the row, so anyone can recompute the fee.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import func, select

from store import usage
from store.terms import FeeRule

GIB = 1024 ** 3


@dataclass
class FeeRow:
    month: str
    organization: str
    name: str
    kind: str
    population: int | None
    datasets: int
    storage_bytes: int
    requests_served: int
    bytes_served: int
    features_served: int
    requests_made: int
    bytes_made: int
    features_made: int
    terms_version: str
    fixed_share: int
    population_share: int
    usage_share: int
    fee: int

    def as_dict(self) -> dict:
        return asdict(self)


def _yen(value: float) -> int:
    return int(round(value))


def report(session, month: str, rule: FeeRule, terms_version: str,
           organization: str | None = None) -> list[FeeRow]:
    from store.applications import Participation
    from store.db import Dataset, Organization, Resource
    usage.rollup(session, month)
    served: dict[str, list[int]] = {}
    made: dict[str, list[int]] = {}
    for r in usage.monthly_rows(session, month):
        for book, key in ((served, r.owner_org), (made, r.consumer_org)):
            if key:
                t = book.setdefault(key, [0, 0, 0])
                t[0] += r.requests
                t[1] += r.bytes
                t[2] += r.features
    active = Dataset.status == "active"
    datasets = dict(session.execute(select(Dataset.organization_id, func.count())
                                    .where(active).group_by(Dataset.organization_id)).all())
    storage = dict(session.execute(
        select(Dataset.organization_id, func.coalesce(func.sum(Resource.size), 0))
        .join(Resource, Resource.dataset_id == Dataset.id).where(active)
        .group_by(Dataset.organization_id)).all())
    population = dict(session.execute(select(Participation.organization_id,
                                             Participation.population)).all())
    orgs = list(session.scalars(select(Organization).order_by(Organization.id)))
    k = rule.population_exponent
    weights = {o.id: population[o.id] ** k for o in orgs if population.get(o.id)}
    total_weight = sum(weights.values())
    rows = []
    for o in orgs:
        s = served.get(o.id, [0, 0, 0])
        m = made.get(o.id, [0, 0, 0])
        n_datasets, stored = int(datasets.get(o.id, 0)), int(storage.get(o.id, 0) or 0)
        fixed = rule.fixed_per_member if (o.kind or "") in rule.fixed_kinds else 0.0
        pop_share = rule.population_pool * weights[o.id] / total_weight if o.id in weights \
            else 0.0
        use = (rule.per_1000_requests * m[0] / 1000 + rule.per_gib_transferred * m[1] / GIB
               + rule.per_gib_stored * stored / GIB + rule.per_dataset * n_datasets)
        fixed_y, pop_y, use_y = _yen(fixed), _yen(pop_share), _yen(use)
        rows.append(FeeRow(month=month, organization=o.id, name=o.name_ja, kind=o.kind or "",
                           population=population.get(o.id), datasets=n_datasets,
                           storage_bytes=stored, requests_served=s[0], bytes_served=s[1],
                           features_served=s[2], requests_made=m[0], bytes_made=m[1],
                           features_made=m[2], terms_version=terms_version,
                           fixed_share=fixed_y, population_share=pop_y, usage_share=use_y,
                           fee=fixed_y + pop_y + use_y))
    if organization is not None:
        rows = [r for r in rows if r.organization == organization]
    return rows


def dataset_rows(session, month: str, organization: str | None = None) -> list[dict]:
    """Per dataset (and consumer) of the month: the breakdown behind the served columns."""
    usage.rollup(session, month)
    out: dict[tuple[str, str, str], dict] = {}
    for r in usage.monthly_rows(session, month):
        if organization is not None and organization not in (r.owner_org, r.consumer_org):
            continue
        key = (r.owner_org, r.dataset_id, r.consumer_org)
        row = out.setdefault(key, {"month": month, "owner": r.owner_org, "dataset": r.dataset_id,
                                   "consumer": r.consumer_org or "anonymous", "requests": 0,
                                   "errors": 0, "bytes": 0, "features": 0})
        for f in ("requests", "errors", "bytes", "features"):
            row[f] += getattr(r, f)
    return list(out.values())


FIELDS = [f for f in FeeRow.__dataclass_fields__]


def to_csv(rows: list[dict], fields: list[str] | None = None) -> str:
    """CSV text (UTF-8 without BOM, CRLF as RFC 4180), one line per row, the header first."""
    import csv
    import io
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or (list(rows[0]) if rows else FIELDS),
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
