// The operator view with two nodes: sign in on one with an admin token, open the operator tab,
// see both nodes up in the cluster table with their connections, and the per-node charts drawn.
//
// Run by tests/test_console_browser.py, which starts two `ours serve` processes on Redis and
// passes, as JSON in CLUSTER_TEST: {url, token, nodes: [id, id], screenshots}.

import { join } from "node:path";
import { finish, step, WAIT, withBrowser } from "./common.mjs";

const config = JSON.parse(process.env.CLUSTER_TEST ?? "{}");
const problems = [];

async function run(context) {
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  await page.goto(`${config.url}/console/`);
  await page.fill("#token", config.token);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator("#who-user").getByText(/^user /).waitFor(WAIT);
  step("signed in");

  await page.click("#tabs button[data-tab=operator]");
  for (const id of config.nodes) {
    await page.locator(`#cluster tr[data-node="${id}"][data-state=up]`).waitFor(WAIT);
  }
  await page.waitForFunction(() => document.querySelector("#cluster")?.dataset.nodesUp === "2", null, WAIT);
  step("both nodes up", { nodes: config.nodes });

  const legend = page.locator("[data-chart=node-connections] .legend li");
  await page.waitForFunction(
    () => document.querySelectorAll("[data-chart=node-connections] .legend li").length >= 2,
    null,
    WAIT,
  );
  step("per-node charts drawn", { series: await legend.count() });
  if (config.screenshots) await page.screenshot({ path: join(config.screenshots, "console-cluster.png") });
  if (problems.length) throw new Error(problems.join("\n"));
}

finish(() => withBrowser(run), problems);
