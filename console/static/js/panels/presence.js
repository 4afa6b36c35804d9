// Presence of a few users on /presence: subscribe, then follow presence:update.

import { call, connect, describe, unsupported } from "../socket.js";
import { clock, fill, h, panelFrame, say } from "../dom.js";

const MAX_USERS = 20;

export function mountPresence(root, session, hooks) {
  const { dot, note, body } = panelFrame(root, "Presence", "/presence");
  const socket = connect("/presence", session.token, { dot, ...hooks });
  const users = new Map(); // user_id -> {user_id, status, last_seen}
  let watched = [];

  const ids = h("input", { name: "users", placeholder: "user ids, comma-separated", "aria-label": "user ids" });
  const table = h("tbody");

  function render() {
    fill(table, [...users.values()].map((u) =>
      h("tr", { dataset: { status: u.status ?? "unknown" } },
        h("td", {}, h("span", { class: "presence-dot" }), u.user_id),
        h("td", {}, u.status ?? "unknown"),
        h("td", { class: "muted" }, u.last_seen ? clock(u.last_seen) : ""))));
  }

  async function subscribe(list) {
    if (!list.length) return;
    try {
      const data = await call(socket, "presence:subscribe", { user_ids: list });
      watched = list;
      users.clear();
      for (const u of data.users ?? []) users.set(u.user_id, u);
      render();
      say(note, `Watching ${list.length} user(s)`);
    } catch (err) {
      if (unsupported(err)) {
        form.hidden = grid.hidden = true;
        say(note, "Presence is unavailable on this server (no presence:subscribe yet).", "warn");
      } else {
        say(note, describe(err), "error");
      }
    }
  }

  const form = h("form", {
    class: "row",
    onsubmit: (e) => {
      e.preventDefault();
      const list = ids.value.split(",").map((s) => s.trim()).filter(Boolean);
      subscribe([...new Set(list)].slice(0, MAX_USERS));
    },
  }, ids, h("button", { type: "submit" }, "Watch"));

  socket.on("connect", () => subscribe(watched));
  socket.on("presence:update", (u) => {
    if (!u || typeof u.user_id !== "string") return;
    users.set(u.user_id, { ...users.get(u.user_id), ...u });
    render();
  });

  const grid = h("table", { class: "presence" },
    h("thead", {}, h("tr", {}, h("th", {}, "user"), h("th", {}, "status"), h("th", {}, "last seen"))),
    table);
  fill(body, form, grid);
  return { close: () => socket.disconnect() };
}
