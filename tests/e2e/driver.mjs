// A remote control for the official socket.io-client: the Python tests send one JSON command
// per stdin line and read one JSON reply per stdout line ({seq, ok, ...}).
//   {seq, cmd: "connect", id, url, ns, auth, transports?, reconnection?, recover?}
//     recover: true = every (re)connect sends auth.recover with the last offset seen per room
//     (from the events' meta and room:join acks), as docs/protocol.md's recovery example does
//   {seq, cmd: "emit", id, event, data, ack: true|false, timeout?}  ({binary: b64} = a Buffer)
//   {seq, cmd: "wait", id, event, count, timeout}   -> {events: [...]}
//   {seq, cmd: "received", id, event}               -> {events: [...]}
//   {seq, cmd: "close", id}
import { io } from "socket.io-client";
import readline from "node:readline";

const sockets = new Map();
const inbox = new Map(); // id -> Map(event -> [payload])

function reply(seq, body) {
  process.stdout.write(JSON.stringify({ seq, ...body }) + "\n");
}

// room events carry (data, meta) where meta = {offsets: {room: offset}}; keep both
const metas = new Map(); // id -> Map(event -> [meta|null])
const times = new Map(); // id -> Map(event -> [receive time ms])
const offsets = new Map(); // id -> {room: last offset seen}

// binary travels as {binary: "<base64>"} in both directions (commands and replies are JSON)
function plain(v) {
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    return { binary: Buffer.from(v).toString("base64") };
  }
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

function unplain(v) {
  if (Array.isArray(v)) return v.map(unplain);
  if (v && typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "binary" && typeof v.binary === "string") {
      return Buffer.from(v.binary, "base64");
    }
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unplain(x)]));
  }
  return v;
}

function record(id, event, args) {
  const box = inbox.get(id);
  if (!box.has(event)) box.set(event, []);
  box.get(event).push(plain(args[0] ?? null));
  const mbox = metas.get(id);
  if (!mbox.has(event)) mbox.set(event, []);
  mbox.get(event).push(args.length > 1 ? plain(args[args.length - 1]) : null);
  const tbox = times.get(id);
  if (!tbox.has(event)) tbox.set(event, []);
  tbox.get(event).push(Date.now());
  const meta = args.length > 1 ? args[args.length - 1] : null;
  if (meta && typeof meta === "object" && meta.offsets) Object.assign(offsets.get(id), meta.offsets);
}

async function handle(msg) {
  const { seq, cmd, id } = msg;
  if (cmd === "connect") {
    inbox.set(id, new Map());
    metas.set(id, new Map());
    times.set(id, new Map());
    offsets.set(id, {});
    const auth = msg.recover
      ? (cb) => cb({ ...(msg.auth ?? {}), recover: { ...offsets.get(id) } })
      : (msg.auth ?? {});
    const socket = io(msg.url + msg.ns, {
      auth,
      transports: msg.transports ?? ["websocket"],
      reconnection: msg.reconnection ?? false,
      forceNew: true,
    });
    sockets.set(id, socket);
    socket.onAny((event, ...args) => record(id, event, args));
    socket.on("disconnect", (reason) => record(id, "disconnect", [reason]));
    socket.on("connect", () => record(id, "connect", [socket.id]));
    await new Promise((resolve) => {
      socket.once("connect", () => { reply(seq, { ok: true }); resolve(); });
      socket.once("connect_error", (err) => {
        reply(seq, { ok: false, message: err.message, data: err.data ?? null });
        resolve();
      });
    });
  } else if (cmd === "emit") {
    const socket = sockets.get(id);
    const data = unplain(msg.data);
    if (!msg.ack) { socket.emit(msg.event, data); return reply(seq, { ok: true }); }
    try {
      const ack = await socket.timeout(msg.timeout ?? 5000).emitWithAck(msg.event, data);
      if (msg.event === "room:join" && ack?.ok && ack.data?.offset) {
        offsets.get(id)[ack.data.room] = ack.data.offset;
      }
      reply(seq, { ok: true, ack: plain(ack) });
    } catch (err) {
      reply(seq, { ok: false, message: String(err) });
    }
  } else if (cmd === "wait") {
    const deadline = Date.now() + (msg.timeout ?? 5000);
    const list = () => inbox.get(id).get(msg.event) ?? [];
    while (list().length < (msg.count ?? 1) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    reply(seq, {
      ok: list().length >= (msg.count ?? 1), events: list(),
      metas: metas.get(id).get(msg.event) ?? [],
    });
  } else if (cmd === "received") {
    reply(seq, {
      ok: true, events: inbox.get(id).get(msg.event) ?? [],
      metas: metas.get(id).get(msg.event) ?? [],
      times: times.get(id).get(msg.event) ?? [],
    });
  } else if (cmd === "close") {
    sockets.get(id)?.disconnect();
    sockets.delete(id);
    reply(seq, { ok: true });
  } else {
    reply(seq, { ok: false, message: `unknown command ${cmd}` });
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let msg;
  try { msg = JSON.parse(line); } catch { return reply(null, { ok: false, message: "bad json" }); }
  handle(msg).catch((err) => reply(msg.seq, { ok: false, message: String(err) }));
});
rl.on("close", () => { for (const s of sockets.values()) s.disconnect(); process.exit(0); });
