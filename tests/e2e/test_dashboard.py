"""The live dashboard in a real headless Chromium, on a local stack with real data.

Both tiny models are rolled out, simulated users generate and give feedback through the REST
API, the aggregation fills the metrics tables, and the page at ``endpoints.json``'s
``dashboard`` URL must draw every chart with data, take nothing from outside the stack, and
redraw by itself when new feedback is aggregated. A screenshot of the page is checked pixel by
pixel: every chart's plotting area holds coloured marks.

Chromium is Debian's (``scripts/ensure_chromium.sh``, run by ``make test``), driven by
Playwright's Python package; without it the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from tweetgen.adapters.database import Database
from tweetgen_local.stack import LocalStack

from tests import conftest
from tests.conftest import REPO_ROOT
from tests.e2e import stacks

WAIT_S = 60.0
CHROMIUM = Path(os.environ.get("TWEETGEN_CHROMIUM", "/usr/bin/chromium"))
# Debian's Chromium on a closed network: no sandbox as root, no background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHARTS = ("like_rate", "traffic", "p_best", "latency", "timeline")
# Users are assigned by a hash of their id: these ids reach both variants.
USERS = [f"dashboard-user-{n}" for n in range(24)]
# The simulated users' taste: they like gpt2's tweets and one lstm tweet in four.
LIKES = {"gpt2": lambda n: True, "lstm": lambda n: n % 4 == 0}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: run scripts/ensure_chromium.sh)")
    pytest.skip(f"{reason}: run scripts/ensure_chromium.sh (make browser)")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed")
    return CHROMIUM


def eventually(check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    return conftest.eventually(check, timeout)


class Site:
    """The running stack, its REST API and its database."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.api = str(stack.endpoints["api"])
        self.dashboard = str(stack.endpoints["dashboard"])
        self.db = Database.from_url(f"sqlite:///{stack.options.state_dir / 'tweetgen.db'}")
        self.sent = 0

    def users_give_feedback(self, users: list[str]) -> None:
        for n, user in enumerate(users):
            answer = requests.post(
                f"{self.api}/generations",
                json={"prompt": "good morning", "max_new_tokens": 4, "user_id": user, "seed": n},
                timeout=60,
            )
            assert answer.status_code == 201, answer.text
            served = answer.json()
            like = LIKES[served["variant"]](n)
            feedback = requests.post(
                f"{self.api}/generations/{served['generation_id']}/feedback",
                json={"reward": "like" if like else "dislike", "user_id": user},
                headers={"Idempotency-Key": uuid.uuid4().hex},
                timeout=60,
            )
            assert feedback.status_code == 202, feedback.text
            self.sent += 1
        eventually(lambda: self.recorded() >= self.sent)

    def recorded(self) -> int:
        """Feedback the recorder has stored with its generation (the queue drained)."""
        return sum(totals.feedback for totals in self.db.generations.variant_totals().values())

    def aggregate(self) -> None:
        """Run the aggregate function as its schedule does, and wait for the metrics."""
        event = json.loads((REPO_ROOT / "events" / "schedule_aggregate.json").read_text())
        # The event's id names the decision: a new run needs a new id.
        event["id"] = str(uuid.uuid4())
        event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = self.stack.pool.invoke("AggregateFunction", event)
        assert result.error is None, result.error

        def aggregated() -> bool:
            rows = self.db.variant_metrics.list()
            return sum(row.feedback_count for row in rows) >= self.sent

        eventually(aggregated)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_run: dict[str, Path]) -> Iterator[Site]:
    with stacks.rolled_out_stack(tmp_path_factory.mktemp("dashboard-stack"), tiny_run) as stack:
        running = Site(stack)
        running.users_give_feedback(USERS[:16])
        running.aggregate()
        yield running


