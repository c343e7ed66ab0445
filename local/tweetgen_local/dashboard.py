"""The experiment dashboard: a live page on the local stack, and the same views as one HTML file.

:func:`tweetgen.services.dashboard.dashboard_data` reads the views from the database; this
module draws them with plotly (:func:`build_figures`) and serves them:

- ``GET /dashboard``: the page; it polls ``/dashboard/data.json`` every few seconds (the
  query string is passed on, e.g. ``/dashboard?hours=6``) and redraws in place, keeping
  the reader's zoom;
- ``GET /dashboard/data.json``: the views and their figures (``?hours=N``: only the last N
  hours);
- ``GET /dashboard/static/...``: the page's script and style, and plotly.js from the
  installed plotly package, so nothing is fetched from outside.

:class:`DashboardSite` is the whole site as one function of the path and query
(``handle`` → status, content type, body); :func:`serve_dashboard` mounts it on the local
web server, and :func:`write_report` writes everything into one self-contained file
(``tweetgen report``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs, get_plotlyjs_version
from plotly.utils import PlotlyJSONEncoder
from tweetgen.domain.aggregation import BUCKET_SECONDS as DEFAULT_BUCKET_SECONDS

__all__ = [
    "DASHBOARD_PATH",
    "DATA_PATH",
    "FIGURES",
    "STATIC_PATH",
    "DashboardResponse",
    "DashboardSite",
    "build_figures",
    "database_reader",
    "render_report",
    "serve_dashboard",
    "write_report",
]

_log = logging.getLogger(__name__)

DASHBOARD_PATH = "/dashboard"
DATA_PATH = f"{DASHBOARD_PATH}/data.json"
STATIC_PATH = f"{DASHBOARD_PATH}/static"
DEFAULT_REFRESH_S = 3.0
#: The charts, in page order: figure key → what it shows.
FIGURES: dict[str, str] = {
    "like_rate": "Like rate per variant (posterior mean and credible interval)",
    "traffic": "Traffic share per variant",
    "p_best": "P(best): probability each variant has the highest like rate",
    "latency": "Model latency per variant (p50 and p95)",
    "timeline": "Rollouts and decisions",
}
_STATIC_FILES = {
    "dashboard.js": "application/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
_PLOTLY_JS = "plotly.min.js"
_HTML = "text/html; charset=utf-8"
_JSON = "application/json; charset=utf-8"
_STATUS_STYLE = {
    "succeeded": ("circle", "#2ca02c"),
    "unchanged": ("circle-open", "#7f7f7f"),
    "running": ("diamond", "#ff7f0e"),
    "failed": ("x", "#d62728"),
    "rolled_back": ("x-open", "#d62728"),
}


class DashboardResponse(NamedTuple):
    status: int
    content_type: str
    body: bytes


#: Reads the views for one request: query parameters → ``dashboard_data``'s result.
Reader = Callable[[Mapping[str, str]], dict[str, Any]]


# --------------------------------------------------------------------------- figures


def _colour(index: int) -> str:
    return qualitative.Plotly[index % len(qualitative.Plotly)]


def _translucent(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _bucket_width(data: Mapping[str, Any]) -> timedelta:
    seconds = data.get("bucket_seconds")
    return timedelta(seconds=float(seconds) if seconds else DEFAULT_BUCKET_SECONDS)


def _time_axis(data: Mapping[str, Any]) -> dict[str, Any]:
    """A date axis; around a single bucket it spans a few buckets instead of a millisecond."""
    axis: dict[str, Any] = {"type": "date"}
    if len(data["buckets"]) == 1:
        start = datetime.fromisoformat(data["buckets"][0])
        width = _bucket_width(data)
        axis["range"] = [(start - 2 * width).isoformat(), (start + 3 * width).isoformat()]
    return axis


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "template": "plotly_white",
        "height": 360,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "legend": {"orientation": "h", "y": -0.18},
        "hovermode": "x unified",
        # Redraws keep what the reader zoomed into.
        "uirevision": "dashboard",
        "xaxis": {"type": "date"},
        **extra,
    }


#: Series with at most this many points get markers too (a single bucket is then visible).
MARKER_POINTS = 60


def _mode(x: Sequence[Any]) -> str:
    return "lines+markers" if len(x) <= MARKER_POINTS else "lines"


def _no_data(figure: go.Figure, text: str) -> None:
    figure.add_annotation(
        text=text,
        showarrow=False,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        font={"size": 14, "color": "#777"},
    )


def _error_bars(values: Mapping[str, Sequence[float | None]]) -> dict[str, Any]:
    pairs = zip(
        values["posterior_mean"], values["interval_low"], values["interval_high"], strict=True
    )
    above, below = [], []
    for mean, low, high in pairs:
        above.append(None if mean is None or high is None else high - mean)
        below.append(None if mean is None or low is None else mean - low)
    return {"type": "data", "array": above, "arrayminus": below, "visible": True}


def _like_rate(data: Mapping[str, Any]) -> go.Figure:
    level = round(float(data["level"]) * 100)
    figure = go.Figure(
        layout=_layout(
            f"Like rate per variant: posterior mean and {level} % credible interval",
            xaxis=_time_axis(data),
            yaxis={"title": {"text": "like rate"}, "tickformat": ".0%", "rangemode": "tozero"},
        )
    )
    x = data["buckets"]
    for index, name in enumerate(data["variants"]):
        values = data["series"][name]
        colour = _colour(index)
        band = {"x": x, "mode": "lines", "line": {"width": 0}, "legendgroup": name}
        figure.add_trace(
            go.Scatter(**band, y=values["interval_high"], showlegend=False, hoverinfo="skip")
        )
        figure.add_trace(
            go.Scatter(
                **band,
                y=values["interval_low"],
                fill="tonexty",
                fillcolor=_translucent(colour, 0.2),
                name=f"{name} {level} % interval",
                hoverinfo="skip",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=values["posterior_mean"],
                mode=_mode(x),
                line={"color": colour, "width": 2},
                # A band needs two points; with fewer the interval is drawn as error bars.
                error_y=_error_bars(values) if len(x) < 2 else None,
                name=f"{name} posterior mean",
                legendgroup=name,
                hovertemplate="%{y:.1%}",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=values["like_rate"],
                mode="markers",
                marker={"color": colour, "size": 6, "opacity": 0.55},
                name=f"{name} rate in the bucket",
                legendgroup=name,
                customdata=list(
                    zip(values["positive_count"], values["feedback_count"], strict=True)
                ),
                hovertemplate="%{y:.1%} (%{customdata[0]} of %{customdata[1]})",
            )
        )
    if not x:
        _no_data(figure, "no feedback aggregated yet")
    return figure


def _traffic(data: Mapping[str, Any]) -> go.Figure:
    figure = go.Figure(
        layout=_layout(
            "Traffic share per variant (served) and the decided weights",
            xaxis=_time_axis(data),
            barmode="stack",
            bargap=0,
            yaxis={
                "title": {"text": "share of requests"},
                "tickformat": ".0%",
                "range": [-0.02, 1.02],
            },
        )
    )
    x = data["buckets"]
    width_ms = _bucket_width(data).total_seconds() * 1000
    for index, name in enumerate(data["variants"]):
        values = data["series"][name]
        figure.add_trace(
            go.Bar(
                x=x,
                y=[0 if share is None else share for share in values["traffic_share"]],
                # Each bar covers its bucket: from its start, one bucket wide.
                width=width_ms,
                offset=0,
                marker={"color": _translucent(_colour(index), 0.7), "line": {"width": 0}},
                name=f"{name} served",
                legendgroup=name,
                customdata=values["served"],
                hovertemplate="%{y:.1%} (%{customdata} served)",
            )
        )
    applied = [d for d in data["decisions"] if d["applied"]]
    if applied:
        end = x[-1] if x and x[-1] > applied[-1]["at"] else applied[-1]["at"]
        for index, name in enumerate(data["variants"]):
            weights = [d["weights"].get(name, 0.0) for d in applied]
            figure.add_trace(
                go.Scatter(
                    x=[d["at"] for d in applied] + [end],
                    y=[*weights, weights[-1]],
                    mode="lines",
                    line={"color": _colour(index), "dash": "dash", "shape": "hv", "width": 2},
                    name=f"{name} decided weight",
                    legendgroup=name,
                    hovertemplate="weight %{y:.1%}",
                )
            )
    if not x:
        _no_data(figure, "nothing served yet")
    return figure


def _p_best(data: Mapping[str, Any]) -> go.Figure:
    threshold = float(data["p_best_threshold"])
    figure = go.Figure(
        layout=_layout(
            "P(best): each variant's probability to have the highest like rate",
            xaxis=_time_axis(data),
            yaxis={"title": {"text": "P(best)"}, "tickformat": ".0%", "range": [0, 1.02]},
        )
    )
    x = data["buckets"]
    for index, name in enumerate(data["variants"]):
        figure.add_trace(
            go.Scatter(
                x=x,
                y=data["series"][name]["p_best"],
                mode=_mode(x),
                line={"color": _colour(index), "width": 2},
                name=name,
                legendgroup=name,
                hovertemplate="%{y:.1%}",
            )
        )
        decided = [d for d in data["decisions"] if name in d["p_best"]]
        if decided:
            figure.add_trace(
                go.Scatter(
                    x=[d["at"] for d in decided],
                    y=[d["p_best"][name] for d in decided],
                    mode="markers",
                    marker={"color": _colour(index), "symbol": "diamond", "size": 9},
                    name=f"{name} at a decision",
                    legendgroup=name,
                    hovertemplate="decision: %{y:.1%}",
                )
            )
    if x:
        figure.add_hline(
            y=threshold,
            line={"dash": "dot", "color": "#555", "width": 1},
            annotation_text=f"winner threshold {threshold:.0%}",
            annotation_position="bottom right",
        )
    else:
        _no_data(figure, "no feedback aggregated yet")
    return figure


def _latency(data: Mapping[str, Any]) -> go.Figure:
    figure = go.Figure(
        layout=_layout(
            "Model latency per variant: p50 (solid) and p95 (dashed)",
            xaxis=_time_axis(data),
            yaxis={"title": {"text": "milliseconds"}, "rangemode": "tozero"},
        )
    )
    x = data["buckets"]
    for index, name in enumerate(data["variants"]):
        values = data["series"][name]
        for percentile, dash in (("p50", "solid"), ("p95", "dash")):
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=values[f"latency_{percentile}_ms"],
                    mode=_mode(x),
                    connectgaps=False,
                    line={"color": _colour(index), "dash": dash, "width": 2},
                    marker={"size": 6},
                    name=f"{name} {percentile}",
                    legendgroup=name,
                    customdata=values["errors"],
                    hovertemplate="%{y:.0f} ms (%{customdata} errors)",
                )
            )
    if not x:
        _no_data(figure, "nothing served yet")
    return figure


def _timeline(data: Mapping[str, Any]) -> go.Figure:
    lanes = [f"rollout {name}" for name in data["variants"]]
    rollouts = [r for r in data["rollouts"] if r["variant"]]
    unnamed = [r for r in data["rollouts"] if not r["variant"]]
    if unnamed:
        lanes.append("rollout (unknown key)")
    lanes.append("decisions")
    figure = go.Figure(
        layout=_layout(
            "Rollouts and decisions",
            hovermode="closest",
            yaxis={"type": "category", "categoryorder": "array", "categoryarray": lanes},
            margin={"l": 130, "r": 20, "t": 50, "b": 40},
        )
    )
    by_status: dict[str, list[dict[str, Any]]] = {}
    for rollout in rollouts + unnamed:
        by_status.setdefault(rollout["status"], []).append(rollout)
    for status, group in sorted(by_status.items()):
        symbol, colour = _STATUS_STYLE.get(status, ("circle", "#1f77b4"))
        xs: list[Any] = []
        ys: list[Any] = []
        texts: list[Any] = []
        for rollout in group:
            lane = f"rollout {rollout['variant']}" if rollout["variant"] else lanes[-2]
            text = (
                f"{rollout['variant'] or '?'} {rollout['version'] or '?'}: {status}"
                + (f" in {rollout['duration_s']:.0f} s" if rollout["duration_s"] else "")
                + (f"<br>{rollout['reason']}" if rollout["reason"] else "")
            )
            # A segment from start to finish, then a gap before the next rollout.
            xs += [rollout["started_at"], rollout["finished_at"] or rollout["started_at"], None]
            ys += [lane, lane, None]
            texts += [text, text, None]
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                line={"color": colour, "width": 6},
                marker={"symbol": symbol, "size": 11, "color": colour, "line": {"width": 2}},
                name=f"rollout {status}",
                text=texts,
                hovertemplate="%{text}<extra></extra>",
            )
        )
    for applied, name, symbol in (
        (True, "decision applied", "star"),
        (False, "decision kept", "star-open"),
    ):
        group = [d for d in data["decisions"] if d["applied"] is applied]
        if not group:
            continue
        figure.add_trace(
            go.Scatter(
                x=[d["at"] for d in group],
                y=["decisions"] * len(group),
                mode="markers",
                marker={"symbol": symbol, "size": 13, "color": "#9467bd", "line": {"width": 1}},
                name=name,
                text=[
                    f"{d['policy']}: "
                    + ", ".join(f"{v} {w:.0%}" for v, w in sorted(d["weights"].items()))
                    + f"<br>{d['reason']}"
                    for d in group
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if not data["rollouts"] and not data["decisions"]:
        _no_data(figure, "no rollouts or decisions yet")
    return figure


_BUILDERS: dict[str, Callable[[Mapping[str, Any]], go.Figure]] = {
    "like_rate": _like_rate,
    "traffic": _traffic,
    "p_best": _p_best,
    "latency": _latency,
    "timeline": _timeline,
}


def build_figures(data: Mapping[str, Any]) -> dict[str, go.Figure]:
    """The dashboard's charts (keys of :data:`FIGURES`) from ``dashboard_data``'s result."""
    return {key: _BUILDERS[key](data) for key in FIGURES}


def _payload(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the page draws: ``generated_at``, the views (``data``) and their ``figures``."""
    views = {key: value for key, value in data.items() if key != "generated_at"}
    figures = {key: figure.to_plotly_json() for key, figure in build_figures(views).items()}
    return {"generated_at": data.get("generated_at"), "data": views, "figures": figures}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":")).encode()


