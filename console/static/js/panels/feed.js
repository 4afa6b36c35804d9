// Live feed of a zone on /feed: join zone:<name>, show every event envelope as it arrives.

import { call, connect, describe } from "../socket.js";
import { clock, fill, h, panelFrame, say } from "../dom.js";

const KEEP = 100;

export function mountFeed(root, session, hooks) {
  const { dot, note, body } = panelFrame(root, "Live feed", "/feed");
  const socket = connect("/feed", session.token, { dot, ...hooks });
  let room = null;

  const zone = h("input", { name: "zone", value: "music", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", "aria-label": "zone" });
  const list = h("ol", { class: "events", "aria-live": "polite" });
  const empty = h("p", { class: "muted empty" }, "No events yet. Publish one:");
  const hint = h("pre", { class: "cmd" });

  async function join(name) {
    const next = `zone:${name}`;
    try {
      if (room && room !== next) await call(socket, "room:leave", { room });
      await call(socket, "room:join", { room: next });
      room = next;
      hint.textContent =
        `.venv/bin/ours publish content.created \\\n  --json '{"content_id":"c1","kind":"post"}' --subject ${room}`;
      say(note, `Listening on ${room}`);
    } catch (err) {
      say(note, describe(err), "error");
    }
  }

  socket.on("connect", () => join(zone.value.trim())); // rooms are per connection: rejoin
  socket.onAny((event, data) => {
    if (!data || typeof data !== "object" || typeof data.type !== "string") return;
    empty.hidden = true;
    hint.hidden = true;
    list.prepend(renderEvent(event, data));
    while (list.children.length > KEEP) list.lastElementChild.remove();
  });

  fill(
    body,
    h(
      "form",
      { class: "row", onsubmit: (e) => (e.preventDefault(), join(zone.value.trim())) },
      h("label", {}, "zone:", zone),
      h("button", { type: "submit" }, "Join"),
    ),
    empty,
    hint,
    list,
  );
  return { close: () => socket.disconnect() };
}

function renderEvent(event, envelope) {
  return h(
    "li",
    { class: "event", dataset: { type: envelope.type } },
    h(
      "div",
      { class: "meta" },
      h("strong", {}, envelope.type),
      h("time", { datetime: envelope.ts }, clock(envelope.ts)),
      h("span", { class: "muted" }, (envelope.subjects ?? []).join(" ")),
      envelope.actor ? h("span", { class: "muted" }, `by ${envelope.actor}`) : null,
    ),
    h("pre", { class: "payload" }, JSON.stringify(envelope.payload, null, 1)),
  );
}