# What each chart holds, read from plotly's own DOM: its SVG, its traces and drawn marks.
CHART_MARKS = """
(keys) => keys.map((key) => {
  const node = document.querySelector(`[data-figure="${key}"]`);
  const drawn = (el) => (el.getAttribute("d") || "").length > 4;
  const marks = [...node.querySelectorAll(
    "g.trace path.point, g.trace path.js-line, g.trace path.js-fill, g.trace g.point path"
  )].filter(drawn).length;
  const area = node.querySelector(".nsewdrag").getBoundingClientRect();
  return {
    key,
    svg: node.querySelectorAll("svg.main-svg").length,
    traces: node.querySelectorAll("g.trace").length,
    marks,
    area: {x: area.x + window.scrollX, y: area.y + window.scrollY, width: area.width,
           height: area.height},
  };
})
"""


def coloured_pixels(image: Any, box: dict[str, float]) -> int:
    """Pixels in ``box`` with a clear colour: traces, not the white ground or grey gridlines."""
    crop = image.crop(
        (
            int(box["x"]),
            int(box["y"]),
            int(box["x"] + box["width"]),
            int(box["y"] + box["height"]),
        )
    ).convert("RGB")
    pixels = np.asarray(crop, dtype=np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


def test_the_dashboard_draws_every_view_with_data_and_follows_new_feedback(
    chromium: Path, site: Site, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    endpoints = json.loads((site.stack.options.state_dir / "endpoints.json").read_text())
    assert endpoints["dashboard"] == site.dashboard and site.dashboard.endswith("/dashboard")
    origin = site.dashboard.removesuffix("/dashboard")
    out = tmp_path_factory.mktemp("dashboard-browser")
    shot = out / "dashboard.png"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(out / "profile"),  # a fresh profile for every run
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            requested: list[str] = []
            problems: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on(
                "response",
                lambda response: (
                    problems.append(f"{response.status} {response.url}")
                    if response.status >= 400
                    else None
                ),
            )
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.goto(site.dashboard)
            page.wait_for_function(
                f"document.body.dataset.feedback === '{site.sent}'", timeout=30_000
            )

            charts = page.evaluate(CHART_MARKS, list(CHARTS))
            for chart in charts:
                assert chart["svg"] >= 1, chart
                assert chart["traces"] >= 1, chart
                assert chart["marks"] >= 2, chart
            cards = page.locator("#summary article.card")
            assert sorted(cards.evaluate_all("cs => cs.map(c => c.dataset.variant)")) == [
                "gpt2",
                "lstm",
            ]
            likes = page.locator('#summary dd[data-field="feedback"]').all_inner_texts()
            assert all(" likes of " in text for text in likes)

            page.screenshot(path=str(shot), full_page=True)
            image = Image.open(shot)
            for chart in charts:
                count = coloured_pixels(image, chart["area"])
                assert count >= 40, f"the {chart['key']} chart looks blank ({count} pixels)"

            # Live: more feedback, aggregated, is drawn without reloading the page.
            renders = page.evaluate("window.tweetgenDashboard.renders")
            site.users_give_feedback(USERS[16:])
            site.aggregate()
            page.wait_for_function(
                f"document.body.dataset.feedback === '{site.sent}'", timeout=30_000
            )
            assert page.evaluate("window.tweetgenDashboard.renders") > renders
            page.screenshot(path=str(out / "dashboard-later.png"), full_page=True)
        finally:
            browser.close()

    assert problems == []
    outside = [url for url in requested if not url.startswith(origin)]
    assert outside == [], "the page fetched from outside the stack"
    assert f"{origin}/dashboard/static/plotly.min.js" in requested
    print(f"dashboard screenshot: {shot}")
    keep = os.environ.get("TWEETGEN_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "dashboard.png")


def test_tweetgen_report_writes_the_same_views_from_the_stacks_database(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tweetgen_local.cli import main

    out = tmp_path / "report.html"
    state = str(site.stack.options.state_dir)
    assert main(["report", "--out", str(out), "--state-dir", state]) == 0
    assert f"{site.sent} feedback" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "<script src=" not in html and "window.TWEETGEN_DASHBOARD" in html
