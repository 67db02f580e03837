// The events page's live feed: each event is added to the table as it commits.
//
// The browser's EventSource reads the tenant's Server-Sent Events stream
// (/console/events/stream, the stream /v1/events/stream serves, behind the
// session cookie). It starts after the last event the page shows; when the
// connection drops, EventSource reconnects by itself and sends the id of the
// last event it got (Last-Event-ID), so the server resumes with no gap and no
// duplicate. The page works without this script (a Refresh link); the strict
// CSP allows this one file of this origin and nothing inline, and every value
// goes into the page as text, never as HTML.
"use strict";

(function () {
  const status = document.getElementById("live-status");
  const table = document.getElementById("events-table");
  const body = document.getElementById("events-body");
  if (!status || !table || !body || typeof EventSource !== "function") {
    return;
  }
  const say = (text) => {
    status.textContent = text;
  };
  const source = new EventSource(status.dataset.stream);

  source.addEventListener("open", () => say("Live: new events appear below as they commit."));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      say("Live feed stopped (signed out, or the server refused it): reload the page.");
    } else {
      say("Live feed interrupted: reconnecting…");
    }
  });
  // Too slow to keep up: the server ends the stream; EventSource resumes after
  // the last event it got.
  source.addEventListener("overflow", () => say("Live feed catching up…"));
  for (const type of status.dataset.types.split(",")) {
    source.addEventListener(type, (message) => add(JSON.parse(message.data)));
  }

  function add(event) {
    const row = body.insertRow();
    row.className = "live";
    cell(row, String(event.sequence)).className = "num";
    cell(row, event.type);
    cell(row, event.created_at.replace("T", " ").replace(/Z$/, "") + " UTC");
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(sorted(event.data), null, 2);
    row.insertCell().appendChild(pre);
    table.hidden = false;
    const none = document.getElementById("no-events");
    if (none) {
      none.hidden = true;
    }
  }

  function cell(row, text) {
    const td = row.insertCell();
    td.textContent = text;
    return td;
  }

  // Keys in order, as the server renders the rows it shows (json.dumps sort_keys).
  function sorted(value) {
    if (Array.isArray(value)) {
      return value.map(sorted);
    }
    if (value !== null && typeof value === "object") {
      const out = {};
      for (const key of Object.keys(value).sort()) {
        out[key] = sorted(value[key]);
      }
      return out;
    }
    return value;
  }
})();
