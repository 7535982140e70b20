// Event page: what opened, its windows (one reviewed in full: spectrogram beside its nearest
// normal windows, audio, band explanation), acknowledge and close with a disposition, and the
// history of who did what.
import { api, clear, el, errorBox, fmtRatio, fmtShort, fmtTime, setTitle, stateBadge, timeEl } from "./app.js";
import { reviewWindow } from "./window.js";

const DISPOSITIONS = {
  confirmed_fault: "Confirmed fault: its windows are labelled anomaly and never join a baseline",
  false_alarm: "False alarm: its windows are labelled normal and join the next baseline",
  planned_work: "Planned work (maintenance, a changeover): no labels",
  sensor_issue: "Sensor issue (microphone, cable, network): no labels",
};
const BY_KEY = "humwatch.by";

function eventBadges(e) {
  return [
    el("span", { class: `badge kind-${e.kind}` }, e.kind === "sensor" ? `sensor: ${e.cause || "fault"}` : "machine anomaly"),
    el("span", { class: `badge state-${e.severity}` }, e.severity),
    el("span", { class: `badge event-${e.state}` }, e.state),
    e.acknowledgement ? el("span", { class: "badge" }, "acknowledged") : null,
  ];
}

// What opened an anomaly event (the API's ``evidence``), in the engineer's words.
const EVIDENCE_WORDS = {
  windows: "windows well above the threshold",
  sustained: "sustained: an hour of windows just above the threshold",
};

function timeline(e) {
  const on = (t) => (t.evidence === "sustained" ? " on sustained evidence" : "");
  const words = {
    open: (t) => `opened as ${t.severity || "warning"}${t.cause ? ` (${t.cause})` : ""}${on(t)}`,
    escalate: (t) => `escalated to ${t.severity}`,
    resolve: () => "went quiet (resolved by itself)",
    reopen: (t) => `reopened: the evidence came back${on(t)}`,
    acknowledge: (t) => `acknowledged by ${t.by}`,
    close: (t) => `closed by ${t.by} as ${String(t.disposition || "").replace("_", " ")}`,
  };
  return el(
    "ol",
    { class: "timeline" },
    e.timeline.map((t) =>
      el(
        "li",
        { class: `tl-${t.action}` },
        timeEl(t.at, true, true),
        " ",
        el("strong", {}, (words[t.action] || (() => t.action))(t)),
        t.comment ? el("span", { class: "muted" }, ` “${t.comment}”`) : null,
        t.reason ? el("span", { class: "muted" }, ` “${t.reason}”`) : null,
      ),
    ),
  );
}

function actionForms(e, onChange) {
  const box = el("div", { class: "event-actions" });
  const remembered = localStorage.getItem(BY_KEY) || "";
  const status = el("p", { role: "status", "aria-live": "polite", class: "muted" });
  const remember = (by) => localStorage.setItem(BY_KEY, by);
  if (e.state !== "closed" && !e.acknowledgement) {
    const by = el("input", { id: "ack-by", required: true, maxlength: 200, autocomplete: "name", value: remembered });
    const comment = el("input", { id: "ack-comment", maxlength: 2000, placeholder: "e.g. on my way, checking the belt" });
    const form = el(
      "form",
      { id: "acknowledge", class: "inline-form" },
      el("h3", {}, "Acknowledge"),
      el("div", { class: "field" }, el("label", { for: "ack-by" }, "Your name"), by),
      el("div", { class: "field grow" }, el("label", { for: "ack-comment" }, "Comment"), comment),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Acknowledge")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        remember(by.value.trim());
        await api(`/v1/events/${e.id}/acknowledge`, { method: "POST", json: { by: by.value.trim(), comment: comment.value.trim() || null } });
        onChange("Acknowledged.");
      } catch (err) {
        status.replaceChildren(errorBox(err));
      }
    });
    box.append(form);
  }
  if (e.state !== "closed") {
    const by = el("input", { id: "close-by", required: true, maxlength: 200, autocomplete: "name", value: remembered });
    const reason = el("textarea", { id: "close-reason", rows: 2, maxlength: 2000, placeholder: "what it was, what was done" });
    const choices = Object.entries(DISPOSITIONS).map(([value, text]) =>
      el("label", { class: "choice" }, el("input", { type: "radio", name: "disposition", value, required: true }), ` ${text}`),
    );
    const form = el(
      "form",
      { id: "close", class: "close-form" },
      el("h3", {}, "Close with a disposition"),
      el("fieldset", {}, el("legend", {}, "What was it?"), choices),
      el("div", { class: "field" }, el("label", { for: "close-by" }, "Your name"), by),
      el("div", { class: "field" }, el("label", { for: "close-reason" }, "Reason"), reason),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Close event")),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const disposition = form.querySelector("input[name=disposition]:checked")?.value;
      if (!disposition) return;
      try {
        remember(by.value.trim());
        const out = await api(`/v1/events/${e.id}/close`, {
          method: "POST",
          json: { by: by.value.trim(), disposition, reason: reason.value.trim() || null },
        });
        onChange(`Closed as ${disposition.replace("_", " ")}; ${out.labelled_windows} windows labelled.`);
      } catch (err) {
        status.replaceChildren(errorBox(err));
      }
    });
    box.append(form);
  } else {
    box.append(el("p", {}, `Closed by ${e.close.by} ${fmtTime(e.close.at)} as ${e.close.disposition.replace("_", " ")}.`, e.close.reason ? ` “${e.close.reason}”` : ""));
  }
  box.append(status);
  return box;
}

