/* The tweetgen experiment dashboard: draws the views that /dashboard/data.json returns
   (or the snapshot a report carries) and, when live, polls for new ones. */
(function () {
  "use strict";

  var config = window.TWEETGEN_DASHBOARD || {};
  var plotConfig = { responsive: true, displaylogo: false };
  // Read by tests and handy in the console: how often the page drew, and what it drew.
  var state = (window.tweetgenDashboard = { renders: 0, errors: 0, last: null });

  function byId(id) {
    return document.getElementById(id);
  }

  function percent(value, digits) {
    return value === null || value === undefined ? "–" : (value * 100).toFixed(digits) + " %";
  }

  function number(value, unit) {
    return value === null || value === undefined
      ? "–"
      : Math.round(value).toLocaleString("en") + (unit || "");
  }

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function card(name, figures, colour, level) {
    var node = element("article", undefined, "card");
    node.dataset.variant = name;
    node.style.setProperty("--accent", colour);
    var heading = element("h2", name + " ");
    var version = figures.model_version
      ? figures.model_version + (figures.model_kind ? " (" + figures.model_kind + ")" : "")
      : "no version recorded";
    heading.appendChild(element("small", version));
    node.appendChild(heading);
    var interval = figures.interval
      ? " (" + Math.round(level * 100) + " % interval " + percent(figures.interval[0], 1) +
        " – " + percent(figures.interval[1], 1) + ")"
      : "";
    var rows = [
      ["like rate", percent(figures.like_rate, 1) + interval],
      ["feedback", number(figures.positive_count) + " likes of " + number(figures.feedback_count)],
      ["served", number(figures.served) + " (" + number(figures.errors) + " errors)"],
      ["P(best)", percent(figures.p_best, 1)],
      ["latency", number(figures.latency_p50_ms, " ms") + " p50, " +
        number(figures.latency_p95_ms, " ms") + " p95"],
      ["weight", percent(figures.weight_in_force, 0) + " of the traffic (latest decision)"],
    ];
    var list = element("dl");
    rows.forEach(function (row) {
      list.appendChild(element("dt", row[0]));
      var value = element("dd", row[1]);
      value.dataset.field = row[0];
      list.appendChild(value);
    });
    node.appendChild(list);
    return node;
  }

  function renderSummary(data, figures) {
    var colours = {};
    (figures.like_rate.data || []).forEach(function (trace) {
      if (trace.legendgroup && trace.line && trace.line.color) {
        colours[trace.legendgroup] = trace.line.color;
      }
    });
    var summary = byId("summary");
    summary.replaceChildren();
    data.variants.forEach(function (name) {
      summary.appendChild(card(name, data.summary[name], colours[name], data.level));
    });
    var decision = byId("decision");
    decision.replaceChildren();
    var latest = data.latest_decision;
    if (latest) {
      decision.appendChild(element("strong", "Latest decision "));
      decision.appendChild(
        element("span", "(" + latest.policy + ", " + new Date(latest.at).toLocaleString() +
          (latest.applied ? ", applied" : ", weights kept") + "): ")
      );
      decision.appendChild(element("span", latest.reason));
    }
  }

  function render(payload) {
    var data = payload.data;
    Object.keys(payload.figures).forEach(function (key) {
      var node = document.querySelector('[data-figure="' + key + '"]');
      if (!node) return;
      var figure = payload.figures[key];
      window.Plotly.react(node, figure.data, figure.layout, plotConfig);
    });
    renderSummary(data, payload.figures);
    state.renders += 1;
    state.last = payload;
    document.body.dataset.state = "ready";
    byId("error").hidden = true;
    var feedback = data.variants.reduce(function (sum, name) {
      return sum + data.summary[name].feedback_count;
    }, 0);
    document.body.dataset.feedback = String(feedback);
    var when = payload.generated_at ? new Date(payload.generated_at).toLocaleString() : "–";
    byId("status").textContent =
      (config.snapshot ? "snapshot of " : "updated ") + when + " · " + data.buckets.length +
      " time buckets · " + feedback + " feedback";
  }

  function fail(error) {
    state.errors += 1;
    var banner = byId("error");
    banner.textContent = "Could not refresh: " + error.message +
      (state.renders ? " (showing the last data)" : "");
    banner.hidden = false;
    if (!state.renders) document.body.dataset.state = "error";
  }

  function poll() {
    fetch(config.dataUrl + window.location.search, { cache: "no-store" })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.message || "HTTP " + response.status);
          return body;
        });
      })
      .then(render)
      .catch(fail)
      .then(function () {
        window.setTimeout(poll, config.refreshMs || 3000);
      });
  }

  if (config.title) {
    document.title = config.title;
    byId("title").textContent = config.title;
  }
  if (!window.Plotly) {
    fail(new Error("plotly.js did not load"));
  } else if (config.snapshot) {
    render(config.snapshot);
  } else {
    poll();
  }
})();
