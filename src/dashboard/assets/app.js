// redq dashboard: live numbers. The pages are complete without this file;
// it only refreshes the cells marked data-live="<queue>.<field>" from
// /api/summary every 5 s, the charts (data-chart="<url>") every 30 s, and
// asks before purging the dead set.
"use strict";
(function () {
  function pct(v) {
    if (v === null || v === undefined) return "-";
    return isFinite(v) ? "\u2264" + v + " ms" : ">600 s";
  }
  function set(queue, field, text) {
    var sel = '[data-live="' + queue + "." + field + '"]';
    document.querySelectorAll(sel).forEach(function (el) {
      if (el.textContent !== text) el.textContent = text;
    });
  }
  function refresh() {
    if (!document.querySelector("[data-live]")) return;
    fetch("/api/summary", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s) return;
        s.queues.forEach(function (q) {
          ["pending", "scheduled", "active", "dead", "succeeded", "inbox", "rejected"]
            .forEach(function (f) { set(q.queue, f, String(q[f])); });
          var r = q.last_minute || {};
          set(q.queue, "ok", (r.succeeded_per_sec || 0).toFixed(2));
          set(q.queue, "failed", (r.failed_per_sec || 0).toFixed(2));
          set(q.queue, "wp50", pct(r.wait_p50_ms));
          set(q.queue, "wp99", pct(r.wait_p99_ms));
          set(q.queue, "p50", pct(r.run_p50_ms));
          set(q.queue, "p99", pct(r.run_p99_ms));
          set(q.queue, "paused", q.paused ? "paused" : "running");
        });
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {});
  }
  function charts() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      fetch(el.getAttribute("data-chart"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (svg) { if (svg && svg.indexOf("<svg") === 0) el.innerHTML = svg; })
        .catch(function () {});
    });
  }
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var action = (e.submitter && e.submitter.getAttribute("formaction")) || form.getAttribute("action") || "";
    if (/\/dead\/purge$/.test(action) && !window.confirm("Delete these dead jobs for good?")) {
      e.preventDefault();
    }
  });
  refresh();
  setInterval(refresh, 5000);
  setInterval(charts, 30000);
})();
