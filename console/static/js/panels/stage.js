// An audio room's stage on /live: create or join a room, raise a hand, invite, mute.
// Audio itself flows through LiveKit with the token audio:join returns; this panel is the
// control plane only.

import { call, connect, describe, unsupported } from "../socket.js";
import { fill, h, panelFrame, say } from "../dom.js";

const KEEP_CHANGES = 20;

export function mountStage(root, session, hooks) {
  const me = session.claims.sub;
  const { dot, note, body } = panelFrame(root, "Audio room stage", "/live");
  const socket = connect("/live", session.token, { dot, ...hooks });
  let roomId = null;
  let stage = null;

  const titleIn = h("input", { name: "title", placeholder: "room title", maxlength: 200, "aria-label": "room title" });
  const roomIn = h("input", { name: "room", placeholder: "room id", maxlength: 64, "aria-label": "room id" });
  const view = h("div", { class: "stage" });
  const changes = h("ol", { class: "changes muted" });
  const invitation = h("div", { class: "invitation", hidden: true });

  function fail(err) {
    if (unsupported(err)) say(note, "Audio rooms are unavailable on this server.", "warn");
    else say(note, describe(err), "error");
  }

  async function act(event, payload) {
    try {
      const data = await call(socket, event, { room_id: roomId, ...payload });
      if (data && data.version !== undefined && data.room_id === roomId) render(data);
      return data;
    } catch (err) {
      fail(err);
      return null;
    }
  }

  async function create() {
    try {
      const room = await call(socket, "audio:create", { title: titleIn.value.trim() || "Untitled room" });
      roomIn.value = room.room_id;
      await join(room.room_id);
    } catch (err) {
      fail(err);
    }
  }

  async function join(id) {
    if (!id) return;
    try {
      if (roomId && roomId !== id) await call(socket, "audio:leave", { room_id: roomId }).catch(() => {});
      const data = await call(socket, "audio:join", { room_id: id });
      roomId = id;
      fill(changes);
      render(data.stage);
      say(note, `In ${id} as ${data.role}; media: ${data.livekit?.url ?? "LiveKit"}`);
    } catch (err) {
      fail(err);
    }
  }

  async function leave() {
    if (!roomId) return;
    const id = roomId;
    roomId = null;
    fill(view);
    fill(invitation);
    invitation.hidden = true;
    try {
      await call(socket, "audio:leave", { room_id: id });
      say(note, `Left ${id}`);
    } catch (err) {
      fail(err);
    }
  }

  function roleOf(s) {
    if (s.host === me) return "host";
    if (s.moderators.includes(me)) return "moderator";
    if (s.speakers.includes(me)) return "speaker";
    return "listener";
  }

  function render(s) {
    stage = s;
    const role = roleOf(s);
    const manages = role === "host" || role === "moderator";
    const person = (user, ...actions) =>
      h("li", {}, user === me ? `${user} (you)` : user,
        user === s.host ? h("span", { class: "tag" }, "host") : null,
        s.moderators.includes(user) ? h("span", { class: "tag" }, "moderator") : null,
        s.muted.includes(user) ? h("span", { class: "tag" }, "muted") : null,
        ...actions);
    const button = (label, event, payload) => h("button", { type: "button", class: "small", onclick: () => act(event, payload) }, label);

    const onStage = [s.host, ...s.moderators, ...s.speakers];
    fill(view,
      h("div", { class: "stage-head" },
        h("strong", {}, s.title), h("span", { class: "tag" }, s.state),
        h("span", { class: "muted" }, `${s.on_stage}/${s.max_on_stage} on stage · ${s.listener_count} listening · v${s.version}`)),
      h("div", { class: "stage-cols" },
        h("section", { dataset: { part: "on-stage" } }, h("h4", {}, "On stage"),
          h("ul", {}, onStage.map((u) => person(u,
            manages && u !== me && !s.muted.includes(u) ? button("Mute", "speaker:mute", { user_id: u }) : null)))),
        h("section", { dataset: { part: "queue" } }, h("h4", {}, "Hands raised"),
          s.queue.length ? h("ul", {}, s.queue.map((u) => person(u,
            manages && !s.invited.includes(u) ? button("Invite", "speaker:invite", { user_id: u }) : null,
            s.invited.includes(u) ? h("span", { class: "tag" }, "invited") : null))) : h("p", { class: "muted" }, "none"))),
      h("div", { class: "row" },
        role === "listener" && !s.queue.includes(me) ? button("Raise hand", "hand:raise", {}) : null,
        role === "listener" && s.queue.includes(me) ? button("Lower hand", "hand:lower", {}) : null,
        s.muted.includes(me) && role !== "listener" ? button("I unmuted", "speaker:unmuted", {}) : null,
        h("button", { type: "button", class: "small", onclick: leave }, "Leave")));
    invitation.hidden = !s.invited.includes(me);
    fill(invitation, "You are invited to speak ",
      button("Accept", "speaker:accept", {}), button("Decline", "speaker:decline", {}));
    if (s.change) {
      changes.prepend(h("li", {}, [s.change.action, s.change.user_id, s.change.by && `by ${s.change.by}`].filter(Boolean).join(" ")));
      while (changes.children.length > KEEP_CHANGES) changes.lastElementChild.remove();
    }
  }

  socket.on("connect", () => roomId && join(roomId)); // audio rooms are joined per connection
  socket.on("stage:update", (s) => s.room_id === roomId && render(s));
  socket.on("speaker:invited", (i) => {
    if (i.room_id === roomId) say(note, `${i.by} invited you to speak`);
    else say(note, `${i.by} invited you to speak in ${i.room_id}`);
  });
  socket.on("audio:ended", (e) => {
    if (e.room_id !== roomId) return;
    say(note, `The room ended: ${e.reason}`, "warn");
    roomId = null;
    fill(view);
  });
  socket.on("audio:removed", (e) => {
    if (e.room_id !== roomId) return;
    say(note, "You were removed from the room.", "warn");
    roomId = null;
    fill(view);
  });

  fill(body,
    h("div", { class: "row" },
      h("form", { class: "row", onsubmit: (e) => (e.preventDefault(), create()) }, titleIn, h("button", { type: "submit" }, "Create room")),
      h("form", { class: "row", onsubmit: (e) => (e.preventDefault(), join(roomIn.value.trim())) }, roomIn, h("button", { type: "submit" }, "Join"))),
    invitation, view, changes);
  return { close: () => socket.disconnect(), get stage() { return stage; } };
}
