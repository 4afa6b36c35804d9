// The signed-in token: kept in this tab's sessionStorage; its claims decoded for display only
// (the server verifies the signature on every connection and request).

const KEY = "ours.console.token";

export function decodeClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("that is not a JWT (three dot-separated parts)");
  const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
  const json = atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), "="));
  const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  if (typeof claims.sub !== "string" || !claims.sub) throw new Error("the token has no subject");
  return claims;
}

export function load() {
  const token = sessionStorage.getItem(KEY);
  if (!token) return null;
  try {
    return { token, claims: decodeClaims(token) };
  } catch {
    sessionStorage.removeItem(KEY);
    return null;
  }
}

export function save(token) {
  const session = { token, claims: decodeClaims(token) };
  sessionStorage.setItem(KEY, token);
  return session;
}

export function clear() {
  sessionStorage.removeItem(KEY);
}

export function expired(session) {
  return typeof session.claims.exp === "number" && session.claims.exp * 1000 <= Date.now();
}
