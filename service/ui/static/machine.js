// Machine page: ratio over time (zoomable) with threshold and events, enrollment and baseline
// coverage, baseline versions, recent flagged windows.
import { api, clear, config, el, errorBox, fmtRatio, fmtShort, fmtTime, listenButton, setTitle, stateBadge, svg, timeEl } from "./app.js";

const RANGES = { "1 h": 3600, "24 h": 86400, "7 d": 7 * 86400 };
const NARROW = window.innerWidth < 700;
const W = NARROW ? 420 : 800;
const H = NARROW ? 280 : 240;
const PAD = { left: 44, right: 12, top: 12, bottom: 28 };
const BUCKETS = 160;

function fmtAxis(ms, span) {
  const d = new Date(ms);
  if (span <= 2 * 86400) return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString(undefined, { hour: "2-digit" });
}

function chart(series, events, { selected, onSelect, onZoom }) {
  const from = new Date(series.from).getTime();
  const to = new Date(series.to).getTime();
  const span = (to - from) / 1000;
  const points = series.points;
  const maxes = points.map((p) => p.max_ratio).filter((v) => v !== null);
  const top = Math.max(2, ...maxes) * 1.08;
  const x = (ms) => PAD.left + ((ms - from) / (to - from)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (Math.min(v, top) / top) * (H - PAD.top - PAD.bottom);
  const bw = Math.max(1, ((series.bucket_seconds * 1000) / (to - from)) * (W - PAD.left - PAD.right));
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "ratio-chart",
    role: "img",
    tabindex: 0,
    "aria-label": `Score ratio from ${fmtTime(series.from)} to ${fmtTime(series.to)}; ${maxes.length ? `highest ${fmtRatio(Math.max(...maxes))}` : "no scored windows"}. Left and right arrows pick a time, Enter lists its windows, plus and minus zoom.`,
  });
  // grid and y axis
  const step = top > 10 ? 5 : top > 4 ? 1 : 0.5;
  for (let v = 0; v <= top; v += step) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end", text: v.toFixed(step < 1 ? 1 : 0) }));
  }
  const ticks = NARROW ? 3 : 5;
  for (let i = 0; i <= ticks; i++) {
    const ms = from + ((to - from) * i) / ticks;
    root.append(svg("text", { x: x(ms), y: H - 8, class: "tick", "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle", text: fmtAxis(ms, span) }));
  }
  // events as shaded spans
  for (const e of events) {
    const a = Math.max(from, new Date(e.opened_at).getTime());
    const b = Math.min(to, e.resolved_at ? new Date(e.resolved_at).getTime() : to);
    if (b <= a) continue;
    root.append(svg("rect", { x: x(a), y: PAD.top, width: Math.max(2, x(b) - x(a)), height: H - PAD.top - PAD.bottom, class: `event sev-${e.severity || "warning"}` }, svg("title", { text: `event ${e.id}: ${e.severity} ${e.state || ""}` })));
  }
  // max ratio bars, mean line, outliers
  let mean = "";
  let previous = null;
  for (const p of points) {
    const ms = new Date(p.start).getTime();
    if (p.max_ratio !== null) {
      root.append(svg("rect", { x: x(ms), y: y(p.max_ratio), width: bw, height: Math.max(0.5, y(0) - y(p.max_ratio)), class: p.outliers ? "bar hot" : "bar" }, svg("title", { text: `${fmtTime(p.start)}: ${p.n} windows, ${p.outliers} flagged, highest ratio ${fmtRatio(p.max_ratio)}, mean ${fmtRatio(p.mean_ratio)}` })));
      // The mean line breaks across buckets without windows.
      const joined = previous !== null && ms - previous <= series.bucket_seconds * 1000 * 1.01;
      mean += `${joined ? "L" : "M"}${(x(ms) + bw / 2).toFixed(1)},${y(p.mean_ratio).toFixed(1)}`;
      previous = ms;
    }
  }
  if (mean) root.append(svg("path", { d: mean, class: "mean" }));
  root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(1), y2: y(1), class: "threshold" }));
  root.append(svg("text", { x: PAD.left + 4, y: y(1) - 4, class: "tick threshold-label", "text-anchor": "start", text: "threshold (ratio 1)" }));
  if (!maxes.length) root.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle", text: "no scored windows in this range" }));
  // selection cursor
  if (selected !== null && points[selected]) {
    const ms = new Date(points[selected].start).getTime();
    root.append(svg("rect", { x: x(ms) - 1, y: PAD.top, width: bw + 2, height: H - PAD.top - PAD.bottom, class: "cursor" }));
  }
  // pointer: click selects a bucket, drag zooms
  const toMs = (event) => {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    return from + ((px - PAD.left) / (W - PAD.left - PAD.right)) * (to - from);
  };
  let dragStart = null;
  let band = null;
  root.addEventListener("pointerdown", (event) => {
    dragStart = toMs(event);
    root.setPointerCapture(event.pointerId);
  });
  root.addEventListener("pointermove", (event) => {
    if (dragStart === null) return;
    const now = toMs(event);
    band?.remove();
    band = svg("rect", { x: x(Math.min(dragStart, now)), y: PAD.top, width: Math.abs(x(now) - x(dragStart)), height: H - PAD.top - PAD.bottom, class: "zoomband" });
    root.append(band);
  });
  root.addEventListener("pointerup", (event) => {
    if (dragStart === null) return;
    const end = toMs(event);
    const a = Math.min(dragStart, end);
    const b = Math.max(dragStart, end);
    dragStart = null;
    band?.remove();
    if (Math.abs(x(b) - x(a)) > 6) onZoom(a, b);
    else {
      let best = null;
      points.forEach((p, i) => {
        const s = new Date(p.start).getTime();
        if (s <= a && a < s + series.bucket_seconds * 1000) best = i;
      });
      if (best !== null) onSelect(best);
    }
  });
  return root;
}

