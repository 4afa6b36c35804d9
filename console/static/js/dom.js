// Small DOM helpers: build elements without innerHTML (server data is never parsed as markup).

/** h("li", {class: "x", onclick: fn}, "text", child) -> element */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return el;
}

/** "14:03:07" for an ISO string, epoch seconds or a Date. */
export function clock(value) {
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value ?? Date.now());
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false });
}

/** A panel's frame: title, namespace, connection dot, body. Returns the parts. */
export function panelFrame(root, title, namespace) {
  const dot = h("span", { class: "dot", title: "connecting", "data-state": "connecting" });
  const note = h("p", { class: "note", role: "status" });
  const body = h("div", { class: "body" });
  fill(
    root,
    h("header", {}, h("h2", {}, title), h("code", { class: "ns" }, namespace), dot),
    note,
    body,
  );
  return { dot, note, body };
}

/** Show a short message in a panel's note line ("" clears it). */
export function say(note, text, kind = "info") {
  note.textContent = text;
  note.dataset.kind = kind;
}
