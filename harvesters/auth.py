"""Credentials for sources behind a login: a bearer token or OAuth2 client credentials
(FIWARE platforms such as Kakogawa's sit behind an OAuth2 token endpoint).

sources.yaml names environment variables, never the secrets themselves:
```yaml
    auth: {type: bearer, token_env: TOYOOKA_TOKEN}
    auth: {type: oauth2, token_url: https://…/token, client_id_env: KAKOGAWA_ID,
           client_secret_env: KAKOGAWA_SECRET, scope: optional}
```
The secret values live only in this process's memory; `secrets()` lists them so the runner can
strip them from every message before anything is printed or stored.
"""
from __future__ import annotations

import os

import requests

from harvesters.base import HarvestFailure

TYPES = {"bearer", "oauth2"}


def validate(auth, where: str) -> str | None:
    """A config problem, or None. Checked before any harvest starts (exit code 2)."""
    if auth is None:
        return None
    if not isinstance(auth, dict) or auth.get("type") not in TYPES:
        return f"{where}: 'auth.type' must be one of {', '.join(sorted(TYPES))}"
    for key in ("token", "client_secret", "client_id", "password"):
        if key in auth:  # a secret written into the file would end up in backups and mails
            return (f"{where}: put the secret in an environment variable and name it with "
                    f"'{key}_env', not in sources.yaml")
    needed = ["token_env"] if auth["type"] == "bearer" else \
        ["token_url", "client_id_env", "client_secret_env"]
    missing = [k for k in needed if not auth.get(k)]
    if missing:
        return f"{where}: auth needs {', '.join(missing)}"
    return None


class Credentials:
    def __init__(self, auth: dict | None, source: str):
        self.auth, self.source = auth or None, source
        self._token: str | None = None

    def secrets(self) -> list[str]:
        if not self.auth:
            return []
        names = [self.auth.get(k) for k in ("token_env", "client_id_env", "client_secret_env")]
        values = [os.environ.get(n) for n in names if n]
        return [v for v in values if v] + ([self._token] if self._token else [])

    def _env(self, key: str) -> str:
        name = self.auth[key]
        value = os.environ.get(name)
        if not value:
            raise HarvestFailure("enumerate", f"environment variable {name} is not set "
                                 f"(credentials of source {self.source})")
        return value

    def headers(self, session: requests.Session, timeout: float) -> dict:
        if not self.auth:
            return {}
        if self._token is None:
            self._token = (self._env("token_env") if self.auth["type"] == "bearer"
                           else self._oauth2(session, timeout))
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> None:
        """Forget an OAuth2 token the server refused (expired); the next call asks again."""
        if self.auth and self.auth["type"] == "oauth2":
            self._token = None

    def _oauth2(self, session: requests.Session, timeout: float) -> str:
        client_id, secret = self._env("client_id_env"), self._env("client_secret_env")
        data = {"grant_type": "client_credentials"}
        if self.auth.get("scope"):
            data["scope"] = self.auth["scope"]
        url = self.auth["token_url"]
        try:
            # RFC 6749 §2.3.1: client_secret_basic is the form every server must accept.
            resp = session.post(url, data=data, auth=(client_id, secret), timeout=timeout)
        except requests.RequestException as exc:
            raise HarvestFailure("enumerate", f"OAuth2 token endpoint {url} unreachable: "
                                 f"{type(exc).__name__}") from None
        if resp.status_code != 200:
            # The body may echo what we sent; only the status and the OAuth2 error code go out.
            code = _json(resp).get("error") if resp.headers.get("Content-Type", "").startswith(
                "application/json") else None
            raise HarvestFailure("enumerate", f"OAuth2 token request refused: HTTP "
                                 f"{resp.status_code}{f' ({code})' if isinstance(code, str) else ''}"
                                 f" from {url}")
        token = _json(resp).get("access_token")
        if not isinstance(token, str) or not token:
            raise HarvestFailure("enumerate", f"OAuth2 token endpoint {url} sent no access_token")
        return token


def _json(resp) -> dict:
    try:
        doc = resp.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def redact(text: str | None, secrets: list[str]) -> str | None:
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
