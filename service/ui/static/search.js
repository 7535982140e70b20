// Search page: find stored windows that sound like a window, an uploaded clip, or (CLAP) text.
import { api, clear, el, errorBox, fmtRatio, fmtTime, listenButton, setTitle, spectrogramFigure, timeEl } from "./app.js";

const AUDIO_TYPES = { wav: "audio/wav", flac: "audio/flac", ogg: "audio/ogg", oga: "audio/ogg" };

function options(values, anyLabel) {
  return [el("option", { value: "" }, anyLabel), ...[...values].sort().map((v) => el("option", { value: v }, v))];
}

function field(label, control, hint) {
  const id = control.id;
  return el("div", { class: "field" }, el("label", { for: id }, label), control, hint ? el("small", { class: "muted", id: `${id}-hint` }, hint) : null);
}

function hitCard(hit) {
  const thumb = el("div", { class: "thumb" }, el("span", { class: "muted small" }, hit.has_audio ? "spectrogram…" : "audio pruned"));
  const card = el(
    "li",
    { class: "hit", dataset: { window: hit.window_id } },
    thumb,
    el(
      "div",
      { class: "hit-body" },
      el("p", {}, el("strong", {}, `#${hit.rank}`), " ", el("a", { href: `/ui/machines/${encodeURIComponent(hit.machine_id)}` }, hit.machine_name), " · ", el("a", { href: `/ui/windows/${hit.window_id}` }, timeEl(hit.start_at, true, true))),
      el(
        "p",
        { class: "muted small" },
        `distance ${hit.distance.toPrecision(4)} · `,
        hit.ratio === null ? "not scored (enrollment)" : el("span", { class: hit.is_outlier ? "hot" : "" }, `ratio ${fmtRatio(hit.ratio)}`),
        hit.label ? ` · labelled ${hit.label}` : "",
      ),
      hit.has_audio ? listenButton(hit.window_id, `window ${hit.window_id} of ${hit.machine_name}`) : null,
    ),
  );
  return { card, thumb };
}

