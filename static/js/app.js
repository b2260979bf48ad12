// Behaviour of the pages, attached with event listeners: the CSP allows no inline script.
(function () {
  "use strict";

  // --- The email log refreshes itself while the tab is visible -------------------------------
  // The server says how often (data-poll-seconds: fast while a row can still change soon); a
  // hidden tab asks nothing, and asks at once when it becomes visible again. Where the browser
  // can, the log also listens on its event stream (data-stream-url), which says when it changed:
  // while that stream is open the log is fetched on each change and polls only rarely
  // (data-stream-poll-seconds); when the stream fails, the timed poll is back as it was.
  let pollTimer = null;
  let stream = null;
  let streamUrl = null;
  let streamOpen = false;
  let streamRetry = null;
  let changedTimer = null;
  let pollWanted = false;
  // The next fetch of the log follows its stream (it opened, rang or ended): it says so, and the
  // server then answers from Redis itself rather than from what one web process has heard so far.
  let streamSaidChanged = false;

  function pollSeconds(log) {
    const seconds = Number(log.dataset.pollSeconds || 0);
    if (streamOpen && log.dataset.streamPollSeconds) {
      return Math.max(seconds, Number(log.dataset.streamPollSeconds));
    }
    return seconds;
  }

  function schedulePoll() {
    clearTimeout(pollTimer);
    const log = document.getElementById("email-log");
    if (!log || document.visibilityState !== "visible") return;
    const seconds = pollSeconds(log);
    if (seconds > 0) {
      pollTimer = setTimeout(function () {
        pollNow();
        schedulePoll();
      }, seconds * 1000);
    }
  }

  function pollNow() {
    const log = document.getElementById("email-log");
    if (!log || document.visibilityState !== "visible") return;
    // While a fetch of the log is on its way, htmx queues this one on the log element, and drops
    // it when that fetch's answer replaces the element: a change announced meanwhile would wait
    // for the next timed poll (minutes, with the stream open). So it is remembered here until a
    // fetch of the log has started after it, and asked again once the current one is done.
    pollWanted = true;
    htmx.trigger(log, "poll");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt && event.detail.elt.id === "email-log") pollWanted = false;
  });

  function pollIfWanted() {
    if (pollWanted) pollNow();
  }

  function closeStream() {
    if (stream) stream.close();
    stream = null;
    streamUrl = null;
    streamOpen = false;
  }

  function listen() {
    const log = document.getElementById("email-log");
    const url = log && log.dataset.streamUrl;
    if (!url || !window.EventSource || document.visibilityState !== "visible") {
      closeStream();
      return;
    }
    if (stream && streamUrl === url) return;
    // After a failed stream, wait for its retry: a log re-rendered by polling must not open
    // a new stream on every poll (each costs the server a check and a wait).
    if (streamRetry) return;
    closeStream();
    const source = new EventSource(url);
    stream = source;
    streamUrl = url;
    source.addEventListener("open", function () {
      streamOpen = true;
      // What changed before the stream was listening (or while it was away) is fetched now.
      streamSaidChanged = true;
      pollNow();
      schedulePoll();
    });
    source.addEventListener("changed", function () {
      // One change (a webhook batch) rings many open logs at once: spread their fetches over a
      // second, and let one fetch answer several rings.
      if (changedTimer) return;
      changedTimer = setTimeout(function () {
        changedTimer = null;
        streamSaidChanged = true;
        pollNow();
      }, Math.random() * 1000);
    });
    source.addEventListener("end", function () {
      // The session is over: the log's own request takes the page to the sign-in form.
      closeStream();
      streamSaidChanged = true;
      pollNow();
      schedulePoll();
    });
    source.addEventListener("error", function () {
      // The browser reconnects by itself after a stream ended; it gives up after an error answer
      // (the server cannot listen, the session ended): poll, and try the stream again later.
      if (stream !== source) return;
      streamOpen = false;
      if (source.readyState === EventSource.CLOSED) {
        closeStream();
        streamRetry = setTimeout(function () {
          streamRetry = null;
          listen();
        }, 60000);
      }
      schedulePoll();
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") pollNow();
    listen();
    schedulePoll();
  });

  // --- Timelines: fetched when opened; a refresh keeps them open, fresh, and the focus in place --
  // The log sends only the rows' lines; a row's timeline comes from its own URL when opened. Each
  // refresh of the log tells the server which rows are open ("open"), so their timelines come back
  // rendered with it, and the row's id and focus survive the swap.
  let openTimelines = [];
  let focusedId = null;

  function openIds() {
    return Array.from(document.querySelectorAll("#email-log .toggle[aria-expanded='true']"))
      .map(function (button) { return button.getAttribute("aria-controls"); });
  }

  document.addEventListener("htmx:configRequest", function (event) {
    const elt = event.detail.elt;
    if (!elt || (elt.id !== "email-log" && elt.id !== "log-filter")) return;
    const ids = openIds().map(function (id) { return id.replace("timeline-", ""); });
    if (ids.length) event.detail.parameters.open = ids.join(",");
    if (elt.id === "email-log" && streamSaidChanged) {
      event.detail.headers["X-Log-Changed"] = "1";
      streamSaidChanged = false;
    }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "email-log") return;
    openTimelines = openIds();
    const active = document.activeElement;
    focusedId = active && active.id && event.detail.target.contains(active) ? active.id : null;
  });

  function restoreLogState() {
    // What the browser shows now wins: a row closed while the refresh was on its way closes again,
    // and one opened meanwhile is fetched.
    document.querySelectorAll("#email-log .toggle[aria-controls]").forEach(function (button) {
      setTimeline(button, openTimelines.indexOf(button.getAttribute("aria-controls")) !== -1);
    });
    if (focusedId) {
      const again = document.getElementById(focusedId);
      if (again) again.focus({ preventScroll: true });
      focusedId = null;
    }
  }

  function setTimeline(button, open) {
    const timeline = document.getElementById(button.getAttribute("aria-controls"));
    if (!timeline) return;
    button.setAttribute("aria-expanded", String(open));
    timeline.hidden = !open;
    if (open && !timeline.hasAttribute("data-loaded") && timeline.getAttribute("aria-busy") !== "true") {
      loadTimeline(button, timeline);
    }
  }

  function loadTimeline(button, timeline) {
    // Busy while it loads, so a screen reader announces the timeline once, when it has arrived.
    timeline.setAttribute("aria-busy", "true");
    timeline.textContent = "Loading the timeline…";
    // The list says where timelines are ("/emails/{}/timeline"): once, not on each of its rows.
    const pattern = button.closest("[data-timeline-url]").dataset.timelineUrl;
    const id = button.getAttribute("aria-controls").replace("timeline-", "");
    htmx.ajax("GET", pattern.replace("{}", id), { source: button, target: timeline, swap: "innerHTML" });
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    const target = event.detail.target;
    if (!target || !target.classList || !target.classList.contains("timeline")) return;
    target.removeAttribute("aria-busy");
    if (event.detail.successful) {
      target.setAttribute("data-loaded", "");
    } else {
      target.textContent = "The timeline could not be loaded. Close and open it again to retry.";
    }
  });

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest(".toggle[aria-controls]");
    if (toggle) setTimeline(toggle, toggle.getAttribute("aria-expanded") !== "true");
    const copy = event.target.closest("[data-copy-target]");
    if (copy) copyText(copy);
    if (event.target.closest("[data-close-help]")) closeHelp();
    const badge = event.target.closest("[data-help-badge]");
    if (badge) lastBadgeId = badge.id;
  });

  // --- "updated N s ago" and relative times ----------------------------------------------------
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
      const age = Math.max(0, Math.round(now - Number(updated.dataset.checkedAt)));
      const log = document.getElementById("email-log");
      const interval = pollSeconds(log) || 30;
      // Missed several refreshes in a row (offline, server down): say so rather than look alive.
      const stale = document.visibilityState === "visible" && age > 3 * interval + 10;
      updated.classList.toggle("stale", stale);
      updated.querySelector(".updated-text").textContent =
        (stale ? "not updated since " : "updated ") + relative(age);
    }
    document.querySelectorAll("time[data-relative]").forEach(function (time) {
      const then = Date.parse(time.getAttribute("datetime")) / 1000;
      if (!isNaN(then)) time.textContent = relative(Math.max(0, Math.round(now - then)));
    });
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    const elt = event.detail.elt;
    if (!elt || elt.id !== "email-log") return;
    // A 204 ("nothing changed") is a successful check too.
    if (event.detail.successful) markChecked();
    // The log was not replaced (204, an error): a poll asked for meanwhile goes now. (A replaced
    // log asks it when the new one is loaded.)
    if (elt.isConnected) pollIfWanted();
  });

  // --- The help panel opens beside the log and closes from the keyboard ----------------------
  let lastBadgeId = null;

  function closeHelp() {
    const panel = document.getElementById("help-panel");
    if (!panel || panel.hidden) return;
    panel.hidden = true;
    panel.innerHTML = "";
    document.body.classList.remove("help-open");
    // The log may have been refreshed meanwhile: find the badge again by its id.
    const badge = lastBadgeId && document.getElementById(lastBadgeId);
    if (badge) badge.focus();
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeHelp();
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    const target = event.detail.target;
    if (target && target.id === "help-panel") {
      target.hidden = false;
      document.body.classList.add("help-open");
      target.focus({ preventScroll: true });
      // On a narrow screen the panel sits above the log: bring its top into view.
      const top = target.getBoundingClientRect().top;
      if (top < 0 || top > window.innerHeight - 80) target.scrollIntoView({ block: "start" });
    }
  });

  // --- Copy the instructions for the client ----------------------------------------------------
  function copyText(button) {
    const source = document.getElementById(button.dataset.copyTarget);
    const status = button.parentElement.querySelector(".copy-status");
    if (!source) return;
    function selectInstead() {
      const details = source.closest("details");
      if (details) details.open = true;
      window.getSelection().selectAllChildren(source);
      if (status) status.textContent = "The text is selected: copy it with Ctrl+C (⌘C on a Mac).";
    }
    if (!navigator.clipboard) { selectInstead(); return; }
    navigator.clipboard.writeText(source.textContent.trim()).then(
      function () { if (status) status.textContent = "Copied. Paste it into a message to the client."; },
      selectInstead
    );
  }

  // --- The send form shows the fields of the chosen kind -------------------------------------------
  // Without JavaScript every group shows, each saying which kinds it is for. Here the groups the
  // chosen kind does not use are hidden and disabled, so what they hold is not sent either.
  function showKindFields(form) {
    const select = form.querySelector("#kind");
    if (!select) return;
    form.querySelectorAll("[data-kinds]").forEach(function (group) {
      const used = group.dataset.kinds.split(" ").indexOf(select.value) !== -1;
      group.hidden = !used;
      if (group.tagName === "FIELDSET") group.disabled = !used;
      else group.querySelectorAll("input, select, textarea, button").forEach(function (control) {
        if (control.closest("[data-kinds]") === group) control.disabled = !used;
      });
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.id === "kind" && event.target.form) showKindFields(event.target.form);
  });

  // A preview the form refused comes back as the form with its mistakes (422), and one past the
  // preview limit as what to wait for (429): show either in place.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const elt = event.detail.requestConfig && event.detail.requestConfig.elt;
    const status = event.detail.xhr.status;
    if ((status === 422 || status === 429) && elt && elt.closest && elt.closest("#send-email")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // --- Every swap and the first load ------------------------------------------------------------
  document.addEventListener("htmx:load", function (event) {
    const elt = event.detail.elt;
    const sendForm = elt.querySelector ? elt.querySelector("#send-email form") : null;
    if (sendForm) showKindFields(sendForm);
    else if (elt.closest && elt.closest("#send-email form")) showKindFields(elt.closest("#send-email form"));
    if (elt.id === "email-log" || (elt.querySelector && elt.querySelector("#email-log"))) {
      restoreLogState();
      renderClock();
      listen();
      schedulePoll();
      pollIfWanted();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    const sendForm = document.querySelector("#send-email form");
    if (sendForm) showKindFields(sendForm);
    renderClock();
    listen();
    schedulePoll();
    setInterval(renderClock, 5000);
  });
})();
