// The web console in a real browser: Debian's Chromium driven by playwright-core.
//
// Run by tests/test_console_browser.py, which starts a server and passes, as JSON in the
// CONSOLE_TEST environment variable:
//   {url, tokens: {alice, bob, admin, forged}, publish: {argv, env, contentId}, screenshots}
// Prints one JSON line per step; exits 0 when every check passed, 1 otherwise.

import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { finish, step, WAIT, withBrowser } from "./common.mjs";

const config = JSON.parse(process.env.CONSOLE_TEST ?? "{}");
const problems = [];

async function openConsole(context, who, token) {
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`${who}: page error: ${err.message}`));
  page.on("console", (msg) => {
    // the operator view's refused request (a user token) is expected; nothing else is
    if (msg.type() === "error" && !/status of 403/.test(msg.text())) {
      problems.push(`${who}: console error: ${msg.text()}`);
    }
  });
  await page.goto(`${config.url}/console/`);
  await page.fill("#token", token);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator("#who-user").getByText(/^user /).waitFor(WAIT);
  return page;
}

const connected = (page, panel) => page.locator(`#${panel}-panel .dot[data-state=up]`).waitFor(WAIT);

/** `ours publish content.created … --subject zone:music` as a person would type it. */
async function publish() {
  const [cmd, ...args] = config.publish.argv;
  const { stdout } = await promisify(execFile)(cmd, args, { env: config.publish.env });
  const answer = JSON.parse(stdout);
  if (!answer.success) throw new Error(`ours publish answered ${stdout}`);
  return answer.data;
}

async function shot(page, name, selector) {
  if (!config.screenshots) return;
  const path = join(config.screenshots, `${name}.png`);
  if (selector) await page.locator(selector).screenshot({ path });
  else await page.screenshot({ path });
  step("screenshot", { path });
}

async function main() {
  if (config.screenshots) mkdirSync(config.screenshots, { recursive: true });
  await withBrowser(run);
}

