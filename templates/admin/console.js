// Live progress: pages with editions poll /admin/progress.json every second while any is sending;
// status, reason, start and finish times, counts and the Pause/Resume form follow the edition.
(function () {
  "use strict";
  function countsText(counts) {
    var states = Object.keys(counts).sort();
    if (!states.length) { return "no rows"; }
    return states.map(function (s) { return counts[s] + " " + s; }).join(" ");
  }
  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-edition], [data-progress-one]"));
  }
  function idOf(el) { return el.getAttribute("data-edition") || el.getAttribute("data-progress-one"); }
  function time(el, value) {
    // "minutes" cells (the editions list) show the time without seconds.
    if (el) { el.textContent = value ? (el.getAttribute("data-finished") === "minutes" || el.getAttribute("data-started") === "minutes" ? value.slice(0, 16) : value) : "-"; }
  }
  function update(el, e) {
    var status = el.querySelector("[data-status]");
    var counts = el.querySelector("[data-counts]");
    var bar = el.querySelector("progress");
    var reasonLine = el.querySelector("[data-reason-line]");
    var reason = el.querySelector("[data-reason]");
    if (status) { status.textContent = e.status; }
    if (reason) { reason.textContent = e.reason; }
    if (reasonLine) { reasonLine.hidden = !e.reason; }
    time(el.querySelector("[data-started]"), e.started);
    time(el.querySelector("[data-finished]"), e.finished);
    if (counts) { counts.textContent = countsText(e.counts); }
    if (bar) { bar.max = Math.max(e.total, 1); bar.value = e.done; }
    Array.prototype.forEach.call(el.querySelectorAll("form[data-when]"), function (form) {
      form.hidden = form.getAttribute("data-when").split(" ").indexOf(e.status) < 0;
    });
    el.setAttribute("data-live-status", e.status);
  }
  function poll() {
    var els = rows();
    if (!els.length) { return; }
    var query = els.map(function (el) { return "id=" + encodeURIComponent(idOf(el)); }).join("&");
    fetch("/admin/progress.json?" + query, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : { editions: [] }; })
      .then(function (data) {
        var busy = false;
        data.editions.forEach(function (e) {
          els.forEach(function (el) { if (idOf(el) === String(e.id)) { update(el, e); } });
          if (e.status === "planned" || e.status === "sending") { busy = true; }
        });
        document.body.setAttribute("data-polled", String(Date.now()));
        setTimeout(poll, busy ? 1000 : 5000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  document.addEventListener("DOMContentLoaded", function () { setTimeout(poll, 500); });
})();
// Import progress: an import's page polls its job every second and shows the result when it ends.
(function () {
  "use strict";
  function poll(el) {
    var id = el.getAttribute("data-import-job");
    fetch("/admin/import/jobs/" + encodeURIComponent(id) + ".json", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) { setTimeout(function () { poll(el); }, 5000); return; }
        var done = el.querySelector("[data-import-done]");
        var bar = el.querySelector("progress");
        var state = el.querySelector("[data-import-state]");
        if (done) { done.textContent = job.done.toLocaleString("en-US"); }
        if (bar) { bar.max = Math.max(job.total, 1); bar.value = job.done; }
        if (state) { state.textContent = job.state === "waiting" ? " (waiting for the import before it)" : ""; }
        document.body.setAttribute("data-polled", String(Date.now()));
        if (job.state === "waiting" || job.state === "importing") { setTimeout(function () { poll(el); }, 1000); }
        else { window.location.reload(); }
      })
      .catch(function () { setTimeout(function () { poll(el); }, 5000); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var el = document.querySelector("[data-import-job]");
    if (el && el.getAttribute("data-state") !== "finished" && el.getAttribute("data-state") !== "failed") { setTimeout(function () { poll(el); }, 500); }
  });
})();
