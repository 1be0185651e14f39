"""A thin JSON layer over httpx that turns taskd's answers into values or typed errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import httpx

from .errors import ConnectionFailed, api_error


class Http:
    def __init__(
        self,
        server: str,
        token: Optional[str] = None,
        timeout: float = 30.0,
        keepalive: bool = True,
    ) -> None:
        if not server:
            raise ValueError("server: give taskd's URL, e.g. http://127.0.0.1:7070")
        if "://" not in server:
            server = "http://" + server
        headers = {"Accept": "application/json", "User-Agent": "taskplane-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
        self.timeout = timeout
        self._client = httpx.Client(
            base_url=server.rstrip("/"), headers=headers, timeout=timeout, limits=limits
        )

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Mapping[str, Any]] = None,
        *,
        timeout: Optional[float] = None,
        extensions: Optional[dict[str, Any]] = None,
    ) -> Any:
        """Sends one request and returns the decoded JSON answer (None when empty)."""
        try:
            response = self._client.request(
                method,
                path,
                json=body,
                timeout=self.timeout if timeout is None else timeout,
                extensions=extensions,
            )
        except httpx.TransportError as error:
            raise ConnectionFailed(
                f"{method} {path}: {type(error).__name__}: {error or 'no answer'}"
            ) from error
        if response.is_success:
            return response.json() if response.content else None
        code, message = f"http_{response.status_code}", response.text or response.reason_phrase
        try:
            error_body = response.json()["error"]
            code, message = str(error_body["code"]), str(error_body["message"])
        except (ValueError, KeyError, TypeError):
            pass
        raise api_error(response.status_code, code, message)

    def close(self) -> None:
        self._client.close()
