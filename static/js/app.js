// Behaviour of the pages, attached with event listeners: the CSP allows no inline script.
(function () {
  "use strict";

  // --- The email log refreshes itself while the tab is visible -------------------------------
  let pollTimer = null;

  function schedulePoll() {
    clearTimeout(pollTimer);
    const log = document.getElementById("email-log");
    if (!log || document.visibilityState !== "visible") return;
    const seconds = Number(log.dataset.pollSeconds || 0);
    if (seconds > 0) {
      pollTimer = setTimeout(function () {
        const current = document.getElementById("email-log");
        if (current && document.visibilityState === "visible") htmx.trigger(current, "poll");
        schedulePoll();
      }, seconds * 1000);
    }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      const log = document.getElementById("email-log");
      if (log) htmx.trigger(log, "poll");
    }
    schedulePoll();
  });

  // --- Timelines stay open across refreshes ---------------------------------------------------
  let openTimelines = [];

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "email-log") {
      openTimelines = Array.from(document.querySelectorAll("#email-log .toggle[aria-expanded='true']"))
        .map(function (button) { return button.getAttribute("aria-controls"); });
    }
  });

  function setTimeline(button, open) {
    const timeline = document.getElementById(button.getAttribute("aria-controls"));
    if (!timeline) return;
    button.setAttribute("aria-expanded", String(open));
    timeline.hidden = !open;
  }

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest(".toggle[aria-controls]");
    if (toggle) setTimeline(toggle, toggle.getAttribute("aria-expanded") !== "true");
    const copy = event.target.closest("[data-copy-target]");
    if (copy) copyText(copy);
    if (event.target.closest("[data-close-help]")) closeHelp();
    const badge = event.target.closest("[data-help-badge]");
    if (badge) lastBadge = badge;
  });

  // --- "updated N s ago" and local times -------------------------------------------------------
  function markChecked() {
    const updated = document.querySelector("#email-log .updated");
    if (updated) updated.dataset.checkedAt = String(Math.floor(Date.now() / 1000));
    renderClock();
  }

  function relative(seconds) {
    if (seconds < 5) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) { const h = Math.round(seconds / 3600); return h + (h === 1 ? " hour ago" : " hours ago"); }
    const d = Math.round(seconds / 86400); return d + (d === 1 ? " day ago" : " days ago");
  }

  function renderClock() {
    const now = Date.now() / 1000;
    const updated = document.querySelector("#email-log .updated");
    if (updated) {
      const text = updated.querySelector(".updated-text");
      text.textContent = "updated " + relative(Math.max(0, Math.round(now - Number(updated.dataset.checkedAt))));
    }
    document.querySelectorAll("time[data-relative]").forEach(function (time) {
      const then = Date.parse(time.getAttribute("datetime")) / 1000;
      if (!isNaN(then)) time.textContent = relative(Math.max(0, Math.round(now - then)));
    });
  }

  function localise(root) {
    root.querySelectorAll("time[data-local]").forEach(function (time) {
      const when = new Date(time.getAttribute("datetime"));
      if (isNaN(when)) return;
      const style = time.dataset.local;
      const options = style === "time" ? { hour: "2-digit", minute: "2-digit" }
        : style === "date" ? { day: "numeric", month: "short", year: "numeric" }
        : { day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" };
      time.textContent = when.toLocaleString(undefined, options);
      time.title = when.toString();
    });
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    const elt = event.detail.elt;
    if (elt && elt.id === "email-log" && event.detail.successful) markChecked();
  });

  // --- The help panel opens beside the log and closes from the keyboard ----------------------
  let lastBadge = null;

  function closeHelp() {
    const panel = document.getElementById("help-panel");
    if (!panel || panel.hidden) return;
    panel.hidden = true;
    panel.innerHTML = "";
    document.body.classList.remove("help-open");
    if (lastBadge && document.body.contains(lastBadge)) lastBadge.focus();
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeHelp();
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    const target = event.detail.target;
    if (target && target.id === "help-panel") {
      target.hidden = false;
      document.body.classList.add("help-open");
      target.setAttribute("aria-labelledby", "help-panel-title");
      target.focus();
    }
  });

  // --- Copy the instructions for the client ----------------------------------------------------
  function copyText(button) {
    const source = document.getElementById(button.dataset.copyTarget);
    const status = button.parentElement.querySelector(".copy-status");
    if (!source || !navigator.clipboard) return;
    navigator.clipboard.writeText(source.textContent.trim()).then(
      function () { if (status) status.textContent = "Copied."; },
      function () { if (status) status.textContent = "Copy failed: select the text and copy it instead."; }
    );
  }

  // --- Every swap and the first load ------------------------------------------------------------
  document.addEventListener("htmx:load", function (event) {
    localise(event.detail.elt);
    if (event.detail.elt.id === "email-log" || event.detail.elt.querySelector && event.detail.elt.querySelector("#email-log")) {
      openTimelines.forEach(function (id) {
        const button = document.querySelector(".toggle[aria-controls='" + id + "']");
        if (button) setTimeline(button, true);
      });
      schedulePoll();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    renderClock();
    schedulePoll();
    setInterval(renderClock, 5000);
  });
})();