def _script_json(value: Any) -> str:
    """JSON to put inside a ``<script>``: every ``<`` escaped, so no text can end the element."""
    return json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":")).replace("<", "\\u003c")


# --------------------------------------------------------------------------- pages


def _static(name: str) -> str:
    return resources.files("tweetgen_local").joinpath("static", name).read_text(encoding="utf-8")


def _page(config: Mapping[str, Any], head: str, scripts: str) -> str:
    return (
        _static("dashboard.html")
        .replace("<!-- head -->", head)
        .replace("/*config*/null", _script_json(config))
        .replace("<!-- scripts -->", scripts)
    )


def render_report(data: Mapping[str, Any], *, title: str = "tweetgen experiment report") -> str:
    """One self-contained HTML file with the dashboard's views of ``data`` (no network)."""
    config = {"title": title, "snapshot": _payload(data)}
    head = f"<style>\n{_static('dashboard.css')}\n</style>"
    scripts = (
        f'<script type="text/javascript">/* plotly.js {get_plotlyjs_version()} */\n'
        f"{get_plotlyjs()}\n</script>\n"
        f'<script type="text/javascript">\n{_static("dashboard.js")}\n</script>'
    )
    return _page(config, head, scripts)


def write_report(path: Path, data: Mapping[str, Any], *, title: str | None = None) -> Path:
    """Write :func:`render_report` to ``path`` (its folder is created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_report(data, title=title or "tweetgen experiment report")
    path.write_text(html, encoding="utf-8")
    return path


class DashboardSite:
    """The live dashboard as a function of the request: ``handle(path, query)``.

    ``read`` gives the views for the request's query (``hours``, already checked here).
    """

    def __init__(self, read: Reader, *, refresh_s: float = DEFAULT_REFRESH_S) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be positive, got {refresh_s}")
        self._read = read
        self._refresh_s = refresh_s
        self._plotly: bytes | None = None
        # The last answer, by its data: polls between two aggregations draw nothing anew.
        self._last: tuple[str, bytes] | None = None

    @property
    def paths(self) -> list[str]:
        """Every path the site answers."""
        statics = [f"{STATIC_PATH}/{name}" for name in (*_STATIC_FILES, _PLOTLY_JS)]
        return [DASHBOARD_PATH, DATA_PATH, *statics]

    def handle(self, path: str, query: Mapping[str, str] | None = None) -> DashboardResponse:
        query = query or {}
        path = path.rstrip("/") or "/"
        if path == DASHBOARD_PATH:
            return DashboardResponse(200, _HTML, self.page().encode())
        if path == DATA_PATH:
            return self._data(query)
        if path == f"{STATIC_PATH}/{_PLOTLY_JS}":
            if self._plotly is None:
                self._plotly = get_plotlyjs().encode()
            return DashboardResponse(200, "application/javascript; charset=utf-8", self._plotly)
        name = path.removeprefix(f"{STATIC_PATH}/")
        if path.startswith(f"{STATIC_PATH}/") and name in _STATIC_FILES:
            return DashboardResponse(200, _STATIC_FILES[name], _static(name).encode())
        return DashboardResponse(
            404, _JSON, _json_bytes({"message": f"nothing is served at {path}"})
        )

    def page(self) -> str:
        config = {
            "title": "tweetgen experiment dashboard",
            "dataUrl": DATA_PATH,
            "refreshMs": round(self._refresh_s * 1000),
        }
        head = f'<link rel="stylesheet" href="{STATIC_PATH}/dashboard.css">'
        scripts = "\n".join(
            f'<script src="{STATIC_PATH}/{name}"></script>' for name in (_PLOTLY_JS, "dashboard.js")
        )
        return _page(config, head, scripts)

    def _data(self, query: Mapping[str, str]) -> DashboardResponse:
        hours = query.get("hours", "").strip()
        if hours:
            try:
                value = float(hours)
            except ValueError:
                value = -1.0
            if not 0 < value < float("inf"):
                message = f"hours must be a positive number, got {hours!r}"
                return DashboardResponse(400, _JSON, _json_bytes({"message": message}))
        try:
            data = self._read(query)
        except Exception as exc:  # the page shows it and keeps its last charts
            _log.exception("the dashboard could not read the metrics")
            message = f"the metrics could not be read: {type(exc).__name__}: {exc}"
            return DashboardResponse(503, _JSON, _json_bytes({"message": message}))
        views = {key: value for key, value in data.items() if key != "generated_at"}
        key = json.dumps(views, sort_keys=True, default=str)
        if self._last is None or self._last[0] != key:
            payload = _payload(views)
            del payload["generated_at"]
            # Without the opening brace: each answer starts with its own generated_at.
            self._last = (key, _json_bytes(payload)[1:])
        stamp = _json_bytes(data.get("generated_at"))
        return DashboardResponse(200, _JSON, b'{"generated_at":' + stamp + b"," + self._last[1])


def since_of(query: Mapping[str, str], now: datetime) -> datetime | None:
    """The start of the window that ``?hours=N`` asks for (None: everything)."""
    hours = query.get("hours", "").strip()
    return now - timedelta(hours=float(hours)) if hours else None


def database_reader(database_url: str, settings: Any = None) -> Reader:
    """Read the views from the database at ``database_url`` (the local stack's)."""
    from tweetgen.adapters.database import Database
    from tweetgen.services.dashboard import dashboard_data

    def read(query: Mapping[str, str]) -> dict[str, Any]:
        now = datetime.now(UTC)
        database = Database.from_url(database_url)
        return dashboard_data(database, since=since_of(query, now), settings=settings, now=now)

    return read


def serve_dashboard(server: Any, site: DashboardSite) -> str:
    """Mount ``site`` on the local web server (``graphql_server.LocalWebServer``); returns
    the page's path."""
    from tweetgen_local.graphql_server import WebRequest, WebResponse

    def handler(request: WebRequest) -> WebResponse:
        answer = site.handle(request.path, request.query)
        headers = [("Cache-Control", "no-store")] if answer.content_type == _JSON else []
        return WebResponse(answer.status, answer.body, answer.content_type, tuple(headers))

    for path in site.paths:
        server.route(path, handler, methods=("GET", "HEAD"))
    return DASHBOARD_PATH


#: The template's function whose ``EXPERIMENT_*`` settings the dashboard's statistics follow.
AGGREGATE_FUNCTION = "AggregateFunction"


def stack_settings(pool: Any) -> Any:
    """The experiment settings of the stack's aggregate function (the defaults without one),
    so the dashboard's prior, seed and threshold are the ones its decisions use."""
    from tweetgen.domain.experiment import ExperimentSettings

    if pool is None or AGGREGATE_FUNCTION not in pool.template.functions:
        return ExperimentSettings()
    try:
        return ExperimentSettings.from_environment(pool.environment(AGGREGATE_FUNCTION))
    except ValueError as exc:
        _log.warning("the dashboard uses the default experiment settings: %s", exc)
        return ExperimentSettings()


def mount_dashboard(server: Any, database_url: str, pool: Any = None) -> str:
    """Serve the live dashboard of ``database_url`` on the local web server; returns its path."""
    site = DashboardSite(database_reader(database_url, stack_settings(pool)))
    return serve_dashboard(server, site)


# --------------------------------------------------------------------------- tweetgen report

REPORT_SUMMARY = "write the experiment dashboard's views as one self-contained HTML file"


def add_report_arguments(parser: Any) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".tweetgen/local"),
        help="read the database of the local stack on this state dir (default .tweetgen/local)",
    )
    source.add_argument(
        "--database-url",
        default=None,
        help="read this database instead, e.g. mysql+pymysql://USER:PASSWORD@HOST:3306/tweetgen",
    )
    parser.add_argument(
        "--hours", type=float, default=None, help="only the last N hours (default: everything)"
    )


