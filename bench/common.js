// Helpers shared by the benchmark load generators (bench/*/loadgen.js).
// CommonJS, Node built-ins only (each bench dir has its own node_modules; this file has none):
//
//   const { nowMs, hNew, hAdd, mintJwt, parseArgs } = require(path.join(__dirname, '..', 'common.js'));
//
// A load generator is one script run twice over: the coordinator (`forkWorkers`, `runMain`) and
// its worker processes (`--worker`: `onCoordinator`, `connectRange`, `clientOptions`), which hold
// the socket.io-client connections and talk to the coordinator over IPC.
'use strict';

const { fork } = require('child_process');
const crypto = require('crypto');
const { performance, monitorEventLoopDelay } = require('perf_hooks');

// Wall-clock milliseconds with sub-millisecond resolution (same clock in every process).
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const r3 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 1000);
const addCount = (obj, k, n = 1) => { obj[k] = (obj[k] || 0) + n; };
// Adds the counts of `from` ({key: n}) to `into`.
function mergeCounts(into, from) {
  for (const [k, v] of Object.entries(from)) addCount(into, k, v);
  return into;
}
// Adds 1 at index i of a per-second array, growing it with zeros.
function countAt(arr, i) {
  while (arr.length <= i) arr.push(0);
  arr[i]++;
}
// Element-wise sum of per-second arrays.
function sumTimelines(timelines) {
  const sum = [];
  for (const t of timelines) t.forEach((c, i) => { sum[i] = (sum[i] || 0) + c; });
  for (let i = 0; i < sum.length; i++) sum[i] = sum[i] || 0;
  return sum;
}

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
// Parses `argv` into a copy of `defaults`: each key is an option in kebab case (maxInflight:
// --max-inflight V), a number when its default is one, else a string; `--worker` sets o.worker;
// `--help` prints `${usage} [--flag V] ...` on stderr and exits 0.
function parseArgs(argv, defaults, usage = 'usage: node loadgen.js') {
  const flags = {};
  for (const k of Object.keys(defaults)) {
    flags['--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())] = [k, typeof defaults[k] === 'number' ? Number : String];
  }
  const o = Object.assign({}, defaults);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stderr.write(usage + ' ' + Object.keys(flags).map((k) => `[${k} V]`).join(' ') + '\n');
      process.exit(0);
    }
    if (a === '--worker') { o.worker = true; continue; }
    const m = flags[a];
    if (!m) throw new Error(`unknown option ${a}`);
    o[m[0]] = m[1](argv[++i]);
  }
  return o;
}
// Throws unless o.clientDeflate is 'on' or 'off'.
function checkClientDeflate(o) {
  if (!['on', 'off'].includes(o.clientDeflate)) throw new Error('--client-deflate must be on or off');
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

// Runs a load generator script: its worker (`--worker`) or its coordinator, which exits 0 when
// done, or 1 after printing {"event": "error"} when it failed.
function runMain(opts, runWorker, coordinator) {
  if (opts.worker) {
    runWorker();
    return;
  }
  coordinator(opts).then(
    () => process.exit(0),
    (e) => {
      out({ event: 'error', error: String(e && e.message), stack: String(e && e.stack) });
      process.exit(1);
    },
  );
}

// ---------------------------------------------------------------- coordinator
// Splits `total` items (clients, requests) over `n` workers as evenly as possible, in order:
// [{first, count}] (the first total % n workers get one more).
function splitEven(total, n) {
  const per = Math.floor(total / n);
  const parts = [];
  let first = 0;
  for (let w = 0; w < n; w++) {
    const count = per + (w < total % n ? 1 : 0);
    parts.push({ first, count });
    first += count;
  }
  return parts;
}

// Forks `n` workers (`script` --worker) and sends worker w {type: 'start', cfg: cfgFor(w)}. A
// worker is {child, exited, fatal, ...init}, plus the last message of each type its process sent,
// under that type (w.ready, w.result, ...); a 'fatal' message sets w.fatal to its error and a
// 'progress' one is printed. The workers are SIGKILLed when the coordinator exits.
function forkWorkers(script, n, cfgFor, init = {}) {
  const workers = [];
  for (let w = 0; w < n; w++) {
    const child = fork(script, ['--worker'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const wk = { child, exited: false, fatal: null, ...init };
    child.on('message', (m) => {
      if (m.type === 'fatal') wk.fatal = m.error;
      else if (m.type === 'progress') progress(m.msg);
      else wk[m.type] = m;
    });
    child.on('exit', () => { wk.exited = true; });
    child.send({ type: 'start', cfg: cfgFor(w) });
    workers.push(wk);
  }
  const killAll = killWorkersOnExit(workers);
  const total = (f) => workers.reduce((a, w) => a + f(w), 0);
  // Resolves once pred() holds; throws when a worker failed or exited, or after timeoutMs
  // (`what` names the phase). With `every`, prints progress(every()) each everyMs meanwhile.
  const waitFor = async (pred, timeoutMs, what, every = null, everyMs = 2000) => {
    const t = Date.now();
    let lastLog = t;
    while (!pred()) {
      for (const w of workers) if (w.fatal) throw new Error('worker failed: ' + w.fatal);
      if (workers.some((w) => w.exited)) throw new Error(`a worker exited during ${what}`);
      if (Date.now() - t > timeoutMs) throw new Error(`timeout during ${what}`);
      if (every && Date.now() - lastLog > everyMs) {
        lastLog = Date.now();
        progress(every());
      }
      await sleep(50);
    }
  };
  return {
    workers,
    // Sends `msg` to every worker.
    send(msg) { for (const w of workers) w.child.send(msg); },
    // The sum of f(worker) over the workers.
    total,
    waitFor,
    // waitFor every worker's 'ready' message; resolves {seconds waited, joined: the sum of their
    // `joined`, errors: their `errors` merged}.
    async allReady(timeoutMs, what, every = null, everyMs = 2000) {
      const t = nowMs();
      await waitFor(() => workers.every((w) => w.ready), timeoutMs, what, every, everyMs);
      const errors = {};
      for (const w of workers) mergeCounts(errors, w.ready.errors);
      return { seconds: (nowMs() - t) / 1000, joined: total((w) => w.ready.joined), errors };
    },
    // Starts a timed phase in every worker: sends {type, t0, tEnd} with t0 `leadMs` from now and
    // tEnd `durationS` later, waits for t0 and prints {"event": "phase", phase, t: t0}.
    // Resolves {t0, tEnd}.
    async startAt(leadMs, type, durationS, phase) {
      const t0 = nowMs() + leadMs;
      const tEnd = t0 + durationS * 1000;
      for (const w of workers) w.child.send({ type, t0, tEnd });
      while (nowMs() < t0) await sleep(1);
      out({ event: 'phase', phase, t: t0 });
      return { t0, tEnd };
    },
    // Tells the workers to close their sockets, waits graceMs, then kills what is left.
    async close(graceMs) {
      for (const w of workers) if (!w.exited) w.child.send({ type: 'close' });
      await sleep(graceMs);
      killAll();
    },
  };
}

// The `loadgen` block of a result: CPU of the coordinator (`cpu`, a process.cpuUsage diff) and
// of each worker, and each worker's event-loop delay (the `loadMeter().read()` in its result).
function loadgenStats(cpu, results) {
  return {
    coordinator_cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
    worker_cpu_ms: results.map((r) => Math.round(r.cpuMs)),
    worker_event_loop_delay: results.map((r) => ({ p99_ms: r3(r.loopDelayP99Ms), max_ms: r3(r.loopDelayMaxMs) })),
  };
}

// ---------------------------------------------------------------- worker
// Handles the coordinator's messages in a worker: handlers[msg.type](msg) (other types are
// ignored); the worker exits when the coordinator is gone.
function onCoordinator(handlers) {
  process.on('message', (msg) => {
    const h = handlers[msg.type];
    if (h) h(msg);
  });
  process.on('disconnect', () => process.exit(0)); // parent died
}

// Tells the coordinator that this worker failed (it stops the run).
function sendFatal(e) {
  process.send({ type: 'fatal', error: String(e && e.stack) });
}

// socket.io-client options of a benchmark socket: websocket only, its own connection, no
// reconnection, `timeoutMs` to connect; clientDeflate 'off' stops it offering permessage-deflate
// (socket.io-client's default, like a browser, offers it).
function clientOptions(token, timeoutMs, clientDeflate) {
  return {
    forceNew: true,
    multiplex: false,
    transports: ['websocket'],
    auth: { token },
    reconnection: false,
    timeout: timeoutMs,
    ...(clientDeflate === 'off' ? { perMessageDeflate: false } : {}),
  };
}

// The websocket extensions a connected socket negotiated: '' for none, '?' when unknown.
function wsExtensionsOf(s) {
  try { return s.io.engine.transport.ws.extensions || ''; } catch (_) { return '?'; }
}

// Calls fn(item) for each of `items` in order, at most `k` at a time; resolves when all are done.
async function inLanes(items, k, fn) {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  const lanes = [];
  for (let j = 0; j < Math.min(k, items.length); j++) lanes.push(lane());
  await Promise.all(lanes);
}

// Connects clients first .. first + count - 1, `concurrency` at a time: connectOne(idx) resolves
// {c, ok, err}, and every c is pushed to `into`. Resolves {joined, errors: {err: count}}.
async function connectRange(first, count, concurrency, connectOne, into) {
  const errors = {};
  let joined = 0;
  const idxs = Array.from({ length: count }, (_, i) => first + i);
  await inLanes(idxs, concurrency, async (idx) => {
    const r = await connectOne(idx);
    into.push(r.c);
    if (r.ok) joined++;
    else addCount(errors, r.err);
  });
  return { joined, errors };
}

// CPU time and event-loop delay of a worker over its measured phase: start(), then read() at its
// end (which also stops the delay monitor).
const LOOP_RES_MS = 10;
function loadMeter() {
  const loop = monitorEventLoopDelay({ resolution: LOOP_RES_MS });
  let cpu0 = null;
  return {
    start() {
      cpu0 = process.cpuUsage();
      loop.enable();
    },
    read() {
      loop.disable();
      const cpu = process.cpuUsage(cpu0);
      return {
        cpuMs: (cpu.user + cpu.system) / 1000,
        // the histogram holds whole timer intervals: subtract the resolution
        loopDelayP99Ms: Math.max(0, loop.percentile(99) / 1e6 - LOOP_RES_MS),
        loopDelayMaxMs: Math.max(0, loop.max / 1e6 - LOOP_RES_MS),
      };
    },
  };
}

module.exports = {
  nowMs,
  sleep,
  r3,
  addCount,
  mergeCounts,
  countAt,
  sumTimelines,
  H_BASE,
  H_SIZE,
  hNew,
  hAdd,
  hToJSON,
  hMerge,
  hPct,
  hSummary,
  parseArgs,
  checkClientDeflate,
  b64url,
  mintJwt,
  out,
  progress,
  killWorkersOnExit,
  runMain,
  splitEven,
  forkWorkers,
  loadgenStats,
  onCoordinator,
  sendFatal,
  clientOptions,
  wsExtensionsOf,
  inLanes,
  connectRange,
  loadMeter,
};
