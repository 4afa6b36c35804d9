// Small SVG line charts: one per metric, time on x, a legend with the latest values.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 360;
const H = 140;
const M = { left: 44, right: 8, top: 8, bottom: 18 };
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** A short number: 1234 -> "1.2k", 0.0123 -> "0.012". */
export function short(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 10 || Number.isInteger(v)) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

/**
 * Draw `series` ([{name, points: [[epochSeconds, value|null], …]}]) into `box` (a .chart
 * element): replaces its svg and legend. Nulls break a line.
 */
export function lineChart(box, series, { unit = "" } = {}) {
  const all = series.flatMap((x) => x.points);
  const ts = all.map((p) => p[0]);
  const vs = all.map((p) => p[1]).filter((v) => v !== null && Number.isFinite(v));
  const t0 = Math.min(...ts);
  const t1 = Math.max(...ts, t0 + 1);
  const peak = Math.max(0, ...vs);
  const top = peak > 0 ? peak * 1.1 : 1;
  const x = (t) => M.left + ((t - t0) / (t1 - t0)) * (W - M.left - M.right);
  const y = (v) => H - M.bottom - (v / top) * (H - M.top - M.bottom);

  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "plot" });
  for (const f of [0, 0.5, 1]) {
    const v = top * f;
    svg.append(
      s("line", { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: M.left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" }, short(v) + unit),
    );
  }
  if (ts.length) {
    const span = Math.round(t1 - t0);
    svg.append(s("text", { x: M.left, y: H - 4, class: "axis" }, `−${span}s`));
    svg.append(s("text", { x: W - M.right, y: H - 4, class: "axis", "text-anchor": "end" }, "now"));
  }
  series.forEach((line, i) => {
    const color = COLORS[i % COLORS.length];
    // runs of consecutive values; a run of one point is drawn as a dot
    const runs = [[]];
    for (const [t, v] of line.points) {
      if (v === null || !Number.isFinite(v)) runs.push([]);
      else runs[runs.length - 1].push([x(t), y(v)]);
    }
    for (const run of runs.filter((r) => r.length)) {
      if (run.length === 1) {
        svg.append(s("circle", { cx: run[0][0], cy: run[0][1], r: 2.2, fill: color, class: "line" }));
        continue;
      }
      const d = run.map(([px, py], j) => `${j ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      svg.append(s("path", { d, class: "line", stroke: color }));
    }
  });
  if (!vs.length) svg.append(s("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no data yet"));

  const legend = h("ul", { class: "legend" }, series.map((line, i) => {
    const last = [...line.points].reverse().find((p) => p[1] !== null)?.[1] ?? null;
    return h("li", {},
      h("span", { class: `swatch c${i % COLORS.length}` }),
      h("span", {}, line.name),
      h("b", {}, short(last) + unit));
  }));
  box.querySelector("svg")?.remove();
  box.querySelector(".legend")?.remove();
  box.append(svg, legend);
}

/** An empty chart panel (`lineChart` draws into it); `name` is its data-chart attribute. */
export function chartBox(title, name) {
  return h("figure", { class: "panel chart", dataset: { chart: name } }, h("figcaption", {}, title));
}

/** A figure tile: a big value and its label; kind "warn" colours it. */
export function tile(label, value, kind = "") {
  return h("div", { class: `tile ${kind}` }, h("b", {}, value), h("span", {}, label));
}
