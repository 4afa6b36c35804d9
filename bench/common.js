// Helpers shared by the benchmark load generators (bench/*/loadgen.js).
// CommonJS, Node built-ins only (each bench dir has its own node_modules; this file has none):
//
//   const { nowMs, hNew, hAdd, mintJwt, parseArgs } = require(path.join(__dirname, '..', 'common.js'));
'use strict';

const crypto = require('crypto');
const { performance } = require('perf_hooks');

// Wall-clock milliseconds with sub-millisecond resolution (same clock in every process).
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r3 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 1000);
const addCount = (obj, k, n = 1) => { obj[k] = (obj[k] || 0) + n; };

// ---------------------------------------------------------------- histogram
// Log-linear buckets on microseconds, 1% wide: percentiles are reported as the
// bucket's upper bound (<= 1% high). Mergeable across workers by summing.
const H_BASE = Math.log(1.01);
const H_SIZE = 2400; // 1.01^2400 us ~ 2.3e10 us: far beyond any run
function hNew() {
  return { b: new Float64Array(H_SIZE), n: 0, sum: 0, max: 0, min: Infinity, neg: 0 };
}
function hAdd(h, ms) {
  if (ms < 0) { h.neg++; ms = 0; }
  const us = ms * 1000;
  let i = us <= 1 ? 0 : Math.ceil(Math.log(us) / H_BASE);
  if (i >= H_SIZE) i = H_SIZE - 1;
  h.b[i]++;
  h.n++;
  h.sum += ms;
  if (ms > h.max) h.max = ms;
  if (ms < h.min) h.min = ms;
}
// Sparse form of a histogram, to send from a worker to the coordinator (hMerge takes it).
function hToJSON(h) {
  const nz = [];
  for (let i = 0; i < H_SIZE; i++) if (h.b[i]) nz.push([i, h.b[i]]);
  return { nz, n: h.n, sum: h.sum, max: h.max, min: h.min === Infinity ? null : h.min, neg: h.neg };
}
function hMerge(into, j) {
  for (const [i, c] of j.nz) into.b[i] += c;
  into.n += j.n;
  into.sum += j.sum;
  if (j.max > into.max) into.max = j.max;
  if (j.min !== null && j.min !== undefined && j.min < into.min) into.min = j.min;
  into.neg += j.neg || 0;
}
function hPct(h, p) {
  if (!h.n) return null;
  const target = Math.ceil(h.n * p);
  let acc = 0;
  for (let i = 0; i < H_SIZE; i++) {
    acc += h.b[i];
    if (acc >= target) return Math.min(Math.pow(1.01, i) / 1000, h.max);
  }
  return h.max;
}
function hSummary(h) {
  return {
    count: h.n,
    mean: h.n ? r3(h.sum / h.n) : null,
    p50: r3(hPct(h, 0.5)),
    p90: r3(hPct(h, 0.9)),
    p99: r3(hPct(h, 0.99)),
    p999: r3(hPct(h, 0.999)),
    max: h.n ? r3(h.max) : null,
    negative_clamped: h.neg,
  };
}

// ---------------------------------------------------------------- args
// Parses `argv` into a copy of `defaults`: `map` is {'--flag': [key, String | Number]};
// `--worker` sets o.worker; `--help` prints `${usage} [--flag V] ...` on stderr and exits 0.
function parseArgs(argv, defaults, map, usage = 'usage: node loadgen.js') {
  const o = Object.assign({}, defaults);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stderr.write(usage + ' ' + Object.keys(map).map((k) => `[${k} V]`).join(' ') + '\n');
      process.exit(0);
    }
    if (a === '--worker') { o.worker = true; continue; }
    const m = map[a];
    if (!m) throw new Error(`unknown option ${a}`);
    o[m[0]] = m[1](argv[++i]);
  }
  return o;
}

// ---------------------------------------------------------------- auth
function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}
// HS256 JWT {sub, role: "user", iat, exp: iat + 1 h}, as the server's own tokens.
function mintJwt(secret, sub) {
  const iat = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify({ sub: String(sub), role: 'user', iat, exp: iat + 3600 }));
  const sig = b64url(crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

// ---------------------------------------------------------------- output
// JSON lines on stdout: the runner (run.py) reads them.
function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}
function progress(msg, extra) {
  out(Object.assign({ event: 'progress', t: new Date().toISOString(), msg }, extra || {}));
}

// SIGKILL the worker processes ({child, exited}) when the coordinator exits or is signalled.
function killWorkersOnExit(workers) {
  const killAll = () => { for (const w of workers) if (!w.exited) try { w.child.kill('SIGKILL'); } catch (_) { /* gone */ } };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); process.exit(130); });
  return killAll;
}

module.exports = {
  nowMs,
  sleep,
  r3,
  addCount,
  H_BASE,
  H_SIZE,
  hNew,
  hAdd,
  hToJSON,
  hMerge,
  hPct,
  hSummary,
  parseArgs,
  b64url,
  mintJwt,
  out,
  progress,
  killWorkersOnExit,
};
