// The admin console's pages for tests/e2e/test_ui_admin.py: playwright-core driving Debian's
// chromium against a running `atrium serve`. Usage:
//   node admin.mjs BASE_URL ARTIFACTS_DIR
// Credentials in UI_USERNAME/UI_PASSWORD; what the test prepared through the API in
// KEY_NAME, KB_NAME, BAD_FILE, WORKFLOW, NEW_USER, NEW_PASSWORD, TEAM_NAME, and SSO_USER
// (signed in once with an identity provider, which bound its subject).
// Prints one JSON object of observations on stdout; exits non-zero when a step fails.
import { runScenario, screenshots, signIn as fillSignIn } from "./harness.mjs";

const [baseUrl, artifacts] = process.argv.slice(2);
const env = process.env;
const shot = screenshots(artifacts);

async function section(page, name) {
  await page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name, exact: true }).click();
  await page.getByRole("heading", { level: 2, name, exact: true }).waitFor();
}

const cells = async (row) => (await row.innerText()).split("\t").map((cell) => cell.trim());

async function signIn(page) {
  await page.goto(`${baseUrl}/admin/users`);
  await page.waitForURL(/\/login\?next=%2Fadmin%2Fusers/);
  await fillSignIn(page, env.UI_USERNAME, env.UI_PASSWORD);
  await page.waitForURL(/\/admin\/users$/);
  await page.getByRole("table", { name: "Users" }).waitFor();
}

async function users(page, out) {
  const form = page.getByRole("form", { name: "Create a user" });
  const create = form.getByRole("button", { name: "Create user" });
  // Checked before sending: nothing reaches the server.
  let sent = 0;
  const count = (r) => r.url().endsWith("/v1/admin/users") && r.method() === "POST" && (sent += 1);
  page.on("request", count);
  await create.click();
  out.localUsernameError = await form.locator("#user-username-error").innerText();
  out.localPasswordError = await form.locator("#user-password-error").innerText();
  out.usernameInvalid = await form.getByLabel("Username", { exact: true }).getAttribute("aria-invalid");
  out.sentWhenInvalid = sent;
  // The server's refusal (the name is taken) is shown beside the field it names.
  await form.getByLabel("Username", { exact: true }).fill(env.UI_USERNAME);
  await form.getByLabel("Initial password", { exact: true }).fill(env.NEW_PASSWORD);
  await create.click();
  await form.locator("#user-username-error").filter({ hasText: /taken|exists/i }).waitFor();
  out.serverUsernameError = await form.locator("#user-username-error").innerText();
  page.off("request", count);
  await shot(page, "40-admin-user-error");

  await form.getByLabel("Username", { exact: true }).fill(env.NEW_USER);
  await form.getByLabel("Display name", { exact: true }).fill("Console Made");
  await form.getByLabel("Initial password", { exact: true }).fill(env.NEW_PASSWORD);
  await form.getByLabel("Role", { exact: true }).selectOption("builder");
  await create.click();
  await form.getByRole("status").filter({ hasText: "created" }).waitFor();
  const row = page.locator(`tr[data-username="${env.NEW_USER}"]`);
  await row.waitFor();
  out.userRow = await cells(row);
  out.userRole = await row.getByLabel(`Role of ${env.NEW_USER}`).inputValue();
  await shot(page, "41-admin-users");
}

async function identities(page, out) {
  const user = env.SSO_USER;
  const toggle = page.locator(`tr[data-username="${user}"]`).getByRole("button", { name: `Identities of ${user}` });
  await toggle.focus();
  await page.keyboard.press("Enter");
  out.identitiesExpanded = await toggle.getAttribute("aria-expanded");
  const region = page.getByRole("region", { name: `Sign-in identities of ${user}` });
  const table = region.getByRole("table", { name: `Sign-in identities of ${user}` });
  await table.waitFor();
  out.identityRows = await Promise.all((await table.locator("tbody tr").all()).map(cells));
  await shot(page, "51-admin-user-identities");
  // The harness accepts the confirmation; what it asked is kept.
  page.once("dialog", (dialog) => { out.unbindQuestion = dialog.message(); });
  await region.getByRole("button", { name: `Unbind the sign-in identities of ${user}` }).focus();
  await page.keyboard.press("Enter");
  const status = region.getByRole("status").filter({ hasText: "Unbound" });
  await status.waitFor();
  out.unbound = await status.innerText();
  out.focusAfterUnbind = await page.evaluate(() => document.activeElement?.getAttribute("role"));
  out.identitiesLeft = await region.locator(".notice.empty").innerText();
}

