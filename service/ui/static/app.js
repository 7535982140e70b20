// humwatch review page: shared helpers, the API key, and the page dispatcher.
// Plain ES modules, no build step. Every API call goes through api(), which sends the key.

const KEY_NAME = "humwatch.key";
export const config = { auth_required: false, events: false };

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// -- DOM helpers ------------------------------------------------------------------------

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function setTitle(text) {
  document.title = `${text} · humwatch`;
}

// -- formatting ---------------------------------------------------------------------------

export function fmtTime(iso, withSeconds = true) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: withSeconds ? "2-digit" : undefined,
  });
}

// Compact: the time alone today, the date without the year this year.
export function fmtShort(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  if (d.getFullYear() === now.getFullYear()) return `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })}, ${time}`;
  return fmtTime(iso);
}

export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return "no audio yet";
  const s = Math.max(0, (now - new Date(iso).getTime()) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function fmtRatio(r) {
  return r === null || r === undefined ? "–" : r >= 10 ? r.toFixed(0) : r.toFixed(2);
}

export function fmtHz(hz) {
  return hz >= 1000 ? `${(hz / 1000).toPrecision(3).replace(/\.?0+$/, "")} kHz` : `${Math.round(hz)} Hz`;
}

export function timeEl(iso, withSeconds = true, short = false) {
  return el("time", { datetime: iso || "", title: iso ? `${fmtTime(iso)} (${iso} UTC)` : null }, short ? fmtShort(iso) : fmtTime(iso, withSeconds));
}

// -- the API key ---------------------------------------------------------------------------

export function storedKey() {
  return sessionStorage.getItem(KEY_NAME);
}

function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

let keyPrompt = null;

function askKey(message) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("keydialog");
  const form = document.getElementById("keyform");
  const input = document.getElementById("keyinput");
  const error = document.getElementById("keyerror");
  error.hidden = !message;
  error.textContent = message || "";
  input.value = "";
  keyPrompt = new Promise((resolve) => {
    const submit = async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_NAME, key);
      try {
        await api("/v1/plant?hours=1&buckets=1", { retry: false });
      } catch (err) {
        forgetKey();
        error.hidden = false;
        error.textContent =
          err.status === 401 || err.status === 403 ? `That key was refused: ${err.message}` : err.message;
        input.select();
        return;
      }
      form.removeEventListener("submit", submit);
      dialog.close();
      keyPrompt = null;
      document.getElementById("signout").hidden = false;
      resolve(key);
    };
    form.addEventListener("submit", submit);
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
}