def report_command(args: Any) -> int:
    """``tweetgen report``: read the views from the database and write them to ``--out``."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from tweetgen.adapters.database import Database, applied_versions
    from tweetgen.domain.experiment import ExperimentSettings
    from tweetgen.services.dashboard import dashboard_data
    from tweetgen_build.errors import InputError

    from tweetgen_local.stack import stack_database_url

    if args.hours is not None and not 0 < args.hours < float("inf"):
        raise InputError(f"--hours must be a positive number, got {args.hours}")
    url = args.database_url or stack_database_url(args.state_dir)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InputError(f"not a database URL: {url!r} ({exc})") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        raise InputError(
            f"no database at {parsed.database}: start the local stack (tweetgen local up"
            " --state-dir DIR) or pass --database-url"
        )
    now = datetime.now(UTC)
    try:
        database = Database.from_url(url)
        if not applied_versions(database.engine):
            raise InputError(f"{shown} has no tweetgen tables: it was never migrated")
        data = dashboard_data(
            database,
            since=now - timedelta(hours=args.hours) if args.hours else None,
            settings=ExperimentSettings.from_environment(),
            now=now,
        )
    except (SQLAlchemyError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read the metrics from {shown}: {reason}") from None
    write_report(args.out, data)
    feedback = sum(figures["feedback_count"] for figures in data["summary"].values())
    print(
        f"wrote {args.out}: {len(data['buckets'])} time buckets, {feedback} feedback, "
        f"{len(data['decisions'])} decisions, {len(data['rollouts'])} rollouts "
        f"(variants: {', '.join(data['variants']) or 'none yet'})"
    )
    return 0
