"""Server paths out of messages: GDAL, the OS and Python name the files they fail on, and a
reader's message reaches the job record and the dataset page. The platform's own paths (the
cache, the data dir, the config folder) tell an outsider what the server holds."""
from __future__ import annotations

import re

# An absolute POSIX path of two or more parts, not the path of a URL ("http://h/a/b": the
# "/a/b" follows a host character) nor a fraction or a "緯度/経度" label.
_PATH = re.compile(r"(?<![\w.:/%~-])/(?:[^\s/'\"{}()<>,;]+/)+[^\s'\"{}()<>,;:]*")


def hide_paths(text: str | None, *known) -> str | None:
    if not text:
        return text
    for path in known:
        if path:
            text = text.replace(str(path), "<file>")
    return _PATH.sub("<file>", text)
