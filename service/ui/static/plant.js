// Plant page: every machine grouped by site and area, its state, last audio and ratio trend.
import { api, clear, el, errorBox, fmtAgo, fmtRatio, setTitle, sparkline, stateBadge } from "./app.js";

const STALE_SECONDS = 15 * 60;
const REFRESH_MS = 30_000;
const TRENDS = {
  "1 h": { hours: 1, buckets: 60, bucketWords: "minute" },
  "24 h": { hours: 24, buckets: 48, bucketWords: "half hour" },
  "7 d": { hours: 168, buckets: 56, bucketWords: "3 hours" },
};
// The last hour by default: the plant's trend query reads every window of the range (200
// machines with 1 s hops: 720k windows an hour), the longer ranges are a click away.
const TREND = { label: "1 h", ...TRENDS["1 h"] };

// What a machine needs: its health (from events, when the service has them), else derived.
export function condition(m, now = Date.now()) {
  if (m.state === "paused") return "paused";
  const stale = !m.last_window_at || (now - new Date(m.last_window_at).getTime()) / 1000 > STALE_SECONDS;
  // The service's own health (events) when it has one; a silent microphone shows even
  // before the service's stale sweep has marked it.
  // "learning" (baseline v1 active, still widening) is scored like "ok": a silent
  // microphone still shows.
  if (m.health && m.health !== "ok" && m.health !== "learning") return m.health;
  if (m.state === "monitoring" && stale) return "stale";
  if (m.health) return m.health;
  if (m.state !== "monitoring") return m.state;
  if (m.last_ratio !== null && m.last_ratio > 1) return "flagged";
  return "ok";
}

const ATTENTION = new Set(["alarm", "warning", "sensor_fault", "stale", "flagged"]);

function machineRow(m, now) {
  const cond = condition(m, now);
  const events = m.open_events || [];
  const flagged = m.outliers > 0;
  return el(
    "tr",
    { class: `cond-${cond}`, dataset: { machine: m.id, search: `${m.id} ${m.name} ${m.machine_type || ""} ${m.site || ""} ${m.area || ""}`.toLowerCase() } },
    el("th", { scope: "row" }, el("a", { href: `/ui/machines/${encodeURIComponent(m.id)}`, title: m.name }, m.name), m.name !== m.id ? el("span", { class: "muted id" }, m.id) : null),
    el("td", { "data-label": "Type" }, m.machine_type || "–"),
    el(
      "td",
      { "data-label": "State" },
      stateBadge(cond === "flagged" ? "monitoring" : cond),
      cond === "flagged" ? el("span", { class: "badge state-flagged" }, "ratio > 1") : null,
      events.map((e) =>
        el("a", { class: `badge event-link ${e.kind === "sensor" ? "kind-sensor" : `state-${e.severity}`}`, href: `/ui/events/${e.id}`, title: `event ${e.id} opened ${e.opened_at}` }, e.kind === "sensor" ? `sensor event: ${e.cause || "fault"}` : `${e.severity} event`),
      ),
    ),
    el("td", { "data-label": "Last audio" }, m.last_window_at ? el("span", { title: m.last_window_at }, fmtAgo(m.last_window_at, now)) : el("span", { class: "muted" }, "no audio yet")),
    el("td", { "data-label": "Ratio now", class: `num ${m.last_ratio > 1 ? "hot" : ""}` }, fmtRatio(m.last_ratio)),
    el(
      "td",
      {
        "data-label": `Flagged (${TREND.label})`,
        class: `num ${flagged ? "some-flagged" : ""}`,
        // An "ok" machine may still have flagged windows: too few, or too scattered, to open an event.
        title: flagged ? `${m.outliers} of ${m.windows} windows above the threshold in the last ${TREND.label}${events.length ? "" : "; not persistent enough to open an event"}` : null,
      },
      m.windows ? `${m.outliers} / ${m.windows}` : "–",
    ),
    el("td", { "data-label": `Trend (${TREND.label})`, class: "trend" }, sparkline(m.trend, { label: `highest ratio per ${TREND.bucketWords} over the last ${TREND.label} for ${m.name}` })),
  );
}

function table(machines, now, caption) {
  return el(
    "table",
    { class: "machines" },
    el("caption", { class: "visually-hidden" }, caption),
    el("colgroup", {}, ["name", "type", "state", "last", "ratio", "flag", "trend"].map((c) => el("col", { class: `c-${c}` }))),
    el(
      "thead",
      {},
      el("tr", {}, ...["Machine", "Type", "State", "Last audio", "Ratio now", "Flagged (24 h)", "Trend (24 h)"].map((h) => el("th", { scope: "col", class: h.startsWith("Ratio") || h.startsWith("Flagged") ? "num" : null }, h.replace("24 h", TREND.label)))),
    ),
    el("tbody", {}, machines.map((m) => machineRow(m, now))),
  );
}

function group(machines, key) {
  const out = new Map();
  for (const m of machines) {
    const k = m[key] || `(no ${key})`;
    if (!out.has(k)) out.set(k, []);
    out.get(k).push(m);
  }
  return out;
}

