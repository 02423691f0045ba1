"""The small protocol every source type follows: enumerate remote datasets, each with resources.

A harvester never downloads resource bodies (the runner's fetch does) and never renders HTML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator


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


class HarvestFailure(Exception):
    """A failure with the stage and what it concerns, reported as one error of the job."""

    def __init__(self, stage: str, message: str, *, dataset: str | None = None,
                 resource: str | None = None, row: int | None = None):
        super().__init__(message)
        self.stage, self.message = stage, message
        self.dataset, self.resource, self.row = dataset, resource, row


class Harvester:
    """Subclasses set `complete` to False when the enumeration may have missed datasets."""

    def __init__(self, source: SourceConfig, *, timeout: float = 30.0):
        self.source = source
        self.timeout = timeout
        self.complete = True
        self.warnings: list[str] = []

    def enumerate(self) -> Iterator[RemoteDataset]:  # pragma: no cover - the contract
        raise NotImplementedError
