"""The contract every source type follows, and the values a harvest reports.

A harvester enumerates remote datasets, each with resources; it never downloads resource bodies
(the pipeline's fetch does), never writes to the catalogue and never renders HTML. Everything
the runner reads from a harvester is declared on `Harvester`; a subclass names its sources.yaml
type in its class statement (`class CKANHarvester(Harvester, source_type="ckan")`), which is
all it takes to be found by `harvester_class`.
"""
from __future__ import annotations

import traceback as tb
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Iterator


@dataclass
class SourceConfig:
    name: str
    type: str
    url: str
    organization: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class RemoteResource:
    remote_id: str
    url: str
    name: str = ""
    format: str | None = None
    description: str = ""
    remote_modified: str | None = None
    size: int | None = None


@dataclass
class RemoteDataset:
    remote_id: str
    name: str
    title: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    organization: dict | None = None  # {"name": slug, "title": ..., "code": ...}
    license_id: str | None = None
    license_title: str | None = None
    license_url: str | None = None
    issued: str | None = None
    modified: str | None = None
    landing_page: str | None = None
    resources: list[RemoteResource] = field(default_factory=list)
    raw: dict = field(default_factory=dict)


@dataclass
class JobError:
    """One error of a job, as the job record keeps it: what went wrong, at which stage
    (enumerate | fetch | translate | publish | withdraw | theme-layers), where, and — when an
    exception caused it — the traceback, kept for staff and never printed to the terminal."""
    stage: str
    message: str
    dataset: str | None = None
    resource: str | None = None
    row: int | None = None
    traceback: str | None = None

    @classmethod
    def from_exception(cls, stage: str, exc: BaseException, **where) -> "JobError":
        if isinstance(exc, HarvestFailure):
            return exc.locate(**where).error()
        return cls(stage, describe(exc), traceback=format_traceback(exc), **where)


class HarvestFailure(Exception):
    """Raised where a failure is found; becomes one JobError of the job (`error()`)."""

    def __init__(self, stage: str, message: str, *, dataset: str | None = None,
                 resource: str | None = None, row: int | None = None):
        super().__init__(message)
        self.stage, self.message = stage, message
        self.dataset, self.resource, self.row = dataset, resource, row

    def locate(self, **where) -> "HarvestFailure":
        """Fill in what the raiser did not know (the dataset, the resource) from the caller."""
        for key, value in where.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self

    def error(self) -> JobError:
        return JobError(self.stage, self.message, self.dataset, self.resource, self.row,
                        format_traceback(self))


def describe(exc: BaseException) -> str:
    """The message of an exception no one foresaw, without the server paths it may name
    (the traceback, for staff, keeps them)."""
    from geo.redact import hide_paths
    return hide_paths(f"{type(exc).__name__}: {exc}")[:400]


def format_traceback(exc: BaseException) -> str | None:
    """The chain of an exception that was raised; None for one only constructed (nothing to
    trace: the message says it all)."""
    if exc.__traceback__ is None and exc.__cause__ is None and exc.__context__ is None:
        return None
    return "".join(tb.format_exception(exc))


@contextmanager
def stage(name: str, **where):
    """Name the stage of whatever fails inside: an unexpected exception (a bug, an input no
    reader foresaw) becomes a HarvestFailure of this stage, its traceback chained, so it is
    recorded where it happened instead of stopping the job."""
    try:
        yield
    except HarvestFailure as exc:
        exc.locate(**where)
        raise
    except Exception as exc:
        raise HarvestFailure(name, describe(exc), **where) from exc


_TYPES: dict[str, type["Harvester"]] = {}


class Harvester:
    """Base of every source type. The runner reads exactly what is declared here."""

    source_type: ClassVar[str | None] = None  # the sources.yaml `type`
    needs_url: ClassVar[bool] = True          # an API at an http(s) `url`
    # What its resource URLs may name besides http(s): "cache" (files the harvester wrote
    # under the cache itself) or "config" (local paths inside the folder of sources.yaml).
    # Remote sources keep None: a URL an upstream server sent is never a local path.
    local_reads: ClassVar[str | None] = None

    def __init_subclass__(cls, *, source_type: str | None = None, **kw):
        super().__init_subclass__(**kw)
        if source_type is None:
            return
        if source_type in _TYPES:
            raise TypeError(f"source type {source_type!r} is registered twice "
                            f"({_TYPES[source_type].__name__}, {cls.__name__})")
        cls.source_type = source_type
        _TYPES[source_type] = cls

    def __init__(self, source: SourceConfig, *, timeout: float = 30.0,
                 cache_dir: Path | None = None):
        self.source = source
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path("cache")
        # False when the enumeration may have missed datasets: then nothing is withdrawn.
        self.complete = True
        self.warnings: list[str] = []
        # Records that could not be read, each one error; the others go on.
        self.failures: list[JobError] = []
        # Incremental harvesting (a type that supports it sets `incremental`): the runner sets
        # `since` and `known_names` before enumerate(); the harvester reports what it skipped
        # as unchanged and every name the source offers.
        self.incremental = False
        self.since: datetime | None = None
        self.known_names: set[str] = set()
        self.skipped_unchanged = 0
        self.present_names: set[str] | None = None  # None: the names enumerated are all
        # Bytes of one API answer (RENKEI_MAX_PAGE); the runner sets the operator's value.
        self.max_page_bytes = 64 * 1024 ** 2

    def enumerate(self) -> Iterator[RemoteDataset]:  # pragma: no cover - the contract
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Credential values to strip from every message before it is printed or stored."""
        return []

    @classmethod
    def config_problem(cls, entry: dict, where: str) -> str | None:
        """A problem with this type's own keys of a sources.yaml entry, or None."""
        return None

    @classmethod
    def prepare_options(cls, options: dict, config_dir: Path) -> dict:
        """The options as the harvester reads them (e.g. paths relative to the config)."""
        return options


def harvester_class(source_type: str) -> type[Harvester] | None:
    return _TYPES.get(source_type)


def source_types() -> list[str]:
    return sorted(_TYPES)
