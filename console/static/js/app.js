// The console page: sign in with a token, then the client panels and the operator view.

import * as sessions from "./session.js";
import { h } from "./dom.js";
import { mountFeed } from "./panels/feed.js";
import { mountMessages } from "./panels/messages.js";
import { mountNotifications } from "./panels/notifications.js";
import { mountPresence } from "./panels/presence.js";
import { mountStage } from "./panels/stage.js";
import { mountOperator } from "./operator.js";

const $ = (id) => document.getElementById(id);
let mounted = [];
let operator = null;
let session = null;

function signIn(next) {
  session = next;
  $("sign-in").hidden = true;
  $("tabs").hidden = $("who").hidden = false;
  $("who-user").textContent = `user ${session.claims.sub}`;
  $("who-role").textContent = session.claims.role ?? "user";
  const exp = session.claims.exp ? new Date(session.claims.exp * 1000) : null;
  $("who-expiry").textContent = exp ? `token until ${exp.toLocaleTimeString([], { hour12: false })}` : "";

  const hooks = { onRefused };
  mounted = [
    mountFeed($("feed-panel"), session, hooks),
    mountMessages($("messages-panel"), session, hooks),
    mountPresence($("presence-panel"), session, hooks),
    mountNotifications($("notifications-panel"), session, hooks),
    mountStage($("stage-panel"), session, hooks),
  ];
  show(location.hash === "#operator" ? "operator" : "client");
}

function signOut(message = "") {
  mounted.forEach((m) => m.close());
  mounted = [];
  operator?.close();
  operator = null;
  session = null;
  sessions.clear();
  for (const id of ["feed-panel", "messages-panel", "presence-panel", "notifications-panel", "stage-panel", "operator"]) {
    $(id).replaceChildren();
  }
  $("client").hidden = $("operator").hidden = true;
  $("tabs").hidden = $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("token").value = "";
  $("token").focus();
}

/** The server refused the token on a namespace (expired, wrong key): back to sign-in. */
function onRefused(err) {
  if (session && (err.code === "unauthorized" || err.code === "token_expired")) {
    signOut(`The server refused the token: ${err.message}`);
  }
}

function show(tab) {
  for (const b of $("tabs").querySelectorAll("button")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === tab));
  }
  $("client").hidden = tab !== "client";
  $("operator").hidden = tab !== "operator";
  if (tab === "operator" && !operator) operator = mountOperator($("operator"), session);
  history.replaceState(null, "", tab === "operator" ? "#operator" : "#");
}

$("sign-in-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  try {
    const next = sessions.save(token);
    if (sessions.expired(next)) {
      sessions.clear();
      throw new Error("this token has expired; make a new one");
    }
    signIn(next);
  } catch (err) {
    $("sign-in-error").textContent = err.message;
  }
});
$("sign-out").addEventListener("click", () => signOut());
$("tabs").addEventListener("click", (e) => {
  const tab = e.target.closest("button")?.dataset.tab;
  if (tab && session) show(tab);
});

if (typeof window.io !== "function") {
  $("sign-in-error").replaceChildren(h("span", {}, "socket.io-client did not load (static/vendor/socket.io.min.js)."));
}
const saved = sessions.load();
if (saved && !sessions.expired(saved)) signIn(saved);