async function teams(page, out) {
  await section(page, "Teams");
  const form = page.getByRole("form", { name: "Create a team" });
  await form.getByLabel("Name", { exact: true }).fill(env.TEAM_NAME);
  await form.getByLabel("Budget (USD)", { exact: true }).fill("25");
  await form.getByRole("button", { name: "Create team" }).click();
  out.budgetPeriodError = await form.locator("#team-period-error").innerText();
  await form.getByLabel("Requests a minute", { exact: true }).fill("60");
  await form.getByLabel("Budget period", { exact: true }).selectOption("month");
  await form.getByRole("button", { name: "Create team" }).click();
  const row = page.locator(`tr[data-team="${env.TEAM_NAME}"]`);
  await row.waitFor();
  out.teamRow = await cells(row);
  await shot(page, "42-admin-teams");
}

async function keys(page, out) {
  await section(page, "API keys");
  const form = page.getByRole("form", { name: "Create a key" });
  await form.getByLabel("Name", { exact: true }).fill("team-key");
  await form.getByLabel("Team", { exact: true }).selectOption({ label: env.TEAM_NAME });
  await form.getByLabel("Requests a minute", { exact: true }).fill("many");
  await form.getByRole("button", { name: "Create key" }).click();
  out.keyRpmError = await form.locator("#key-rpm-error").innerText();
  await form.getByLabel("Requests a minute", { exact: true }).fill("30");
  await form.getByLabel("Budget (USD)", { exact: true }).fill("5");
  await form.getByLabel("Budget period", { exact: true }).selectOption("day");
  await form.getByRole("button", { name: "Create key" }).click();
  out.keySecretShown = (await page.getByLabel("New API key").inputValue()).length > 20;
  out.keyRow = await cells(page.locator('tr[data-key-name="team-key"]'));
  await shot(page, "50-admin-key-with-team");
}

async function usage(page, out) {
  await section(page, "Usage");
  await page.getByLabel("By", { exact: true }).selectOption("key");
  const table = page.getByRole("table", { name: "Tokens by API key and day" });
  // Usage is written off the hot path: reload until the key's request is counted.
  for (let attempt = 0; ; attempt += 1) {
    if (await table.locator("thead th", { hasText: env.KEY_NAME }).count()) break;
    if (attempt >= 30) throw new Error(`usage of ${env.KEY_NAME} never appeared`);
    await page.waitForTimeout(1000);
    await page.reload();
    await page.getByLabel("By", { exact: true }).selectOption("key");
    await page.locator(".usage-chart, .notice").first().waitFor();
  }
  out.usageHeaders = await table.locator("thead th").allInnerTexts();
  out.usageRows = await Promise.all((await table.locator("tbody tr").all()).map(cells));
  out.usageChart = await page.locator(".usage-chart canvas").count();
  await shot(page, "43-admin-usage-by-key");
}

async function knowledge(page, out) {
  await section(page, "Knowledge bases");
  await page.getByRole("link", { name: env.KB_NAME, exact: true }).click();
  await page.getByRole("heading", { level: 2, name: env.KB_NAME }).waitFor();
  const failed = page.getByRole("table", { name: "Failed documents" });
  const row = failed.locator(`tr[data-document="${env.BAD_FILE}"]`);
  await row.waitFor();
  out.failedRow = await cells(row);
  out.sourceRow = await cells(page.getByRole("table", { name: "Sources" }).locator("tbody tr").first());
  await shot(page, "44-admin-knowledge-base");
  await page.getByRole("button", { name: "Re-sync uploads" }).click();
  const result = page.locator('tr[data-source="uploads"] [role="status"], tr[data-source="uploads"] [role="alert"]');
  await result.waitFor();
  out.resync = await result.innerText();
}

