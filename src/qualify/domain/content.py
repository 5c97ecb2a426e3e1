"""The content an event was about (a download, a webinar, a campaign, a page): the item the
content reports, the learned points and the predictive features all count by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qualify.domain.values import as_text

# The properties that say what an event was about, in order (the batch side reads them alike).
CONTENT_KEYS = ("content_id", "webinar_id", "campaign", "url")


def content_item(event_type: str, properties: Mapping[str, Any]) -> str | None:
    """What an event was about, with its kind (`content_download:roi-guide`), or None."""
    for key in CONTENT_KEYS:
        text = as_text(properties.get(key))
        if text is not None:
            return f"{event_type}:{text}"
    return None
