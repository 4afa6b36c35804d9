#!/usr/bin/env node
// "ws" ceiling for bench/fanout: the least a broadcast server can do on this machine. Raw `ws`
// (no socket.io) that speaks just enough Engine.IO 4 / Socket.IO 5 for the benchmark's clients:
//   - GET  /health                  -> 200
//   - /socket.io/?EIO=4&transport=websocket: open "0{sid,...}", connect "40/ns,{auth}" ->
//     "40/ns,{sid}", "42/ns,<id>["room:join",{room}]" -> "43/ns,<id>[{ok: true, data: {room}}]",
//     ping "2" every 25 s (a pong "3" is read and ignored)
//   - POST /v1/events {type, subjects, payload} -> 202 {success, data: {id}}; the event
//     "42/feed,[type, {id, type, actor, subjects, payload, ts}]" is framed once (server frames
//     are unmasked, every socket gets the same bytes) and the frames of one loop tick go to
//     every socket of the room as ONE buffer, written straight to its TCP socket.
// No persistence, no auth checks, no recovery, no slow-consumer policy (a socket whose unsent
// bytes pass 64 MiB is destroyed, so memory stays bounded). It is the ceiling, not a server.
'use strict';

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const host = arg('--host', '127.0.0.1');
const port = parseInt(arg('--port', '8080'), 10);
const MAX_UNSENT = 64 * 1024 * 1024;

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

// One final, unmasked RFC 6455 text frame.
function textFrame(payload) {
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x81, n]);
  else if (n < 65536) { head = Buffer.alloc(4); head[0] = 0x81; head[1] = 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x81; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2); }
  return Buffer.concat([head, payload]);
}

const rooms = new Map(); // "ns|room" -> Set of ws
const pending = new Map(); // "ns|room" -> [frame, ...] of this tick
let flushQueued = false;

function flush() {
  flushQueued = false;
  for (const [key, frames] of pending) {
    const members = rooms.get(key);
    if (!members) continue;
    const buf = frames.length === 1 ? frames[0] : Buffer.concat(frames);
    for (const ws of members) {
      const sock = ws._socket;
      if (!sock || sock.destroyed) continue;
      if (sock.writableLength > MAX_UNSENT) { sock.destroy(); continue; }
      sock.write(buf);
    }
  }
  pending.clear();
}

function broadcast(ns, subjects, type, env) {
  const frame = textFrame(Buffer.from(`42${ns === '/' ? '' : ns + ','}${JSON.stringify([type, env])}`));
  for (const room of subjects) {
    const key = `${ns}|${room}`;
    let list = pending.get(key);
    if (!list) pending.set(key, (list = []));
    list.push(frame);
  }
  if (!flushQueued) {
    flushQueued = true;
    setImmediate(flush);
  }
}

const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/health') {
    return send(res, 200, { success: true, data: { status: 'ok' } });
  }
  if (req.method === 'POST' && req.url === '/v1/events') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return send(res, 400, { success: false, error: { code: 'bad_json', message: String(e) } });
      }
      if (!body || typeof body.type !== 'string' || !Array.isArray(body.subjects) || body.subjects.length === 0) {
        return send(res, 422, { success: false, error: { code: 'validation', message: 'type and subjects required' } });
      }
      const env = {
        id: crypto.randomUUID(),
        type: body.type,
        actor: { type: 'api_key', id: 'bench' },
        subjects: body.subjects,
        payload: body.payload || {},
        ts: new Date().toISOString(),
      };
      broadcast('/feed', body.subjects, body.type, env);
      send(res, 202, { success: true, data: { id: env.id } });
    });
    return;
  }
  send(res, 404, { success: false, error: { code: 'not_found' } });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, skipUTF8Validation: true });
httpServer.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/socket.io/')) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws));
});

function onConnection(ws) {
  const sid = crypto.randomBytes(12).toString('base64url');
  const joined = new Set();
  ws.send('0' + JSON.stringify({ sid, upgrades: [], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1000000 }));
  const ping = setInterval(() => ws.send('2'), 25000);
  ws.on('message', (data) => {
    const text = data.toString('utf8');
    if (text === '3') return;
    if (text[0] !== '4') return;
    // "4" + socket.io packet: type digit, optional "/ns,", optional ack id, JSON
    const type = text[1];
    let i = 2;
    let ns = '/';
    if (text[i] === '/') {
      const comma = text.indexOf(',', i);
      ns = text.slice(i, comma);
      i = comma + 1;
    }
    const prefix = ns === '/' ? '' : ns + ',';
    if (type === '0') {
      ws.send(`40${prefix}${JSON.stringify({ sid: crypto.randomBytes(12).toString('base64url') })}`);
    } else if (type === '2') {
      let j = i;
      while (text.charCodeAt(j) >= 48 && text.charCodeAt(j) <= 57) j++;
      const id = text.slice(i, j);
      let msg;
      try { msg = JSON.parse(text.slice(j)); } catch (_) { return; }
      if (msg[0] === 'room:join' && msg[1] && typeof msg[1].room === 'string') {
        const key = `${ns}|${msg[1].room}`;
        if (!rooms.has(key)) rooms.set(key, new Set());
        rooms.get(key).add(ws);
        joined.add(key);
        if (id) ws.send(`43${prefix}${id}${JSON.stringify([{ ok: true, data: { room: msg[1].room } }])}`);
      } else if (id) {
        ws.send(`43${prefix}${id}${JSON.stringify([{ ok: false, error: { code: 'unknown_event', message: 'unknown event' } }])}`);
      }
    }
  });
  ws.on('close', () => {
    clearInterval(ping);
    for (const key of joined) {
      const set = rooms.get(key);
      if (set) { set.delete(ws); if (!set.size) rooms.delete(key); }
    }
  });
  ws.on('error', () => {});
}

httpServer.listen(port, host, () => {
  console.log(`ws ${require('ws/package.json').version} minimal broadcast server listening on http://${host}:${port}`);
});

function shutdown() {
  for (const ws of wss.clients) ws.terminate();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
