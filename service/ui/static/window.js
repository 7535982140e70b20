// Flagged-window page: its spectrogram beside its nearest normal baseline windows', audio for
// both, the band explanation, and label feedback. The event page reuses reviewWindow().
import { api, audioPlayer, clear, el, errorBox, fmtHz, fmtRatio, fmtTime, listenButton, melPosition, setTitle, spectrogramFigure, svg, timeEl } from "./app.js";

const SHOWN_NEIGHBOURS = 3;

function explanationChart(expl) {
  const narrow = window.innerWidth < 700;
  const W = narrow ? 420 : 800;
  const H = narrow ? 260 : 220;
  const pad = { left: 40, right: 8, top: 10, bottom: 44 };
  const bands = expl.bands;
  const top = Math.max(6, ...bands.map((b) => b.deviation)) * 1.08;
  const bw = (W - pad.left - pad.right) / bands.length;
  const y = (v) => H - pad.bottom - (Math.min(v, top) / top) * (H - pad.top - pad.bottom);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "band-chart", role: "img", "aria-label": `Deviation per frequency band. ${expl.summary}` });
  const step = top > 40 ? 10 : top > 15 ? 5 : 2;
  for (let v = 0; v <= top; v += step) {
    root.append(svg("line", { x1: pad.left, x2: W - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: pad.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end", text: `${v}σ` }));
  }
  const hot = new Set();
  for (const r of expl.top) bands.forEach((b, i) => b.low_hz >= r.low_hz - 0.5 && b.high_hz <= r.high_hz + 0.5 && hot.add(i));
  bands.forEach((b, i) => {
    const z = Object.entries(b.z)
      .map(([s, v]) => `${s} ${v >= 0 ? "+" : ""}${v.toFixed(1)}σ`)
      .join(", ");
    root.append(
      svg(
        "rect",
        { x: pad.left + i * bw + 1, y: y(b.deviation), width: Math.max(1, bw - 2), height: Math.max(0.5, y(0) - y(b.deviation)), class: hot.has(i) ? "bar hot" : b.deviation >= 3 ? "bar warm" : "bar" },
        svg("title", { text: `${fmtHz(b.low_hz)} to ${fmtHz(b.high_hz)}: ${b.deviation.toFixed(1)}σ (${z})` }),
      ),
    );
    const every = Math.ceil(bands.length / (narrow ? 4 : 8));
    if (i % every === 0) {
      root.append(svg("text", { x: pad.left + i * bw, y: H - pad.bottom + 16, class: "tick", "text-anchor": "start", text: fmtHz(b.low_hz) }));
    }
  });
  root.append(svg("line", { x1: pad.left, x2: W - pad.right, y1: y(3), y2: y(3), class: "threshold" }));
  root.append(svg("text", { x: pad.left + 4, y: y(3) - 4, class: "tick threshold-label", "text-anchor": "start", text: "3σ: outside normal variation" }));
  root.append(svg("text", { x: (W + pad.left) / 2, y: H - 8, class: "tick", "text-anchor": "middle", text: "frequency band (mel scale)" }));
  return root;
}

function bandTable(expl) {
  return el(
    "details",
    { class: "band-table" },
    el("summary", {}, "Every band as a table"),
    el("div", { class: "scroll" }, el(
      "table",
      {},
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Band"), el("th", { scope: "col" }, "Deviation"), expl.stats.map((s) => el("th", { scope: "col" }, `${s} (z)`)))),
      el(
        "tbody",
        {},
        expl.bands.map((b) =>
          el(
            "tr",
            {},
            el("th", { scope: "row" }, `${fmtHz(b.low_hz)} to ${fmtHz(b.high_hz)}`),
            el("td", { class: "num" }, `${b.deviation.toFixed(1)}σ`),
            expl.stats.map((s) => el("td", { class: "num" }, b.z[s].toFixed(1))),
          ),
        ),
      ),
    )),
  );
}

// Brackets beside a spectrogram at the frequency ranges the explanation names.
function markRegions(spec, regions) {
  const body = spec.figure.querySelector(".spec-body");
  regions.forEach((r, i) => {
    const lo = Math.max(0, melPosition(r.low_hz, spec.lowHz, spec.highHz));
    const hi = Math.min(1, melPosition(r.high_hz, spec.lowHz, spec.highHz));
    body.append(
      el("span", {
        class: "band-mark",
        title: r.text,
        style: { bottom: `${(lo * 100).toFixed(2)}%`, height: `${Math.max(1.5, (hi - lo) * 100).toFixed(2)}%` },
        dataset: { rank: i + 1 },
      }),
    );
  });
}

async function explanationSection(windowId, spec) {
  const section = el("section", { class: "card", id: "explanation" }, el("h2", {}, "Which frequencies changed"));
  try {
    const expl = await api(`/v1/windows/${windowId}/explanation?bands=32`);
    if (spec) markRegions(spec, expl.top);
    section.append(
      ...(expl.top.length
        ? [el("h3", { class: "regions-title" }, expl.top.length === 1 ? "Most unusual band" : "Most unusual bands, most deviant first"), el("ol", { class: "regions" }, expl.top.map((r) => el("li", {}, r.text)))]
        : [el("p", { class: "lead" }, expl.summary)]),
      explanationChart(expl),
      el(
        "p",
        { class: "muted small" },
        expl.top.length ? "The numbered brackets beside the flagged window's spectrogram mark these bands. " : "",
        `Per band, how far this window's log-mel statistics (${expl.stats.join(", ")}) lie from baseline v${expl.baseline_version}, in baseline standard deviations.`,
      ),
      bandTable(expl),
    );
  } catch (err) {
    section.append(errorBox(err));
  }
  return section;
}

function feedbackForm(w, onSaved) {
  const note = el("textarea", { id: "fb-note", rows: 2, maxlength: 2000, placeholder: "e.g. planned valve change" });
  const status = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const option = (value, text) =>
    el("label", { class: "choice" }, el("input", { type: "radio", name: "label", value, checked: w.label === value, required: true }), ` ${text}`);
  const form = el(
    "form",
    { id: "feedback", class: "feedback" },
    el(
      "fieldset",
      {},
      el("legend", {}, "What was it?"),
      option("normal", "Normal: it sounds like the machine (joins the next baseline)"),
      option("anomaly", "Anomaly: something was wrong (never joins a baseline)"),
    ),
    el("label", { for: "fb-note" }, "Note (optional)"),
    note,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Save label")),
    status,
  );
  note.value = w.label_note || "";
  if (w.label) status.textContent = `Labelled ${w.label} ${w.labelled_at ? fmtTime(w.labelled_at) : ""}.`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = form.querySelector("input[name=label]:checked")?.value;
    if (!label) return;
    status.textContent = "Saving…";
    try {
      const saved = await api(`/v1/windows/${w.id}/feedback`, { method: "POST", json: { label, note: note.value.trim() || null } });
      status.textContent = `Saved: labelled ${saved.label}.`;
      onSaved?.(saved);
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
  });
  return form;
}

// The comparison, explanation and feedback for one window, appended to ``container``.
export async function reviewWindow(container, windowId, { feedback = true } = {}) {
  const w = await api(`/v1/windows/${windowId}`);
  const facts = el(
    "dl",
    { class: "facts inline" },
    el("dt", {}, "Time"),
    el("dd", {}, timeEl(w.start_at), ` (${((new Date(w.end_at) - new Date(w.start_at)) / 1000).toFixed(1)} s)`),
    el("dt", {}, "Ratio"),
    el("dd", { class: w.is_outlier ? "hot" : "" }, fmtRatio(w.ratio), w.is_outlier ? " (above the threshold)" : w.ratio === null ? " (not scored: enrolling)" : " (normal)"),
    el("dt", {}, "Baseline"),
    el("dd", {}, w.baseline_version ? `v${w.baseline_version}` : "–"),
    el("dt", {}, "Label"),
    el("dd", { id: "current-label" }, w.label || "none"),
  );
  const compare = el("section", { class: "card", id: "compare" }, el("h2", {}, "Compared with its nearest normal windows"));
  const mine = el("div", { class: "mine" });
  const theirs = el("div", { class: "theirs" });
  const others = el("div", { class: "others" });
  const note = el("p", { class: "muted small" });
  compare.append(note, el("div", { class: "compare" }, mine, theirs), others);
  container.append(facts, compare);

  let range = {};
  let mySpec = null;
  if (!w.has_audio) {
    mine.append(el("p", { class: "muted" }, "The audio of this window was pruned by retention: no spectrogram or playback."));
  } else {
    try {
      const spec = await spectrogramFigure(w.id, { caption: `ratio ${fmtRatio(w.ratio)}, ${fmtTime(w.start_at)}` });
      range = { dbMin: spec.dbMin, dbMax: spec.dbMax };
      mySpec = spec;
      mine.append(el("h3", {}, w.is_outlier ? "This flagged window" : "This window"), spec.figure, await audioPlayer(w.id, "this window"));
    } catch (err) {
      mine.append(errorBox(err));
    }
  }
  try {
    const nb = await api(`/v1/windows/${w.id}/neighbours`);
    note.textContent = `The ${nb.neighbours.length} windows of baseline v${nb.baseline_version} nearest to this one, which its score came from: the score is their mean distance, ${nb.mean_distance.toPrecision(4)}, against a threshold of ${nb.threshold.toPrecision(4)}. All pictures share one colour scale; frequency on a mel scale, low at the bottom.`;
    for (const n of nb.neighbours.slice(0, SHOWN_NEIGHBOURS)) {
      const caption = `distance ${n.distance.toPrecision(4)}, ${fmtTime(n.start_at)}`;
      const box = el("div", { class: "neighbour", dataset: { window: n.window_id } }, el("h3", {}, n.rank === 1 ? "Nearest normal window" : `Normal window #${n.rank}`));
      (n.rank === 1 ? theirs : others).append(box);
      if (!n.has_audio) {
        box.append(el("p", { class: "muted" }, `${caption}: audio pruned`));
        continue;
      }
      try {
        const fig = await spectrogramFigure(n.window_id, { ...range, caption });
        box.append(fig.figure, await audioPlayer(n.window_id, `baseline window ${n.rank}`));
      } catch (err) {
        box.append(el("p", {}, caption), errorBox(err));
      }
    }
    const rest = nb.neighbours.slice(SHOWN_NEIGHBOURS);
    if (rest.length) {
      compare.append(
        el(
          "ul",
          { class: "more-neighbours" },
          rest.map((n) => el("li", {}, `#${n.rank}: distance ${n.distance.toPrecision(4)}, `, timeEl(n.start_at), " ", n.has_audio ? listenButton(n.window_id, `baseline window ${n.rank}`) : "(audio pruned)")),
        ),
      );
    }
  } catch (err) {
    theirs.append(errorBox(err));
  }
  container.append(await explanationSection(w.id, mySpec));
  if (feedback) {
    container.append(
      el(
        "section",
        { class: "card", id: "label" },
        el("h2", {}, "Label this window"),
        feedbackForm(w, (saved) => (document.getElementById("current-label").textContent = saved.label)),
      ),
    );
  }
  return w;
}

export async function render(main, data) {
  const id = Number(data.id);
  clear(main);
  const head = el("div", { class: "page-head" }, el("h1", {}, `Window ${id}`));
  const crumbs = el("p", { class: "crumbs" }, el("a", { href: "/ui/" }, "Plant"));
  main.append(crumbs, head);
  try {
    const body = el("div");
    main.append(body);
    const w = await reviewWindow(body, id);
    const machine = await api(`/v1/machines/${encodeURIComponent(w.machine_id)}`);
    setTitle(`${machine.name}: window ${id}`);
    crumbs.append(" / ", el("a", { href: `/ui/machines/${encodeURIComponent(machine.id)}` }, machine.name), ` / window ${id}`);
    head.replaceChildren(
      el("h1", {}, `${machine.name}: ${w.is_outlier ? "flagged window" : "window"}`),
      el("a", { class: "button", href: `/ui/search?window=${id}` }, "Find similar sounds"),
    );
  } catch (err) {
    main.append(errorBox(err));
  }
}
