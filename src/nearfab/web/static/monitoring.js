// Monitoring charts (no framework; plotly.js is served by nearfab itself, never a CDN).
// Draws every server-built figure ([data-figure]); a click on a T² or SPE sample, or the
// sample form, fetches that sample's contributions from this site and draws them.
(function () {
  "use strict";
  const CONFIG = { displaylogo: false, responsive: true };

  function draw(el, figure) {
    const fig = figure || JSON.parse(el.dataset.figure);
    return Plotly.react(el, fig.data, fig.layout, CONFIG);
  }

  function fmt(value) {
    return Number(value).toPrecision(3);
  }

  async function showContributions(index) {
    const box = document.getElementById("contributions");
    if (!box) return null;
    const status = document.getElementById("contributions-status");
    const chart = document.getElementById("contributions-chart");
    status.classList.remove("error");
    status.textContent = "Loading sample " + index + "…";
    let body;
    let response;
    try {
      response = await fetch(box.dataset.url + "?index=" + encodeURIComponent(index), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      body = await response.json();
    } catch (err) {
      status.classList.add("error");
      status.textContent = "Could not load the contributions: " + err;
      return null;
    }
    if (!response.ok) {
      status.classList.add("error");
      status.textContent = (body.error && body.error.message) || "Could not load the contributions";
      return null;
    }
    chart.hidden = false;
    await draw(chart, body.figure);
    const when = body.time.replace("T", " ").replace("+00:00", " UTC");
    status.textContent =
      "Sample " + body.index + " at " + when + ": T² " + fmt(body.t2) + " (limit " +
      fmt(body.t2_limit) + "), SPE " + fmt(body.spe) + " (limit " + fmt(body.spe_limit) + ").";
    const input = document.querySelector("#sample-form input[name=sample]");
    if (input) input.value = body.index;
    box.dataset.index = String(body.index);
    return body;
  }

  function onSampleClick(event) {
    const point = (event.points || []).find((p) => p.customdata !== undefined);
    if (point) showContributions(Number(point.customdata));
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const el of document.querySelectorAll("[data-figure]")) {
      draw(el).then(() => {
        if (el.hasAttribute("data-samples")) el.on("plotly_click", onSampleClick);
      });
    }
    const form = document.getElementById("sample-form");
    if (form) {
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        showContributions(Number(form.elements.sample.value));
      });
    }
  });

  window.nearfabMonitoring = { showContributions };
})();
