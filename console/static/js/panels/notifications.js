// The notification inbox on /notifications: notification:list, then notification:new,
// notification:updated (aggregated: "bob and 2 others…") and notification:read from any device.

import { call, connect, describe, unsupported } from "../socket.js";
import { clock, fill, h, panelFrame, say } from "../dom.js";

const KEEP = 50;

export function mountNotifications(root, session, hooks) {
  const { dot, note, body } = panelFrame(root, "Notifications", "/notifications");
  const socket = connect("/notifications", session.token, { dot, ...hooks });
  const badge = h("span", { class: "badge", hidden: true });
  const list = h("ol", { class: "inbox" });
  const readAll = h("button", { type: "button", class: "small read-all", hidden: true, onclick: () => markRead({ all: true }) }, "Mark all read");
  root.querySelector("header h2").append(badge);
  root.querySelector("header .ns").after(readAll);
  const rows = new Map(); // notification id -> li

  function setUnread(n) {
    badge.textContent = String(n);
    badge.hidden = readAll.hidden = !(n > 0);
  }

  function put(item, { top = true } = {}) {
    const li = renderItem(item, () => markRead({ id: item.id }));
    rows.get(item.id)?.remove();
    rows.set(item.id, li);
    if (top) list.prepend(li);
    else list.append(li);
    while (list.children.length > KEEP) {
      const last = list.lastElementChild;
      rows.delete(Number(last.dataset.id));
      last.remove();
    }
  }

  async function markRead(which) {
    try {
      const data = await call(socket, "notification:read", which);
      setUnread(data.unread);
    } catch (err) {
      say(note, describe(err), "error");
    }
  }

  async function load() {
    try {
      const data = await call(socket, "notification:list", { limit: 20 });
      rows.clear();
      fill(list);
      (data.items ?? []).forEach((item) => put(item, { top: false }));
      setUnread(data.unread ?? 0);
      say(note, list.children.length ? "" : "Inbox is empty.");
    } catch (err) {
      if (unsupported(err)) say(note, "The inbox is unavailable on this server (no notification:list).", "warn");
      else say(note, describe(err), "error");
    }
  }

  socket.on("connect", load);
  for (const event of ["notification:new", "notification:updated"]) {
    socket.on(event, (item) => {
      put(item);
      setUnread(item.unread);
      say(note, "");
    });
  }
  socket.on("notification:read", (r) => {
    for (const [id, li] of rows) {
      if (r.all || r.ids?.includes(id)) li.className = "read";
    }
    setUnread(r.unread);
  });

  fill(body, list);
  return { close: () => socket.disconnect() };
}

function renderItem(item, onRead) {
  const count = item.actor_count > 1 ? ` (${item.actor_count})` : "";
  return h("li", { class: item.read ? "read" : "unread", dataset: { id: item.id, kind: item.kind } },
    h("div", { class: "meta" },
      h("strong", {}, (item.title ?? item.kind ?? "notification") + count),
      h("time", { class: "muted" }, clock(item.updated_at ?? item.created_at)),
      item.read ? null : h("button", { type: "button", class: "link small", onclick: onRead }, "mark read")),
    item.body ? h("p", {}, item.body) : null);
}