function windowStrip(windows, chosen, onPick) {
  return el(
    "div",
    { class: "scroll event-windows-box", tabindex: "0", "aria-label": "The event's windows" },
    el(
      "table",
      { class: "event-windows" },
      el("thead", {}, el("tr", {}, ["Window", "Ratio", "Label", ""].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        windows.map((w) =>
          el(
            "tr",
            { class: w.id === chosen ? "chosen" : "", dataset: { window: w.id } },
            el("td", {}, timeEl(w.start_at, true, true)),
            el("td", { class: `num ${w.is_outlier ? "hot" : ""}` }, fmtRatio(w.ratio)),
            el("td", {}, w.label || el("span", { class: "muted" }, "–")),
            el("td", {}, el("button", { type: "button", class: "small", "aria-pressed": String(w.id === chosen), onclick: () => onPick(w.id) }, w.id === chosen ? "Shown below" : "Review")),
          ),
        ),
      ),
    ),
  );
}

export async function render(main, data) {
  const id = Number(data.id);
  let e;
  try {
    e = await api(`/v1/events/${id}?windows_limit=500`);
  } catch (err) {
    clear(main).append(
      el("h1", {}, `Event ${id}`),
      errorBox(err),
      el("p", {}, "Review flagged windows from the ", el("a", { href: "/ui/" }, "plant page"), "."),
    );
    return;
  }
  const machine = await api(`/v1/machines/${encodeURIComponent(e.machine_id)}`);
  setTitle(`${machine.name}: event ${id}`);
  const peak = e.windows.reduce((best, w) => (w.ratio !== null && (best === null || w.ratio > best.ratio) ? w : best), null);
  let chosen = (peak || e.windows[0] || {}).id;
  const review = el("div", { id: "event-review" });
  const strip = el("div");
  const drawReview = async () => {
    strip.replaceChildren(windowStrip(e.windows, chosen, (wid) => {
      chosen = wid;
      drawReview();
    }));
    clear(review);
    if (chosen) {
      try {
        await reviewWindow(review, chosen, { feedback: false });
      } catch (err) {
        review.append(errorBox(err));
      }
    }
  };
  const refresh = async (message) => {
    await render(main, data);
    const status = document.querySelector(".event-actions [role=status]");
    if (status && message) status.textContent = message;
  };
  clear(main).append(
    el("p", { class: "crumbs" }, el("a", { href: "/ui/" }, "Plant"), " / ", el("a", { href: `/ui/machines/${encodeURIComponent(machine.id)}` }, machine.name), ` / event ${id}`),
    el("div", { class: "page-head" }, el("h1", {}, `${machine.name}: ${e.kind === "sensor" ? "sensor event" : "event"} ${id}`), ...eventBadges(e)),
    el(
      "dl",
      { class: "facts inline" },
      el("dt", {}, "Opened"),
      el("dd", {}, timeEl(e.opened_at)),
      el("dt", {}, e.escalated_at ? "Alarm since" : "Resolved"),
      el("dd", {}, e.escalated_at ? timeEl(e.escalated_at) : e.resolved_at ? timeEl(e.resolved_at) : "still open"),
      el("dt", {}, "Peak / mean ratio"),
      el("dd", { class: e.peak_ratio > 1 ? "hot" : "" }, `${fmtRatio(e.peak_ratio)} / ${fmtRatio(e.mean_ratio)}`),
      el("dt", {}, "Windows"),
      el("dd", {}, `${e.n_windows}${e.windows_truncated ? ` (first ${e.windows.length} listed)` : ""}`),
      ...(e.evidence ? [el("dt", {}, "Opened on"), el("dd", { class: "evidence" }, EVIDENCE_WORDS[e.evidence] || e.evidence)] : []),
    ),
    el("div", { class: "columns two" }, el("section", { class: "card", id: "actions" }, el("h2", {}, "Respond"), actionForms(e, refresh)), el("section", { class: "card", id: "history" }, el("h2", {}, "History"), timeline(e))),
    el("section", { class: "card", id: "event-windows" }, el("h2", {}, "Its windows"), el("p", { class: "muted small" }, `From ${fmtShort(e.windows[0]?.start_at)}. The window with the highest ratio is shown below the list; Review shows another.`), strip),
    review,
  );
  await drawReview();
}
