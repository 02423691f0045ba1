"""Harvested text made fit to publish: URLs without secrets, local paths without the server's
folders, XML without control characters, IRIs that RDF serialisers accept.

Every page, API and export that shows a source's URL goes through `public_url` (or, for free
text that may quote URLs, `redact_text`): a publisher that puts `?apikey=` or `user:password@`
in a link, or an operator whose `files` live under /srv/…, must not see that on the web.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# Query (and fragment) keys whose values are credentials: a key is secret when one of its words
# (split at _ - . and camelCase) ends with one of these, so apikey, api_key, accessToken,
# X-Amz-Signature, subscription-key and client_secret are caught, and keyword or design not.
SECRET_WORDS = ("key", "token", "secret", "signature", "sig", "password", "passwd", "pwd",
                "auth", "credential", "credentials", "session")
REDACTED = "***"
_URL_IN_TEXT = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+""")
# Characters XML 1.0 forbids anywhere (C0 controls but tab, CR, LF; lone surrogates; FFFE/F).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Characters an IRI may not hold as they are (RFC 3987): space, controls, <>"{}|\^`.
_IRI_UNSAFE = re.compile(r'[\x00-\x20<>"{}|\\^`\x7f-\x9f]')


_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _is_secret(key: str) -> bool:
    words = [w.casefold() for w in _WORD.findall(key)] or [key.casefold()]
    return any(w.endswith(SECRET_WORDS) for w in words)


def _redact_pairs(text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs or not any(_is_secret(k) for k, _ in pairs):
        return text
    return urlencode([(k, REDACTED if _is_secret(k) else v) for k, v in pairs], safe="*")


def public_url(url) -> str:
    """`url` as it may be shown: userinfo dropped, secret query/fragment values replaced by
    ***; a local path (a `files` resource) shown as its file name only."""
    if not url or not isinstance(url, str):
        return "" if url is None else str(url)
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED
    if not parts.scheme or parts.scheme.lower() == "file" or len(parts.scheme) == 1:
        # A server path (or a Windows drive letter): the name of the file is what people need.
        return PurePosixPath(parts.path.replace("\\", "/")).name if parts.path else ""
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, _redact_pairs(parts.query),
                       _redact_pairs(parts.fragment) if "=" in parts.fragment else parts.fragment))


def redact_text(text) -> str:
    """Free text (an error message, a raw record) with every URL in it passed through
    `public_url`."""
    if not text or not isinstance(text, str):
        return text
    return _URL_IN_TEXT.sub(lambda m: public_url(m.group(0)), text)


def redact_doc(doc):
    """A JSON-like document (a source's raw record) with every string redacted."""
    if isinstance(doc, str):
        return redact_text(doc)
    if isinstance(doc, dict):
        return {k: redact_doc(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [redact_doc(v) for v in doc]
    return doc


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot carry (a title with \\x0b stays a title)."""
    return _XML_INVALID.sub("", text) if isinstance(text, str) else text


def iri(url) -> str | None:
    """An http(s) URL as an IRI an RDF serialiser accepts: redacted, unsafe characters
    percent-encoded; None when it is no http(s) URL at all."""
    text = public_url(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return _IRI_UNSAFE.sub(lambda m: quote(m.group(0), safe=""), text)
