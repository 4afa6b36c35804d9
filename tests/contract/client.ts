// A client developer's check: three calls through the types openapi-typescript generates
// from /v1/openapi.json (tests/test_contract_http.py writes ./openapi.d.ts beside this file).
// If the document loses one of these routes, or their request or response schemas, this file
// no longer type-checks.
import type { paths } from "./openapi";

type Ok<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { "application/json": infer Body } } };
}
  ? Body
  : never;

type Health = Ok<"/health", "get", 200>;
type Published = Ok<"/v1/events", "post", 202>;
type EventBody = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"];
type Preferences = Ok<"/v1/me/preferences", "get", 200>;

const base = process.env.OURS_URL ?? "http://127.0.0.1:8080";

async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
  const res = await fetch(base + path, init);
  return (await res.json()) as T;
}

async function health(): Promise<Health["data"]["status"]> {
  const body = await call<Health>("/health");
  return body.data.status;
}

async function publish(event: EventBody): Promise<Published["data"]> {
  const body = await call<Published>("/v1/events", {
    method: "POST",
    headers: {
      authorization: `Bearer ${process.env.OURS_API_KEY}`,
      "content-type": "application/json",
    },
    body: JSON.stringify(event),
  });
  if (!body.success) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

async function preferences(): Promise<Preferences["data"]> {
  const body = await call<Preferences>("/v1/me/preferences", {
    headers: { authorization: `Bearer ${process.env.OURS_TOKEN}` },
  });
  return body.data;
}

const event: EventBody = {
  type: "content.created",
  subjects: ["zone:music"],
  payload: { content_id: "c_ts", kind: "video", creator_id: "u_7" },
};
const published: Published["data"] = await publish(event);
const id: string = published.id;
console.log(
  JSON.stringify({ health: await health(), published, id, preferences: await preferences() }),
);
