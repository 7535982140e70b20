// Event page: filled in when the events API is there (GET /v1/events/{id}).
import { api, clear, el, errorBox, setTitle } from "./app.js";

export async function render(main, data) {
  setTitle(`Event ${data.id}`);
  try {
    await api(`/v1/events/${encodeURIComponent(data.id)}`);
  } catch (err) {
    clear(main).append(
      el("h1", {}, `Event ${data.id}`),
      errorBox(err),
      el("p", {}, "This service has no events yet: review flagged windows from the ", el("a", { href: "/ui/" }, "plant page"), "."),
    );
  }
}