function applyFilter(root, text, attentionOnly) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const row of root.querySelectorAll("tr[data-machine]")) {
    const matches = words.every((w) => row.dataset.search.includes(w));
    const attention = [...row.classList].some((c) => ATTENTION.has(c.slice(5)));
    row.hidden = !(matches && (!attentionOnly || attention));
    if (!row.hidden) shown++;
  }
  for (const section of root.querySelectorAll("[data-group]")) {
    section.hidden = !section.querySelector("tr[data-machine]:not([hidden])");
  }
  return shown;
}

async function load() {
  return api(`/v1/plant?hours=${TREND.hours}&buckets=${TREND.buckets}`);
}

export async function render(main) {
  setTitle("Plant");
  let plant;
  try {
    plant = await load();
  } catch (err) {
    clear(main).append(errorBox(err));
    return;
  }
  const filter = el("input", { type: "search", id: "filter", placeholder: "name, id, type, site…", autocomplete: "off" });
  const attention = el("input", { type: "checkbox", id: "attention" });
  const status = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const body = el("div", { id: "plant" });
  const updated = el("span", { class: "muted" });

  const draw = () => {
    const now = Date.now();
    const conds = plant.machines.map((m) => condition(m, now));
    const count = (c) => conds.filter((x) => x === c).length;
    clear(body);
    if (!plant.machines.length) {
      body.append(el("p", {}, "No machines yet. Register one with ", el("code", {}, "POST /v1/machines"), " (see the API docs)."));
    }
    body.append(
      el(
        "ul",
        { class: "summary", "aria-label": "Summary" },
        el("li", {}, el("strong", {}, plant.machines.length), " machines"),
        el("li", {}, el("strong", {}, count("ok") + count("learning")), " ok", count("learning") ? ` (${count("learning")} still learning)` : ""),
        el("li", { class: count("flagged") ? "hot" : "" }, el("strong", {}, count("flagged") + count("warning") + count("alarm")), " flagged now"),
        el("li", { class: count("stale") || count("sensor_fault") ? "cold" : "" }, el("strong", {}, count("stale") + count("sensor_fault")), " sensor / no recent audio"),
        el("li", {}, el("strong", {}, count("enrolling")), " enrolling"),
      ),
    );
    const sites = group(plant.machines, "site");
    if (sites.size > 1) {
      body.append(
        el(
          "nav",
          { class: "sites", "aria-label": "Sites" },
          [...sites].map(([site, ms], i) => {
            const attention = ms.filter((m) => ATTENTION.has(condition(m, now))).length;
            return el("a", { href: `#site-${i}` }, site, el("span", { class: "muted" }, ` ${ms.length}`), attention ? el("span", { class: "badge state-flagged" }, `${attention} need attention`) : null);
          }),
        ),
      );
    }
    let siteIndex = 0;
    for (const [site, siteMachines] of sites) {
      const section = el("section", { class: "site", id: `site-${siteIndex++}`, dataset: { group: site } }, el("h2", {}, site));
      for (const [area, areaMachines] of group(siteMachines, "area")) {
        section.append(
          el(
            "details",
            { open: true, dataset: { group: `${site}/${area}` } },
            el("summary", {}, el("h3", {}, area), el("span", { class: "muted" }, ` ${areaMachines.length} machine${areaMachines.length === 1 ? "" : "s"}`)),
            table(areaMachines, now, `${site}, ${area}`),
          ),
        );
      }
      body.append(section);
    }
    const shown = applyFilter(body, filter.value, attention.checked);
    status.textContent = filter.value || attention.checked ? `${shown} of ${plant.machines.length} machines shown` : "";
    updated.textContent = `updated ${new Date(plant.generated_at).toLocaleTimeString()}`;
  };

  const rangePick = el("div", { class: "segmented range-pick", role: "group", "aria-label": "Trend range" });
  for (const name of Object.keys(TRENDS)) {
    rangePick.append(
      el(
        "button",
        {
          type: "button",
          "aria-pressed": String(name === TREND.label),
          onclick: async (event) => {
            Object.assign(TREND, { label: name }, TRENDS[name]);
            for (const b of rangePick.children) b.setAttribute("aria-pressed", String(b === event.currentTarget));
            try {
              plant = await load();
              draw();
            } catch (err) {
              body.replaceChildren(errorBox(err));
            }
          },
        },
        `Trend: ${name}`,
      ),
    );
  }
  filter.addEventListener("input", () => draw());
  attention.addEventListener("change", () => draw());
  clear(main).append(
    el("div", { class: "page-head" }, el("h1", {}, "Plant"), updated),
    el(
      "div",
      { class: "toolbar", role: "search" },
      el("label", { for: "filter" }, "Filter"),
      filter,
      el("label", { class: "check" }, attention, " Needs attention only"),
      rangePick,
    ),
    status,
    body,
    el(
      "p",
      { class: "legend muted" },
      "Ratio = score / threshold: above 1 the window sounds unlike the machine's baseline. ",
      el("span", { class: "badge state-stale" }, "no recent audio"),
      " is the microphone or its link (no window for 15 min), not the machine.",
    ),
  );
  draw();
  setInterval(async () => {
    try {
      plant = await load();
      draw();
    } catch (_) {
      /* keep the last picture; the next refresh retries */
    }
  }, REFRESH_MS);
}