async function run(context) {
  // two users sign in, each in a page of their own
  const alice = await openConsole(context, "alice", config.tokens.alice);
  const bob = await openConsole(context, "bob", config.tokens.bob);
  for (const panel of ["feed", "messages", "presence", "notifications", "stage"]) {
    await connected(alice, panel);
    await connected(bob, panel);
  }
  step("signed in", { users: ["alice", "bob"] });

  // the token is kept in the tab: a reload stays signed in
  await alice.reload();
  await alice.locator("#who-user").getByText("user alice").waitFor(WAIT);
  await connected(alice, "feed");
  await connected(alice, "messages");
  step("reload keeps the session");

  // live feed: `ours publish content.created --subject zone:music` shows up in the panel
  await alice.locator("#feed-panel .note").getByText("Listening on zone:music").waitFor(WAIT);
  step("ours publish", { answer: await publish() });
  const event = alice.locator('#feed-panel .event[data-type="content.created"]', {
    hasText: config.publish.contentId,
  });
  await event.waitFor(WAIT);
  await event.getByText("zone:music").waitFor(WAIT);
  step("feed shows the published event");
  await shot(alice, "console-feed", "#feed-panel");

  // a direct conversation: typing, the message, the read receipt, a reply
  await alice.fill("#messages-panel input[name=peer]", "bob");
  await alice.press("#messages-panel input[name=peer]", "Enter");
  await alice.locator("#messages-panel .conv-title").getByText("with bob").waitFor(WAIT);
  await bob.fill("#messages-panel input[name=peer]", "alice");
  await bob.press("#messages-panel input[name=peer]", "Enter");
  await bob.locator("#messages-panel .conv-title").getByText("with alice").waitFor(WAIT);
  step("conversation open on both sides");

  await alice.locator("#messages-panel input[name=body]").pressSequentially("hello bob");
  await bob.locator("#messages-panel .typing").getByText("alice is typing…").waitFor(WAIT);
  step("bob sees alice typing");

  await alice.press("#messages-panel input[name=body]", "Enter");
  await bob.locator("#messages-panel li.theirs .text").getByText("hello bob").waitFor(WAIT);
  step("bob receives the message");
  await bob.waitForFunction(() => document.querySelector("#messages-panel .typing").textContent === "", null, WAIT);
  step("the typing line clears when the message arrives");
  await alice.locator('#messages-panel li.mine[data-status="read"]').getByText("hello bob").waitFor(WAIT);
  step("alice sees bob's read receipt");

  await bob.fill("#messages-panel input[name=body]", "hi alice!");
  await bob.press("#messages-panel input[name=body]", "Enter");
  await alice.locator("#messages-panel li.theirs .text").getByText("hi alice!").waitFor(WAIT);
  step("alice receives the reply");

  // the inbox: alice's message reached bob's notifications; "Mark all read" clears the badge
  await bob.locator("#notifications-panel .inbox li.unread").first().waitFor(WAIT);
  await bob.click("#notifications-panel button.read-all");
  await bob.locator("#notifications-panel .badge").waitFor({ ...WAIT, state: "hidden" });
  await bob.locator("#notifications-panel .inbox li.unread").first().waitFor({ ...WAIT, state: "detached" });
  step("bob's inbox hears the message and marks it read");

  // presence: watching bob (connected) and carol (never seen), or "unavailable" without it
  await alice.fill("#presence-panel input[name=users]", "bob, carol");
  await alice.press("#presence-panel input[name=users]", "Enter");
  await alice.waitForFunction(() => {
    const note = document.querySelector("#presence-panel .note").textContent;
    return note.includes("unavailable") || document.querySelectorAll("#presence-panel tbody tr").length === 2;
  }, null, WAIT);
  const presence = await alice.evaluate(() => ({
    note: document.querySelector("#presence-panel .note").textContent,
    rows: [...document.querySelectorAll("#presence-panel tbody tr")].map((tr) =>
      [...tr.cells].map((td) => td.textContent)),
  }));
  const bobRow = presence.rows.find((r) => r[0] === "bob");
  if (presence.rows.length && !(bobRow && bobRow[1] && bobRow[1] !== "unknown")) {
    throw new Error(`presence rows without bob's status: ${JSON.stringify(presence)}`);
  }
  step("presence panel answers", presence);

  await shot(alice, "console-alice");
  await shot(bob, "console-bob");

  // an audio room's stage: alice hosts, bob raises a hand, is invited, accepts, is muted
  const stageOf = (page) => page.locator("#stage-panel");
  await alice.fill("#stage-panel input[name=title]", "Console demo");
  await stageOf(alice).getByRole("button", { name: "Create room" }).click();
  await stageOf(alice).locator(".stage-head").getByText("Console demo").waitFor(WAIT);
  const roomId = await alice.inputValue("#stage-panel input[name=room]");
  await bob.fill("#stage-panel input[name=room]", roomId);
  await stageOf(bob).getByRole("button", { name: "Join" }).click();
  await stageOf(bob).locator(".stage-head").getByText("Console demo").waitFor(WAIT);

  await stageOf(bob).getByRole("button", { name: "Raise hand" }).click();
  const hand = stageOf(alice).locator("[data-part=queue] li", { hasText: "bob" });
  await hand.getByRole("button", { name: "Invite" }).click();
  await stageOf(bob).locator(".invitation").getByRole("button", { name: "Accept" }).click();
  const speaker = stageOf(alice).locator("[data-part=on-stage] li", { hasText: "bob" });
  await speaker.getByRole("button", { name: "Mute" }).click();
  await stageOf(bob).locator("[data-part=on-stage] li", { hasText: "bob (you)" }).locator(".tag", { hasText: "muted" }).waitFor(WAIT);
  step("stage: hand raised, invited, accepted, muted", { roomId });
  await shot(alice, "console-stage", "#stage-panel");

  // a token the server does not accept: back to the sign-in form with the server's reason
  const forged = await context.newPage();
  forged.on("pageerror", (err) => problems.push(`forged: page error: ${err.message}`));
  await forged.goto(`${config.url}/console/`);
  await forged.fill("#token", config.tokens.forged);
  await forged.click("#sign-in-form button[type=submit]");
  await forged.locator("#sign-in-error").getByText("The server refused the token").waitFor(WAIT);
  if (await forged.evaluate(() => sessionStorage.length)) throw new Error("a refused token was kept");
  step("a refused token signs out");
  await forged.close();

  // the operator view: refused without the admin role, charts with it
  await bob.click("#tabs button[data-tab=operator]");
  await bob.locator("#operator .note").getByText("needs an admin token").waitFor(WAIT);
  step("operator view refuses a user token");

  const ops = await openConsole(context, "admin", config.tokens.admin);
  await ops.click("#tabs button[data-tab=operator]");
  const connections = ops.locator('[data-chart=connections] .legend li', { hasText: "/messages" });
  await connections.waitFor(WAIT);
  // sockets of alice, bob and admin on /messages: at least 3 (a reload may still be closing one)
  await ops.waitForFunction(() => {
    const li = [...document.querySelectorAll("[data-chart=connections] .legend li")].find((x) =>
      x.textContent.includes("/messages"),
    );
    return li && Number(li.querySelector("b").textContent) >= 3;
  }, null, WAIT);
  const drawn = { ...WAIT, state: "attached" }; // a flat line has no height: not "visible"
  await ops.locator("[data-chart=events] path.line").first().waitFor(drawn);
  await publish(); // a fan-out between two samples draws the latency quantiles
  await ops.locator("[data-chart=latency] .line").first().waitFor(drawn);
  step("operator charts drawn");
  if (config.screenshots) {
    await publish(); // a little more history for the picture
    await ops.waitForFunction(() => Number(document.querySelector("#operator").dataset.samples) >= 5, null, WAIT);
  }
  await shot(ops, "console-operator");

  if (problems.length) throw new Error(problems.join("\n"));
}

finish(main, problems);
