"""Segment's browser library (analytics-next, from npm) on a page of another origin, delivering to
`qualify serve` as it would to Segment: page views, a custom event, then an identify from a form.

The library's files are fetched from npm by scripts/test.sh (`npm pack`, into the virtual
environment), never kept in the repository. Where they or chromium are missing the test is skipped,
unless QUALIFY_REQUIRE_BROWSER=1 (CI): then it fails.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qualify.adapters import repository as repo
from qualify.service.admin.api_keys import create_key
from qualify.service.unit_of_work import Workspace
from tests.e2e.test_serve import Server, free_port
from tests.e2e.test_tracking_browser import _QuietHandler, eventually, lead_events, page, qualify  # noqa: F401

LIBRARY = sorted(Path(sys.prefix, "share").glob("analytics-next-*/umd/index.js"))

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme pricing</title>
<script src="/analytics-next/bundles/index.js"></script>
<script>
  window.analyticsReady = AnalyticsNext.AnalyticsBrowser.load(
    {{writeKey: {key}, cdnURL: {site},
      cdnSettings: {{integrations: {{"Segment.io": {{apiKey: {key}, apiHost: {host}, protocol: "http"}}}},
                    metrics: {{sampleRate: 0}}}}}},
    {{disableAutoISOConversion: false}}
  ).then(([analytics]) => {{ window.analytics = analytics; return true; }});
</script></head>
<body><h1>Pricing</h1>
<form id="contact" onsubmit="event.preventDefault();
  analytics.identify('u-web-7', {{email: this.email.value, firstName: this.first.value}})
    .then(() => {{ document.body.dataset.identified = 'yes'; }});">
<input name="email" type="email"><input name="first"><button type="submit">Talk to sales</button>
</form></body></html>
"""


def _library_or_skip() -> Path:
    if LIBRARY:
        return LIBRARY[-1].parent
    message = "Segment's analytics-next is not installed (scripts/test.sh fetches it from npm)"
    if os.environ.get("QUALIFY_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def site(tmp_path: Path, qualify: tuple[Server, Workspace]) -> Iterator[tuple[str, str]]:  # noqa: F811
    """The page on a second origin, with the library's files where its loader looks for them."""
    library = _library_or_skip()
    server, workspace = qualify
    with workspace.unit_of_work() as uow:
        key, _ = create_key(uow, "website", "ingest")
    root = tmp_path / "site"
    (root / "analytics-next").mkdir(parents=True)
    (root / "analytics-next" / "bundles").symlink_to(library, target_is_directory=True)
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(_QuietHandler, directory=str(root))
    )
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    host = server.url.removeprefix("http://") + "/v1"
    (root / "pricing.html").write_text(
        PAGE.format(key=json.dumps(key), site=json.dumps(origin), host=json.dumps(host)), encoding="utf-8"
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin, key
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_segment_s_browser_library_tracks_a_visitor_who_identifies_in_a_form(
    page: Any,  # noqa: F811
    site: tuple[str, str],
    qualify: tuple[Server, Workspace],  # noqa: F811
) -> None:
    origin, _ = site
    _, workspace = qualify
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(f"{origin}/pricing.html?utm_campaign=spring")
    page.wait_for_function("window.analyticsReady !== undefined")
    assert page.evaluate("window.analyticsReady") is True
    page.evaluate("analytics.page()")
    page.evaluate("analytics.track('Pricing Calculator Used', {seats: 40})")
    page.fill("input[name=email]", "lee@acme.com")
    page.fill("input[name=first]", "Lee")
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-identified=yes]")
    events = eventually(
        lambda: lead_events(workspace, "lee@acme.com"),
        lambda found: len(found) >= 2,
        "the anonymous page view and event stitched onto the lead",
    )
    kinds = [e.type for e in events]
    assert kinds == ["page_view", "pricing_calculator_used"], kinds
    viewed, used = events
    assert viewed.properties["url"].startswith(f"{origin}/pricing.html") and viewed.properties["campaign"] == "spring"
    assert used.properties["seats"] == 40 and used.event_id.startswith("ajs-")
    assert not [url for url in failed if "/v1/" in url], failed
    with workspace.unit_of_work(read_only=True) as uow:
        lead = repo.find_lead(uow.connection, "lee@acme.com")
    assert lead is not None and (lead.lead.first_name, lead.lead.external_id) == ("Lee", "u-web-7")