export async function render(main) {
  setTitle("Search");
  const params = new URLSearchParams(location.search);
  let caps;
  let machines = [];
  try {
    [caps, { machines }] = await Promise.all([api("/v1/search/capabilities"), api("/v1/plant?hours=1&buckets=1")]);
  } catch (err) {
    clear(main).append(errorBox(err));
    return;
  }
  const mode = (value, text, checked, disabled) =>
    el("label", { class: "choice" }, el("input", { type: "radio", name: "mode", value, checked, disabled }), ` ${text}`);
  const windowInput = el("input", { id: "q-window", type: "number", min: 1, step: 1, inputmode: "numeric", value: params.get("window") || "" });
  const fileInput = el("input", { id: "q-file", type: "file", accept: ".wav,.flac,.ogg,audio/wav,audio/flac,audio/ogg" });
  const textInput = el("input", { id: "q-text", type: "text", placeholder: "a squealing belt", disabled: !caps.text_search, "aria-describedby": "q-text-hint" });
  const site = el("select", { id: "f-site" }, options(new Set(machines.map((m) => m.site).filter(Boolean)), "any site"));
  const area = el("select", { id: "f-area" }, options(new Set(machines.map((m) => m.area).filter(Boolean)), "any area"));
  const type = el("select", { id: "f-type" }, options(new Set(machines.map((m) => m.machine_type).filter(Boolean)), "any type"));
  const machine = el("select", { id: "f-machine" }, el("option", { value: "" }, "any machine"), machines.map((m) => el("option", { value: m.id }, m.name === m.id ? m.id : `${m.name} (${m.id})`)));
  const from = el("input", { id: "f-from", type: "datetime-local" });
  const to = el("input", { id: "f-to", type: "datetime-local" });
  const todFrom = el("input", { id: "f-tod-from", type: "time" });
  const todTo = el("input", { id: "f-tod-to", type: "time" });
  const label = el(
    "select",
    { id: "f-label" },
    el("option", { value: "" }, "any"),
    el("option", { value: "outlier" }, "flagged (above threshold)"),
    el("option", { value: "anomaly" }, "labelled anomaly"),
    el("option", { value: "normal" }, "labelled normal"),
    el("option", { value: "unlabelled" }, "unlabelled"),
  );
  const status = el("p", { role: "status", "aria-live": "polite", class: "muted" });
  const querySummary = el("div", { class: "query-summary", id: "query-summary" });
  const results = el("ol", { class: "hits", id: "results" });
  const more = el("button", { type: "button", hidden: true }, "More results");
  const form = el(
    "form",
    { class: "search-form card", id: "search-form" },
    el(
      "fieldset",
      { class: "modes" },
      el("legend", {}, "Sounds like"),
      mode("window", "a stored window", !params.get("text")),
      mode("clip", "a clip I upload", false),
      mode("text", "a description (text)", false, !caps.text_search),
    ),
    el(
      "div",
      { class: "query-inputs" },
      field("Window id", windowInput, "from a window page: “Find similar sounds”"),
      field("Clip (WAV, FLAC or OGG, up to 60 s)", fileInput),
      field("Description", textInput, caps.text_search ? "" : caps.text_reason),
    ),
    el(
      "details",
      { class: "filters", open: true },
      el("summary", {}, "Filters"),
      el(
        "div",
        { class: "filter-grid" },
        field("Site", site),
        field("Area", area),
        field("Machine type", type),
        field("Machine", machine),
        field("From", from, "your local time"),
        field("To", to),
        field("Time of day from (UTC)", todFrom),
        field("Time of day to (UTC)", todTo, "before “from”: wraps past midnight"),
        field("Label", label),
      ),
    ),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Search")),
  );
  const modeInputs = { window: windowInput, clip: fileInput, text: textInput };
  const syncMode = () => {
    const current = form.querySelector("input[name=mode]:checked").value;
    for (const [name, input] of Object.entries(modeInputs)) input.closest(".field").classList.toggle("inactive", name !== current);
  };
  form.addEventListener("change", (event) => event.target.name === "mode" && syncMode());
  for (const [name, input] of Object.entries(modeInputs)) {
    input.addEventListener("focus", () => {
      const radio = form.querySelector(`input[name=mode][value=${name}]`);
      if (!radio.disabled) {
        radio.checked = true;
        syncMode();
      }
    });
  }

  const filters = () => {
    const f = {};
    if (site.value) f.site = site.value;
    if (area.value) f.area = area.value;
    if (type.value) f.machine_type = type.value;
    if (machine.value) f.machine = [machine.value];
    if (from.value) f.from = new Date(from.value).toISOString();
    if (to.value) f.to = new Date(to.value).toISOString();
    if (todFrom.value && todTo.value) {
      f.time_from = todFrom.value;
      f.time_to = todTo.value;
    }
    if (label.value) f.label = label.value;
    return f;
  };

  let next = null;
  const run = async (offset) => {
    const current = form.querySelector("input[name=mode]:checked").value;
    const f = filters();
    let response;
    status.textContent = "Searching…";
    if (offset === 0) clear(results);
    try {
      if (current === "window") {
        const id = Number(windowInput.value);
        if (!id) throw new Error("Enter the id of a window (shown on its page), or choose a clip.");
        history.replaceState(null, "", `/ui/search?window=${id}`);
        response = await api("/v1/search", { method: "POST", json: { window_id: id, offset, limit: 20, ...f } });
      } else if (current === "clip") {
        const file = fileInput.files[0];
        if (!file) throw new Error("Choose a WAV, FLAC or OGG file first.");
        const ext = file.name.split(".").pop().toLowerCase();
        const contentType = AUDIO_TYPES[ext] || file.type;
        const q = new URLSearchParams({ offset, limit: 20 });
        for (const [k, v] of Object.entries(f)) (Array.isArray(v) ? v : [v]).forEach((x) => q.append(k, x));
        response = await api(`/v1/search?${q}`, { method: "POST", body: file, headers: { "Content-Type": contentType } });
      } else {
        response = await api("/v1/search", { method: "POST", json: { text: textInput.value, offset, limit: 20, ...f } });
      }
    } catch (err) {
      status.textContent = "";
      results.replaceChildren(el("li", { class: "plain" }, errorBox(err)));
      more.hidden = true;
      return;
    }
    if (offset === 0) {
      clear(querySummary);
      if (current === "window") {
        const q = response.query;
        const thumb = el("div", { class: "thumb" });
        querySummary.append(thumb, el("p", {}, "Sounds like ", el("a", { href: `/ui/windows/${q.window_id}` }, `window ${q.window_id}`), ` of ${q.machine_id}`, response.query.excluded_recording ? " (windows of its own recording left out)" : ""));
        spectrogramFigure(q.window_id, { width: 240, height: 96 })
          .then((fig) => (fig.figure.querySelector(".freq-axis")?.remove(), thumb.replaceChildren(fig.figure)))
          .catch(() => thumb.remove());
      } else if (current === "clip") {
        querySummary.append(el("p", {}, `Sounds like the uploaded clip (${response.query.audio_seconds} s, ${response.query.query_windows} windows).`));
      }
    }
    const n = response.items.length + offset;
    status.textContent = response.items.length
      ? `Showing ${n} nearest of ${response.searched_windows} windows of ${response.machines.length} machine${response.machines.length === 1 ? "" : "s"} sharing the ${response.embedder.name} embedder.`
      : `No window matched among ${response.searched_windows} searched; loosen the filters.`;
    const thumbs = [];
    for (const hit of response.items) {
      const { card, thumb } = hitCard(hit);
      results.append(card);
      if (hit.has_audio) thumbs.push([hit, thumb]);
    }
    next = response.next_offset;
    more.hidden = next === null;
    // Thumbnails three at a time (the list is usable while they arrive).
    const loadThumb = async ([hit, thumb]) => {
      try {
        const fig = await spectrogramFigure(hit.window_id, { width: 240, height: 96 });
        fig.figure.querySelector(".freq-axis")?.remove();
        thumb.replaceChildren(fig.figure);
      } catch (err) {
        thumb.replaceChildren(el("span", { class: "muted small" }, err.message));
      }
    };
    const queue = thumbs.slice();
    await Promise.all([0, 1, 2].map(async () => {
      while (queue.length) await loadThumb(queue.shift());
    }));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(0);
  });
  more.addEventListener("click", () => next !== null && run(next));

  clear(main).append(
    el("div", { class: "page-head" }, el("h1", {}, "Search the fleet's sound")),
    el("p", { class: "muted" }, "Nearest stored windows, among machines that share an embedder (windows of other embedders are not comparable)."),
    form,
    querySummary,
    status,
    results,
    more,
  );
  syncMode();
  if (params.get("window")) run(0);
}