function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function request(path, { method = "GET", json, body, headers = {}, retry = true } = {}) {
  const init = { method, headers: { ...authHeaders(), ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  let code = "http_error";
  let detail = `${response.status} ${response.statusText}`;
  try {
    const data = await response.json();
    code = data.error || code;
    detail = data.detail || detail;
  } catch (_) {
    /* not JSON */
  }
  // A refused key asks for another; a read-only key refused a write keeps its place.
  const refused = response.status === 401 || (response.status === 403 && !/read-only/.test(detail));
  if (refused && retry && config.auth_required) {
    forgetKey();
    await askKey(response.status === 403 ? `The key was refused: ${detail}` : detail);
    return request(path, { method, json, body, headers, retry: false });
  }
  throw new ApiError(response.status, code, detail);
}

export async function api(path, options = {}) {
  const response = await request(path, options);
  return response.status === 204 ? null : response.json();
}

// A binary resource (spectrogram, audio) as an object URL; img/audio elements cannot send
// the Authorization header themselves.
export async function blobUrl(path) {
  const response = await request(path);
  const blob = await response.blob();
  return { url: URL.createObjectURL(blob), headers: response.headers };
}

// -- small shared widgets -------------------------------------------------------------------

export function errorBox(err) {
  return el("p", { class: "error", role: "alert" }, err instanceof ApiError ? err.message : String(err));
}

export function stateBadge(state) {
  const labels = {
    enrolling: "enrolling",
    learning: "learning",
    monitoring: "monitoring",
    paused: "paused",
    ok: "ok",
    warning: "warning",
    alarm: "alarm",
    sensor_fault: "sensor fault",
    stale: "no recent audio",
  };
  return el("span", { class: `badge state-${state}` }, labels[state] || state);
}

// Sparkline of max ratio per bucket; ratio 1 (the threshold) is the dashed line.
export function sparkline(values, { width = 120, height = 28, label = "" } = {}) {
  const present = values.filter((v) => v !== null && v !== undefined);
  const top = Math.max(2, ...present) * 1.05;
  const x = (i) => (values.length <= 1 ? width / 2 : (i / (values.length - 1)) * (width - 2) + 1);
  const y = (v) => height - 1 - (Math.min(v, top) / top) * (height - 2);
  const root = svg("svg", {
    class: "spark",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": label || "ratio trend",
  });
  if (present.length) root.append(svg("line", { x1: 0, x2: width, y1: y(1), y2: y(1), class: "threshold" }));
  let path = "";
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const prev = values[i - 1];
    path += `${path && prev !== null && prev !== undefined ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
  });
  if (path) root.append(svg("path", { d: path, class: "line" }));
  values.forEach((v, i) => {
    if (v !== null && v !== undefined && v > 1) root.append(svg("circle", { cx: x(i), cy: y(v), r: 1.8, class: "hot" }));
  });
  if (!present.length) root.append(svg("text", { x: width / 2, y: height / 2 + 4, class: "empty", text: "no windows" }));
  return root;
}

// Mel-scale position (0 bottom .. 1 top) of a frequency, as the spectrograms are drawn.
export function melPosition(hz, lowHz, highHz) {
  const mel = (f) => 2595 * Math.log10(1 + f / 700);
  return (mel(hz) - mel(lowHz)) / (mel(highHz) - mel(lowHz));
}

// A spectrogram picture with a frequency axis; resolves once the image is loaded.
export async function spectrogramFigure(windowId, { width = 640, height = 256, dbMin, dbMax, caption } = {}) {
  const params = new URLSearchParams({ width, height });
  if (dbMin !== undefined) params.set("db_min", dbMin);
  if (dbMax !== undefined) params.set("db_max", dbMax);
  const { url, headers } = await blobUrl(`/v1/windows/${windowId}/spectrogram.png?${params}`);
  const low = parseFloat(headers.get("X-Low-Hz") || "0");
  const high = parseFloat(headers.get("X-High-Hz") || "8000");
  const axis = el("div", { class: "freq-axis", "aria-hidden": "true" });
  for (const f of [100, 500, 1000, 2000, 4000, 8000, 16000]) {
    if (f <= low || f >= high) continue;
    const pos = melPosition(f, low, high);
    axis.append(el("span", { style: { bottom: `${(pos * 100).toFixed(1)}%` } }, fmtHz(f)));
  }
  const img = el("img", {
    src: url,
    alt: `Spectrogram of window ${windowId}, ${fmtHz(low)} to ${fmtHz(high)} on a mel scale, low frequencies at the bottom`,
    width,
    height,
    class: "spectrogram",
  });
  await img.decode().catch(() => {});
  const figure = el("figure", { class: "spec" }, el("div", { class: "spec-body" }, axis, img), caption ? el("figcaption", {}, caption) : null);
  return {
    figure,
    dbMin: parseFloat(headers.get("X-Db-Min")),
    dbMax: parseFloat(headers.get("X-Db-Max")),
    lowHz: low,
    highHz: high,
  };
}

// An audio player for a window's WAV (fetched with the key).
export async function audioPlayer(windowId, label) {
  const { url } = await blobUrl(`/v1/windows/${windowId}/audio`);
  return el("audio", { controls: true, preload: "metadata", src: url, "aria-label": label, dataset: { window: windowId } });
}

// A button that loads the audio player on demand (lists with many windows).
export function listenButton(windowId, label) {
  const holder = el("span", { class: "listen" });
  const button = el(
    "button",
    {
      type: "button",
      class: "small",
      "aria-label": `Listen to ${label}`,
      onclick: async () => {
        button.disabled = true;
        button.textContent = "Loading…";
        try {
          const player = await audioPlayer(windowId, label);
          holder.replaceChildren(player);
          player.play().catch(() => {});
          player.focus();
        } catch (err) {
          holder.replaceChildren(errorBox(err));
        }
      },
    },
    "▶ Listen",
  );
  holder.append(button);
  return holder;
}

// -- start -----------------------------------------------------------------------------------

async function start() {
  const page = document.body.dataset.page;
  const main = document.getElementById("main");
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
  }
  const signout = document.getElementById("signout");
  signout.addEventListener("click", () => {
    forgetKey();
    location.reload();
  });
  try {
    Object.assign(config, await (await fetch("/ui/config.json")).json());
    if (config.auth_required && !storedKey()) await askKey();
    signout.hidden = !storedKey();
    const module = await import(`./${page}.js`);
    await module.render(main, document.body.dataset);
  } catch (err) {
    console.error(err);
    clear(main).append(errorBox(err));
  }
}

start();
