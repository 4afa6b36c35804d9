// A direct conversation on /messages: open one with a user, history, send, typing, receipts.

import { call, connect, describe } from "../socket.js";
import { clock, fill, h, panelFrame, say } from "../dom.js";

const TYPING_EVERY_MS = 2000; // the server broadcasts typing at most every 2 s anyway
const TYPING_SHOWN_MS = 6000; // a start the server never stopped fades by itself

export function mountMessages(root, session, hooks) {
  const me = session.claims.sub;
  const { dot, note, body } = panelFrame(root, "Direct messages", "/messages");
  const socket = connect("/messages", session.token, { dot, ...hooks });

  let current = null; // {id, other, group}
  let theirRead = 0; // the other member's read receipt in the open conversation
  let theirDelivered = 0;
  let typingSentAt = 0;
  let typingTimer = null;
  const rows = new Map(); // message id -> {row, msg}

  const peer = h("input", { name: "peer", placeholder: "user id", required: true, maxlength: 64, "aria-label": "user id" });
  const convList = h("ul", { class: "conversations" });
  const title = h("h3", { class: "conv-title" });
  const log = h("ol", { class: "messages", "aria-live": "polite" });
  const typing = h("p", { class: "typing muted", "aria-live": "polite" });
  const text = h("input", { name: "body", placeholder: "Write a message", maxlength: 4000, autocomplete: "off", "aria-label": "message", disabled: true });
  const send = h("button", { type: "submit", disabled: true }, "Send");
  const conversation = h("div", { class: "conversation", hidden: true }, title, log, typing,
    h("form", { class: "row composer", onsubmit: (e) => (e.preventDefault(), sendMessage()) }, text, send));

  async function refreshList() {
    try {
      const { conversations } = await call(socket, "conversation:list", { limit: 20 });
      fill(convList, conversations.map((c) => {
        const other = c.kind === "direct" ? c.members.find((m) => m !== me) ?? me : c.title;
        return h("li", {},
          h("button", { type: "button", class: "link", onclick: () => open(other, c.kind === "direct" ? null : c) }, other),
          c.unread ? h("span", { class: "badge" }, String(c.unread)) : null,
          c.last_message?.body ? h("span", { class: "muted clip" }, c.last_message.body) : null);
      }));
    } catch (err) {
      say(note, describe(err), "error");
    }
  }

  async function open(other, group = null) {
    try {
      const conv = group ?? (await call(socket, "conversation:open", { user_id: other }));
      current = { id: conv.id, other, group };
      theirRead = theirDelivered = 0;
      rows.clear();
      title.textContent = group ? group.title : `with ${other}`;
      conversation.hidden = false;
      text.disabled = send.disabled = false;
      typing.textContent = "";
      const { messages } = await call(socket, "message:history", { conversation_id: conv.id, limit: 50 });
      fill(log);
      messages.sort((a, b) => a.seq - b.seq).forEach(append);
      markRead();
      say(note, "");
      text.focus();
    } catch (err) {
      say(note, describe(err), "error");
    }
  }

  function append(msg) {
    const status = h("span", { class: "status muted" });
    const row = h("li", { class: msg.sender_id === me ? "mine" : "theirs", dataset: { seq: msg.seq ?? "" } },
      h("span", { class: "from" }, msg.sender_id === me ? "you" : msg.sender_id),
      h("span", { class: "text" }, msg.deleted ? "(deleted)" : msg.body ?? ""),
      h("time", { class: "muted" }, clock(msg.ts)),
      status);
    rows.set(msg.id, { row, msg, status });
    log.append(row);
    row.scrollIntoView({ block: "nearest" });
    paintStatus(rows.get(msg.id));
    return rows.get(msg.id);
  }

  function paintStatus(entry) {
    const { msg, status, row } = entry;
    if (msg.sender_id !== me) return;
    let s = msg.failed ? "not sent" : msg.seq ? "sent" : "sending…";
    if (msg.seq && msg.seq <= theirDelivered) s = "delivered";
    if (msg.seq && msg.seq <= theirRead) s = "read";
    status.textContent = s;
    row.dataset.status = s;
  }

  function markRead() {
    const seqs = [...rows.values()].map((e) => e.msg.seq ?? 0);
    const last = Math.max(0, ...seqs);
    if (current && last > 0 && document.visibilityState === "visible") {
      call(socket, "message:read", { conversation_id: current.id, seq: last }).catch(() => {});
    }
  }

  async function sendMessage() {
    const value = text.value.trim();
    if (!value || !current) return;
    text.value = "";
    stopTyping();
    const entry = append({ id: crypto.randomUUID(), sender_id: me, body: value, ts: new Date().toISOString() });
    try {
      const ack = await call(socket, "message:send", {
        conversation_id: current.id,
        client_msg_id: entry.msg.id,
        body: value,
      });
      rows.delete(entry.msg.id);
      Object.assign(entry.msg, { id: ack.id, seq: ack.seq, ts: ack.ts });
      rows.set(ack.id, entry);
      entry.row.dataset.seq = ack.seq;
    } catch (err) {
      entry.msg.failed = true;
      say(note, describe(err), "error");
    }
    paintStatus(entry);
  }

  function startTyping() {
    if (!current || Date.now() - typingSentAt < TYPING_EVERY_MS) return;
    typingSentAt = Date.now();
    call(socket, "typing:start", { conversation_id: current.id }).catch(() => {});
  }

  function stopTyping() {
    if (!current || !typingSentAt) return;
    typingSentAt = 0;
    call(socket, "typing:stop", { conversation_id: current.id }).catch(() => {});
  }

  text.addEventListener("input", () => (text.value ? startTyping() : stopTyping()));
  text.addEventListener("blur", stopTyping);

  socket.on("connect", () => {
    refreshList();
    if (current) open(current.other, current.group); // history again: what came while away
  });
  socket.on("message:new", (msg) => {
    call(socket, "message:delivered", { conversation_id: msg.conversation_id, seq: msg.seq }).catch(() => {});
    if (current && msg.conversation_id === current.id && !rows.has(msg.id)) {
      append(msg);
      showTyping(msg.sender_id, false);
      markRead();
    } else {
      refreshList();
    }
  });
  socket.on("message:read", (r) => receipt(r, "read"));
  socket.on("message:delivered", (r) => receipt(r, "delivered"));
  socket.on("typing", (t) => {
    if (current && t.conversation_id === current.id && t.user_id !== me) showTyping(t.user_id, t.active);
  });
  socket.on("conversation:unread", () => refreshList());

  function receipt(r, kind) {
    if (!current || r.conversation_id !== current.id || r.user_id === me) return;
    if (kind === "read") theirRead = Math.max(theirRead, r.seq);
    theirDelivered = Math.max(theirDelivered, r.seq);
    rows.forEach(paintStatus);
  }

  function showTyping(user, active) {
    clearTimeout(typingTimer);
    typing.textContent = active ? `${user} is typing…` : "";
    if (active) typingTimer = setTimeout(() => (typing.textContent = ""), TYPING_SHOWN_MS);
  }

  fill(
    body,
    h("form", { class: "row", onsubmit: (e) => (e.preventDefault(), open(peer.value.trim())) },
      h("label", {}, "Message", peer), h("button", { type: "submit" }, "Open")),
    convList,
    conversation,
  );
  return { close: () => socket.disconnect() };
}