async function flaggedTable(machineId, container, { from, to, title }) {
  const params = new URLSearchParams({ outliers_only: "true", limit: "20" });
  if (from) params.set("from", new Date(from).toISOString());
  if (to) params.set("to", new Date(to).toISOString());
  let cursor = null;
  const tbody = el("tbody");
  const more = el("button", { type: "button", class: "small", hidden: true }, "Older flagged windows");
  const load = async () => {
    if (cursor) params.set("cursor", cursor);
    const page = await api(`/v1/machines/${encodeURIComponent(machineId)}/windows?${params}`);
    for (const w of page.items) {
      tbody.append(
        el(
          "tr",
          {},
          el("td", { "data-label": "Window" }, el("a", { href: `/ui/windows/${w.id}` }, timeEl(w.start_at, true, true))),
          el("td", { class: "num hot", "data-label": "Ratio" }, fmtRatio(w.ratio)),
          el("td", { "data-label": "Label" }, w.label ? el("span", { class: `badge label-${w.label}` }, w.label) : el("span", { class: "muted" }, "unlabelled")),
          el("td", { "data-label": "Audio" }, w.has_audio ? listenButton(w.id, `window of ${fmtTime(w.start_at)}`) : el("span", { class: "muted" }, "audio pruned")),
        ),
      );
    }
    if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No flagged windows in this range.")));
    cursor = page.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load().catch((err) => container.append(errorBox(err))));
  clear(container).append(
    el("h2", {}, title),
    el("div", { class: "scroll" }, el("table", { class: "windows stack" }, el("thead", {}, el("tr", {}, ["Window", "Ratio", "Label", "Audio"].map((h) => el("th", { scope: "col" }, h)))), tbody)),
    more,
  );
  await load();
}

