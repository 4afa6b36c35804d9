// Sockets on the server's namespaces through the official socket.io-client (window.io, from
// static/vendor/socket.io.min.js), and acks in the server's {ok, data} / {ok, error} shape.

const ACK_TIMEOUT_MS = 8000;

export class AckError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

/**
 * Connect to a namespace of this server (all namespaces share one connection). `onRefused`
 * hears the server's {code, message} when it refuses the token.
 */
export function connect(namespace, token, { dot, onRefused } = {}) {
  const socket = window.io(namespace, { auth: { token }, transports: ["websocket", "polling"] });
  socket.on("connect_error", (err) => {
    if (!socket.active && onRefused) onRefused(err.data ?? { code: "error", message: err.message });
  });
  if (dot) {
    const mark = (state, title) => {
      dot.dataset.state = state;
      dot.title = title;
    };
    socket.on("connect", () => mark("up", "connected"));
    socket.on("disconnect", (reason) => mark("down", `disconnected: ${reason}`));
    socket.on("connect_error", (err) => mark("down", err.data?.message ?? err.message));
  }
  return socket;
}

/** Emit a client event and resolve with the ack's data, or reject with an AckError. */
export async function call(socket, event, payload = {}) {
  let ack;
  try {
    ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
  } catch {
    throw new AckError("timeout", `no answer to ${event} (are you connected?)`);
  }
  if (ack && ack.ok) return ack.data;
  const err = ack?.error ?? {};
  throw new AckError(err.code ?? "bad_ack", err.message ?? `unexpected answer to ${event}`, err.details);
}

/** A feature the server does not have yet answers unknown_event: say so instead of failing. */
export function unsupported(err) {
  return err instanceof AckError && err.code === "unknown_event";
}

/** The text to show for a refused or failed call. */
export function describe(err) {
  if (err instanceof AckError) {
    const fields = Array.isArray(err.details)
      ? " (" + err.details.map((d) => `${d.field}: ${d.message}`).join("; ") + ")"
      : "";
    return `${err.code}: ${err.message}${fields}`;
  }
  return String(err?.message ?? err);
}
