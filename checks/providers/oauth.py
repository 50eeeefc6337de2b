"""OAuth 2.0 access tokens for the provider APIs (SNDS REST, Postmaster Tools): a token command, or the
refresh-token grant with the rotating refresh token kept in the state directory.

A `TokenSource` is an async callable returning an access token; it raises `TokenError` when none can be had
(code `invalid-grant` when the endpoint says the refresh token is revoked or expired, `auth` otherwise).
Tokens never reach a repr, a message or a log line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from checks.errors import TokenError
from checks.i18n import _
from checks.providers.deadline import DEFAULT_DEADLINE, whole_request

__all__ = ["TOKEN_URL", "RefreshTokenSource", "TokenError", "TokenSource", "command_token"]

TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
TokenSource = Callable[[], Awaitable[str]]


def command_token(get: Callable[[], str]) -> TokenSource:
    """A TokenSource calling a blocking secret source (a `token_command` runner) in a thread."""

    async def token() -> str:
        try:
            return await asyncio.to_thread(get)
        except Exception as error:  # the source's own error, which never holds the secret
            raise TokenError("auth", _("the token command failed: {error}").format(error=error)) from None

    return token


class RefreshTokenSource:
    """Access tokens from the refresh-token grant; the rotating refresh token is kept in `state_dir/token_file`."""

    def __init__(
        self,
        client: Callable[[], httpx.AsyncClient],
        state_dir: str | os.PathLike[str],
        client_id: str,
        *,
        token_file: str = "oauth.json",
        token_url: str = TOKEN_URL,
        scope: str = "",
        seed: Callable[[], str] | None = None,
        name: str = "OAuth",
        deadline: float = DEFAULT_DEADLINE,
        client_secret: Callable[[], str] | None = None,
    ) -> None:
        self._client = client
        self.path = Path(state_dir) / token_file
        self.client_id = client_id
        self.token_url = token_url
        self.scope = scope
        self.name = name
        self.deadline = deadline
        self._seed = seed
        self._secret = client_secret  # Google's token endpoint wants it even for installed apps
        self._access: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.token_url} state={self.path} tokens=[secure]>"

    async def __call__(self) -> str:
        async with self._lock:  # concurrent fetches share one refresh: a refresh token may be single-use
            if self._access is None or time.monotonic() >= self._access[1]:
                self._access = await self._refresh()
            return self._access[0]

    async def _refresh(self) -> tuple[str, float]:
        refresh = self._stored() or (await asyncio.to_thread(self._seed) if self._seed else "")
        if not refresh:
            said = _("no {name} refresh token: put one in {path} or configure refresh_token")
            raise TokenError("auth", said.format(name=self.name, path=self.path))
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": self.client_id}
        if self.scope:
            form["scope"] = self.scope
        if self._secret is not None:
            form["client_secret"] = await asyncio.to_thread(self._secret)
        try:
            response = await whole_request(self._client().post(self.token_url, data=form), self.deadline)
        except httpx.HTTPError as error:
            said = _("cannot reach the OAuth token endpoint ({error})").format(error=type(error).__name__)
            raise TokenError("unreachable", said) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer, dict) or "access_token" not in answer:
            reason = str(answer.get("error", "")) if isinstance(answer, dict) else ""
            http = f"HTTP {response.status_code} {reason}".rstrip()
            raise TokenError(
                "invalid-grant" if reason == "invalid_grant" else "auth",
                _("the OAuth token endpoint refused the refresh token ({http})").format(http=http),
            )
        if answer.get("refresh_token"):
            self._store(str(answer["refresh_token"]))
        lifetime = float(answer.get("expires_in", 3600))
        return str(answer["access_token"]), time.monotonic() + max(lifetime - 60, 0)

    def _stored(self) -> str:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        return str(data.get("refresh_token", "")) if isinstance(data, dict) else ""

    def _store(self, refresh: str) -> None:
        """Write the new refresh token atomically (temporary file, fsync, rename), readable by us alone."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"refresh_token": refresh}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
