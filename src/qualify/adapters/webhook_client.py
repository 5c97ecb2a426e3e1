"""The webhook HTTP client: one POST of a signed JSON body, and what its answer means.

What is sent and how it is signed is the webhook service's business
(qualify.service.integrations.webhooks); this module only makes the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from qualify import __version__

ERROR_TEXT = 300  # characters of a failure kept in `last_error`


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: delivered or not, the HTTP status if any, and why it failed."""

    delivered: bool
    status: int | None
    error: str | None


def new_client(timeout: float) -> httpx.Client:
    """The HTTP client deliveries go out with: no redirects followed, `timeout` on every phase."""
    return httpx.Client(
        timeout=timeout, follow_redirects=False, headers={"User-Agent": f"Qualify-Webhooks/{__version__}"}
    )


def post(client: httpx.Client, url: str, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """POST `body`; any 2xx is delivered, anything else (3xx included) a failure with its reason."""
    try:
        with client.stream("POST", url, content=body, headers=dict(headers)) as response:
            if 200 <= response.status_code < 300:
                return Outcome(True, response.status_code, None)
            return Outcome(False, response.status_code, _http_error(response))
    except httpx.TimeoutException as error:
        return Outcome(False, None, f"timeout ({type(error).__name__})")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
        return Outcome(False, None, f"{type(error).__name__}: {error}"[:ERROR_TEXT])


def _http_error(response: httpx.Response) -> str:
    """`HTTP 500 Internal Server Error: <start of the body>`, reading no more than needed."""
    start = b""
    for chunk in response.iter_bytes():
        start += chunk
        if len(start) >= ERROR_TEXT:
            break
    text = start.decode("utf-8", "replace").strip()
    return f"HTTP {response.status_code} {response.reason_phrase}{': ' + text if text else ''}"[:ERROR_TEXT]