async function eventsSection(machineId) {
  const section = el("section", { class: "card", id: "events" }, el("h2", {}, "Events"));
  try {
    const page = await api(`/v1/events?machine=${encodeURIComponent(machineId)}&limit=20`);
    if (!page.items.length) {
      section.append(el("p", { class: "muted" }, "No events: nothing persisted long enough to open one."));
      return section;
    }
    section.append(
      el(
        "div",
        { class: "scroll" },
        el(
          "table",
          { class: "events stack" },
          el("thead", {}, el("tr", {}, ["Opened", "What", "State", "Peak ratio", "Outcome"].map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            page.items.map((e) =>
              el(
                "tr",
                {},
                el("td", { "data-label": "Opened" }, el("a", { href: `/ui/events/${e.id}` }, timeEl(e.opened_at, true, true))),
                el("td", { "data-label": "What" }, el("span", { class: `badge ${e.kind === "sensor" ? "kind-sensor" : `state-${e.severity}`}` }, e.kind === "sensor" ? `sensor: ${e.cause || "fault"}` : e.severity)),
                el("td", { "data-label": "State" }, el("span", { class: `badge event-${e.state}` }, e.state), e.acknowledgement ? el("span", { class: "muted small" }, ` ack. ${e.acknowledgement.by}`) : null),
                el("td", { class: "num", "data-label": "Peak ratio" }, fmtRatio(e.peak_ratio)),
                el("td", { "data-label": "Outcome" }, e.close ? `${e.close.disposition.replace("_", " ")} (${e.close.by})` : el("span", { class: "muted" }, "–")),
              ),
            ),
          ),
        ),
      ),
    );
  } catch (err) {
    section.append(errorBox(err));
  }
  return section;
}

function baselinesTable(baselines) {
  if (!baselines.length) return el("p", { class: "muted" }, "No baseline yet: it is built when enrollment completes.");
  return el("div", { class: "scroll" }, el(
    "table",
    { class: "baselines stack" },
    el("thead", {}, el("tr", {}, ["Version", "Built", "From", "Material", "Threshold", "Why"].map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      baselines
        .slice()
        .reverse()
        .map((b) =>
          el(
            "tr",
            { class: b.active ? "active" : "" },
            el("td", { "data-label": "Version" }, `v${b.version}`, b.active ? el("span", { class: "badge state-ok" }, "active") : null),
            el("td", { "data-label": "Built" }, timeEl(b.created_at, false, true)),
            el("td", { "data-label": "From" }, b.source_filter?.source === "enrollment" ? "automatically, at enrollment" : b.source_filter?.source === "rebuild" ? "rebuilt by an admin" : b.source_filter?.source || "–"),
            el("td", { "data-label": "Material" }, `${b.n_vectors} windows of ${b.n_recordings} recordings`, el("br"), el("span", { class: "muted" }, `${fmtShort(b.source_from)} to ${fmtShort(b.source_to)}`)),
            el("td", { class: "num", "data-label": "Threshold" }, thresholdText(b), el("br"), el("span", { class: "muted" }, `${(b.false_alarm_rate * 100).toFixed(1)} % target false alarms`)),
            el("td", { "data-label": "Why" }, b.note || el("span", { class: "muted" }, "no note")),
          ),
        ),
    ),
  ));
}

// A baseline fitted within an operating condition has one threshold per value (its scores
// are ratios, so its own threshold is 1): list them.
function thresholdText(b) {
  const method = b.threshold_method || {};
  if (method.rule !== "within condition") return b.threshold.toPrecision(4);
  const parts = (method.conditions || []).map((c) => `${c.pooled ? "others" : `${method.condition}=${c.value}`} ${Number(c.threshold).toPrecision(4)}`);
  return `per condition: ${parts.join(", ")}`;
}

// What the baseline material covers (the machine resource's ``coverage``): runs, their
// span and, while enrolling, how many runs enrollment waits for.
function runsText(machine) {
  const cov = machine.coverage;
  if (!cov) return "–";
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const needed = machine.state === "enrolling" && machine.enrollment_runs ? ` of ${machine.enrollment_runs} needed` : "";
  const span = cov.first_at ? `, ${fmtTime(cov.first_at, false)} to ${fmtTime(cov.last_at, false)}` : "";
  return `${plural(cov.runs, "run")}${needed} (${plural(cov.recordings, "recording")})${span}`;
}

function conditionsFacts(machine) {
  const seen = Object.entries(machine.coverage?.conditions || {});
  if (!seen.length) return [];
  return [el("dt", {}, "Conditions seen"), el("dd", {}, seen.map(([name, values]) => `${name}: ${values.join(", ")}`).join("; "))];
}

function learningText(machine, now = Date.now()) {
  if (!machine.learning_days) return "off: the baseline changes only when rebuilt";
  if (!machine.learning_until) return `${machine.learning_days} days after enrollment: runs that sound normal join the next baseline version`;
  if (new Date(machine.learning_until).getTime() > now) {
    return `until ${fmtTime(machine.learning_until, false)}: runs that sound normal join the next baseline version`;
  }
  return `ended ${fmtTime(machine.learning_until, false)}`;
}

export async function render(main, data) {
  const id = data.id;
  let machine;
  let baselines;
  try {
    [machine, baselines] = await Promise.all([api(`/v1/machines/${encodeURIComponent(id)}`), api(`/v1/machines/${encodeURIComponent(id)}/baselines`)]);
  } catch (err) {
    clear(main).append(el("p", {}, el("a", { href: "/ui/" }, "← Plant")), errorBox(err));
    return;
  }
  setTitle(machine.name);
  const active = baselines.find((b) => b.active);
  const minEnroll = config.min_enrollment_seconds || 0;
  const enrolledPct = minEnroll ? Math.min(100, (100 * machine.enrolled_seconds) / minEnroll) : 100;
  let range = { to: Date.now(), span: RANGES["24 h"] };
  let selected = null;
  let series = null;
  const chartBox = el("div", { class: "chart-box" });
  const rangeButtons = el("div", { class: "segmented", role: "group", "aria-label": "Time range" });
  const windowsBox = el("section", { class: "card", id: "flagged" });
  const chartStatus = el("p", { class: "muted small", role: "status", "aria-live": "polite" });

  const drawChart = async () => {
    const from = range.to - range.span * 1000;
    const params = new URLSearchParams({ from: new Date(from).toISOString(), to: new Date(range.to).toISOString(), buckets: BUCKETS });
    try {
      series = await api(`/v1/machines/${encodeURIComponent(id)}/ratio-series?${params}`);
      let events = [];
      if (config.events) {
        try {
          const ev = await api(`/v1/events?machine=${encodeURIComponent(id)}&from=${params.get("from")}&to=${params.get("to")}&limit=200`);
          events = ev.items || [];
        } catch (_) {
          events = [];
        }
      }
      const svgNode = chart(series, events, {
        selected,
        onSelect: (i) => select(i),
        onZoom: (a, b) => {
          range = { to: b, span: Math.max(60, (b - a) / 1000) };
          selected = null;
          drawChart();
        },
      });
      svgNode.addEventListener("keydown", (event) => keyNav(event));
      clear(chartBox).append(svgNode);
      for (const b of rangeButtons.children) b.setAttribute("aria-pressed", String(RANGES[b.dataset.range] === range.span && Math.abs(Date.now() - range.to) < 120000));
      const total = series.points.reduce((s, p) => s + p.n, 0);
      const flagged = series.points.reduce((s, p) => s + p.outliers, 0);
      chartStatus.textContent = `${total} windows, ${flagged} flagged, in ${series.points.length ? "this range" : "no bucket"}; bars: highest ratio per ${Math.round(series.bucket_seconds)} s, line: mean.`;
    } catch (err) {
      clear(chartBox).append(errorBox(err));
    }
  };
  const select = (i) => {
    selected = i;
    const p = series.points[i];
    const start = new Date(p.start).getTime();
    drawChart().then(() => chartBox.querySelector("svg")?.focus());
    flaggedTable(id, windowsBox, { from: start, to: start + series.bucket_seconds * 1000, title: `Flagged windows ${fmtTime(p.start, false)} (+${Math.round(series.bucket_seconds)} s)` }).catch((err) => windowsBox.append(errorBox(err)));
  };
  const zoom = (factor) => {
    const centre = selected !== null && series.points[selected] ? new Date(series.points[selected].start).getTime() : range.to - (range.span * 1000) / 2;
    const span = Math.max(60, Math.min(400 * 86400, range.span * factor));
    range = { to: Math.min(Date.now(), centre + (span * 1000) / 2), span };
    selected = null;
    drawChart();
  };
  const shift = (direction) => {
    range = { ...range, to: Math.min(Date.now(), range.to + direction * range.span * 500) };
    selected = null;
    drawChart();
  };
  const keyNav = (event) => {
    if (!series || !series.points.length) return;
    if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      event.preventDefault();
      const n = series.points.length;
      selected = selected === null ? n - 1 : (selected + (event.key === "ArrowRight" ? 1 : n - 1)) % n;
      drawChart().then(() => chartBox.querySelector("svg")?.focus());
    } else if (event.key === "Enter" && selected !== null) {
      select(selected);
    } else if (event.key === "+" || event.key === "=") zoom(0.5);
    else if (event.key === "-") zoom(2);
  };
  for (const name of Object.keys(RANGES)) {
    rangeButtons.append(
      el("button", { type: "button", dataset: { range: name }, onclick: () => ((range = { to: Date.now(), span: RANGES[name] }), (selected = null), drawChart()) }, `Last ${name}`),
    );
  }
  const tools = el(
    "div",
    { class: "chart-tools" },
    rangeButtons,
    el(
      "div",
      { class: "segmented", role: "group", "aria-label": "Zoom and move" },
      el("button", { type: "button", onclick: () => shift(-1), "aria-label": "Earlier" }, "◀ Earlier"),
      el("button", { type: "button", onclick: () => zoom(0.5), "aria-label": "Zoom in" }, "Zoom in"),
      el("button", { type: "button", onclick: () => zoom(2), "aria-label": "Zoom out" }, "Zoom out"),
      el("button", { type: "button", onclick: () => shift(1), "aria-label": "Later" }, "Later ▶"),
    ),
  );

  clear(main).append(
    el("p", { class: "crumbs" }, el("a", { href: "/ui/" }, "Plant"), ` / ${machine.site || "(no site)"} / ${machine.area || "(no area)"}`),
    el("div", { class: "page-head" }, el("h1", {}, machine.name), stateBadge(machine.health || machine.state), machine.name !== machine.id ? el("span", { class: "muted" }, machine.id) : null),
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Score ratio"),
      tools,
      chartBox,
      chartStatus,
      el("p", { class: "muted small" }, "Drag across the chart to zoom in; click a bar (or use the arrow keys and Enter) to list its flagged windows."),
    ),
    el(
      "div",
      { class: "columns" },
      el(
        "section",
        { class: "card" },
        el("h2", {}, "Enrollment and baseline"),
        el(
          "dl",
          { class: "facts" },
          el("dt", {}, "Type"),
          el("dd", {}, machine.machine_type || "–"),
          el("dt", {}, "Enrolled audio"),
          el("dd", {}, `${Math.round(machine.enrolled_seconds)} s`, minEnroll ? ` of ${Math.round(minEnroll)} s needed` : "", el("progress", { max: 100, value: enrolledPct.toFixed(0), "aria-label": "enrollment progress" })),
          el("dt", {}, "Runs covered"),
          el("dd", {}, runsText(machine)),
          ...conditionsFacts(machine),
          el("dt", {}, "Learning period"),
          el("dd", {}, learningText(machine)),
          el("dt", {}, "Active baseline"),
          el("dd", {}, active ? `v${active.version}: ${active.n_vectors} windows of ${active.n_recordings} recordings, ${fmtTime(active.source_from, false)} to ${fmtTime(active.source_to, false)}` : "none yet"),
          el("dt", {}, "Detection"),
          el("dd", {}, `${machine.embedder.name} embedder, ${machine.window_seconds} s windows every ${machine.hop_seconds} s, k = ${machine.k}, ${machine.metric}`, spacesNote(machine, active)),
        ),
      ),
      el("section", { class: "card" }, el("h2", {}, "Baseline versions"), baselinesTable(baselines)),
    ),
    windowsBox,
  );
  await drawChart();
  if (config.events) windowsBox.before(await eventsSection(id));
  await flaggedTable(id, windowsBox, { title: "Recent flagged windows" }).catch((err) => windowsBox.append(errorBox(err)));
}

// How the active baseline scores: in one space, or in two (per dimension and per statistic
// block, the larger ratio counting), as its threshold_method says.
function spacesNote(machine, active) {
  const spaces = active && active.threshold_method && active.threshold_method.spaces;
  if (spaces && spaces.length > 1) {
    return `; scored in two spaces (per dimension and per ${machine.block_space || "statistic"}-band statistic block, the larger ratio counts)`;
  }
  if (machine.block_space) return "; two spaces once a baseline holds enough runs to be whitened";
  return "";
}
