// What the browser tests share: Chromium's flags for this machine (no background networking:
// its connections are refused here), a persistent context on a fresh profile, one JSON line
// per step on stdout.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const WAIT = { timeout: 15_000 }; // how long a condition may take to become true

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));

/** Run `fn(context)` in a headless Chromium with a new, empty profile; always clean up. */
export async function withBrowser(fn) {
  const profile = mkdtempSync(join(tmpdir(), "ours-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  try {
    await fn(context);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

/** Exit 0 after "done" when `main` resolves, 1 with the error when it throws. */
export function finish(main, problems = []) {
  main().then(
    () => {
      step("done", { ok: true });
      process.exit(0);
    },
    (err) => {
      step("failed", { ok: false, error: String(err?.stack ?? err), problems });
      process.exit(1);
    },
  );
}