async function runs(page, out) {
  await section(page, "Workflow runs");
  // Unfiltered: the newest page, then the older runs with "Load more".
  const rows = page.getByRole("table", { name: "Workflow runs" }).locator("tbody tr");
  const pager = page.getByRole("navigation", { name: "More runs" });
  await rows.first().waitFor();
  out.firstPageRows = await rows.count();
  out.firstPageStatus = await pager.getByRole("status").innerText();
  const more = pager.getByRole("button", { name: "Load more" });
  await more.focus();
  await page.keyboard.press("Enter");
  await pager.getByRole("status").filter({ hasText: "all shown" }).waitFor();
  out.allRunIds = await rows.getByRole("link").evaluateAll((links) => links.map((a) => a.getAttribute("aria-label")));
  out.loadMoreLeft = await more.count();
  await page.getByLabel("Workflow", { exact: true }).fill(env.WORKFLOW);
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(new RegExp(`workflow=${env.WORKFLOW}`));
  const table = page.getByRole("table", { name: "Workflow runs" });
  const first = table.locator("tbody tr").first();
  await first.waitFor();
  out.runRows = await Promise.all((await table.locator("tbody tr").all()).map(cells));
  await page.getByLabel("Status", { exact: true }).selectOption("failed");
  await page.locator(".notice.empty").filter({ hasText: "match these filters" }).waitFor();
  out.noFailedRuns = true;
  await page.getByLabel("Status", { exact: true }).selectOption("succeeded");
  await shot(page, "45-admin-workflow-runs");
  await table.locator("tbody tr").first().getByRole("link").click();
  await page.waitForURL(/\/admin\/runs\/[^/]+$/);
  const trace = page.locator("ol.trace");
  await trace.waitFor();
  out.traceNodes = await trace.locator("li.trace-node").evaluateAll((items) => items.map((li) => li.dataset.node));
  const node = page.locator('li.trace-node[data-node="double"]');
  await node.locator("summary").click();
  out.doubleOutputs = await node.locator(".trace-io pre").nth(1).innerText();
  await shot(page, "46-admin-workflow-run-trace");
}

async function audit(page, out) {
  await section(page, "Audit log");
  await page.getByLabel("Action starts with", { exact: true }).fill("POST /v1/admin/users");
  await page.getByRole("button", { name: "Apply" }).click();
  const table = page.getByRole("table", { name: "Audit log" });
  await table.locator("tbody tr").first().waitFor();
  // Newest first: the user made in the console, then the refused attempt.
  await page.waitForFunction(() => document.querySelectorAll('table[aria-label="Audit log"] tbody tr').length >= 2);
  out.auditRows = await Promise.all((await table.locator("tbody tr").all()).map(cells));
  await shot(page, "47-admin-audit-log");
}

async function health(page, out) {
  await section(page, "System health");
  await page.getByRole("table", { name: "Model health" }).waitFor();
  out.healthFacts = await page.locator(".health-summary").innerText();
  out.modelRows = await Promise.all((await page.getByRole("table", { name: "Model health" }).locator("tbody tr").all()).map(cells));
  out.alertsEmpty = await page.locator(".notice.empty", { hasText: "No alerts" }).count();
  await shot(page, "48-admin-health");
}

async function experiments(page, out) {
  await section(page, "Experiments");
  const form = page.getByRole("form", { name: "Start an experiment" });
  await form.getByLabel("Public name").fill("chat-ab");
  await form.getByLabel("Arm A (model)").fill("smol");
  await form.getByLabel("Arm B (model)").fill("smol");
  await form.getByRole("button", { name: "Start experiment" }).click();
  out.experimentArmError = await form.locator("#experiment-b-error").innerText();
  await shot(page, "49-admin-experiment-form");
}

runScenario(
  "admin-console",
  async (page, out) => {
    await signIn(page);
    for (const step of [users, identities, teams, keys, usage, knowledge, runs, audit, health, experiments]) await step(page, out);
  },
  { artifacts, acceptDialogs: true },
);
