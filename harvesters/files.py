"""`files` sources: a list of file URLs or local paths, each described in sources.yaml.

For cities that publish files on a web page rather than through a catalogue API:
```yaml
  - name: kasai-files
    type: files
    organization: kasai-city
    files:
      - id: shelters               # stable id (defaults to the file name)
        title: 加西市 指定避難所一覧
        url: https://www.city.kasai.hyogo.jp/.../shelters.csv   # or a path relative to sources.yaml
        license: CC-BY-4.0
        tags: [避難所, 防災]
```
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlparse

from harvesters.base import Harvester, RemoteDataset, RemoteResource

LICENSES = {
    "cc-by-4.0": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc-by": ("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
    "cc0": ("CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "gsi": ("国土地理院コンテンツ利用規約", "https://www.gsi.go.jp/kikakuchousei/kikakuchousei40182.html"),
    "pdl-1.0": ("公共データ利用規約（第1.0版）", "https://www.digital.go.jp/resources/open_data/public_data_license_v1.0"),
}


class FilesHarvester(Harvester, source_type="files"):
    needs_url = False
    local_reads = "config"

    @classmethod
    def config_problem(cls, entry: dict, where: str) -> str | None:
        if not isinstance(entry.get("files"), list):
            return f"{where}: a files source needs a 'files' list"
        for j, f in enumerate(entry["files"], 1):
            if not isinstance(f, dict) or not f.get("url"):
                return f"{where}: file #{j} needs a 'url'"
        return None

    @classmethod
    def prepare_options(cls, options: dict, config_dir: Path) -> dict:
        # Relative file paths are relative to sources.yaml, wherever cron runs us from, and
        # no path may leave its folder (harvesters.fetch); the entry cannot move it.
        return {**options, "base_dir": str(config_dir)}

    def enumerate(self) -> Iterator[RemoteDataset]:
        base = self.source.options.get("base_dir")
        for entry in self.source.options.get("files") or []:
            url = str(entry["url"])
            if base and not urlparse(url).scheme and not url.startswith("/"):
                url = f"{base}/{url}"
            stem = PurePosixPath(urlparse(url).path).stem
            remote_id = str(entry.get("id") or stem)
            lic = str(entry.get("license") or "").strip()
            lic_title, lic_url = LICENSES.get(lic.lower(), (lic or None, entry.get("license_url")))
            org = entry.get("organization") or self.source.organization
            res = RemoteResource(remote_id=f"{remote_id}-file", url=url,
                                 # The file's name, never the query string: that may carry a key.
                                 name=entry.get("resource_name")
                                 or PurePosixPath(urlparse(url).path).name,
                                 format=entry.get("format"))
            yield RemoteDataset(
                remote_id=remote_id, name=remote_id, title=entry.get("title") or stem,
                description=entry.get("description") or "", tags=list(entry.get("tags") or []),
                organization={"name": org, "title": entry.get("organization_title") or org}
                if org else None,
                license_id=lic or None, license_title=lic_title, license_url=lic_url,
                modified=entry.get("modified"), landing_page=entry.get("landing_page"),
                resources=[res], raw=dict(entry))
