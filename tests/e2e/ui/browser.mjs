// Browser scenarios for tests/e2e/test_ui.py: playwright-core driving Debian's chromium
// against a running `atrium serve`. Usage:
//   node browser.mjs SCENARIO BASE_URL ARTIFACTS_DIR   (credentials in UI_USERNAME/UI_PASSWORD)
// Prints one JSON object of observations on stdout; exits non-zero when a step fails.
import { runScenario, screenshots, signIn } from "./harness.mjs";

const [scenario, baseUrl, artifacts] = process.argv.slice(2);
const username = process.env.UI_USERNAME;
const password = process.env.UI_PASSWORD;
const shot = screenshots(artifacts);
const ANSWER_TIMEOUT_MS = 120_000;

/** Records every text the streaming answer shows, to prove it appeared piece by piece. */
async function watchStreaming(page) {
  await page.evaluate(() => {
    window.__streamTexts = [];
    const observer = new MutationObserver(() => {
      const node = document.querySelector(".message.assistant.streaming .markdown");
      const text = node ? node.textContent : null;
      const seen = window.__streamTexts;
      if (text && seen[seen.length - 1] !== text) seen.push(text);
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true });
  });
}

async function chat(page) {
  const out = {};
  await page.goto(`${baseUrl}/chat`);
  await page.waitForURL(/\/login\?next=%2Fchat/);
  await shot(page, "01-login");
  await signIn(page, username, password);
  await page.waitForURL(/\/chat$/);
  const picker = page.getByLabel("Model", { exact: true });
  await page.waitForFunction(() => document.querySelector("#model-picker")?.value);
  out.model = await picker.inputValue();
  await shot(page, "02-chat-empty");

  const prompt = "List three fruits as a Markdown bullet list.";
  await watchStreaming(page);
  await page.getByLabel("Message", { exact: true }).fill(prompt);
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.waitForURL(/\/chat\/[0-9a-f]{32}$/);
  await page.locator(".message.assistant.streaming").waitFor({ state: "detached", timeout: ANSWER_TIMEOUT_MS });
  const answer = page.locator(".message.assistant").last();
  out.answer = (await answer.locator(".markdown").innerText()).trim();
  out.answerHtml = await answer.locator(".markdown").innerHTML();
  out.streamTexts = await page.evaluate(() => window.__streamTexts);
  out.conversationUrl = page.url();
  out.sidebar = await page.locator(".conversation-list li a").allInnerTexts();
  out.regenerateVisible = await page.getByRole("button", { name: /Regenerate/ }).isVisible();
  await shot(page, "03-chat-answer");

  await page.getByRole("button", { name: /Switch to the (dark|light) theme/ }).click();
  out.theme = await page.evaluate(() => document.documentElement.dataset.theme);
  await shot(page, "04-chat-other-theme");

  await page.reload();
  await page.locator(".message.assistant .markdown").first().waitFor();
  out.afterReload = {
    user: await page.locator(".message.user").first().innerText(),
    answer: (await page.locator(".message.assistant .markdown").last().innerText()).trim(),
    sidebar: await page.locator(".conversation-list li a").allInnerTexts(),
  };
  await shot(page, "05-chat-reloaded");

  await page.getByLabel("Search conversations").fill("fruits");
  await page.waitForTimeout(400); // the search box is debounced by 250 ms
  await page.locator(".conversation-list li").first().waitFor();
  out.searchHits = await page.locator(".conversation-list li a").allInnerTexts();
  await page.getByLabel("Search conversations").fill("no-such-words-anywhere");
  await page.getByText("No conversation matches.").waitFor();
  out.searchMiss = true;

  // The session ends while a draft is typed: sign in again, land back with the draft.
  const draft = "A draft that must survive signing in again";
  await page.getByLabel("Message", { exact: true }).fill(draft);
  await page.context().clearCookies();
  await page.reload();
  await page.waitForURL(/\/login\?next=/);
  await shot(page, "06-session-ended");
  await signIn(page, username, password);
  await page.waitForURL(out.conversationUrl);
  out.draftAfterSignIn = await page.getByLabel("Message", { exact: true }).inputValue();

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/login$/);
  await page.goto(`${baseUrl}/chat`);
  await page.waitForURL(/\/login\?next=/);
  out.signedOut = true;
  await shot(page, "07-signed-out");
  return out;
}

async function wrongPassword(page) {
  await page.goto(`${baseUrl}/login`);
  await signIn(page, username, "certainly-not-the-password");
  const alert = page.locator("#login-error");
  await alert.filter({ hasText: /\S/ }).waitFor();
  const out = { error: (await alert.innerText()).trim(), url: page.url() };
  await shot(page, "08-login-wrong-password");
  return out;
}

const RELEASE_TIMEOUT_MS = 180_000;

/** Opens an admin section from the sub-navigation (as a person would). */
async function adminSection(page, name) {
  await page.getByRole("navigation", { name: "Admin" }).getByRole("link", { name, exact: true }).click();
  await page.getByRole("heading", { level: 2, name, exact: true }).waitFor();
}

async function admin(page) {
  const out = {};
  const releaseId = process.env.RELEASE_ID;
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(`${baseUrl}/admin`);
  await page.waitForURL(/\/login\?next=%2Fadmin/);
  await signIn(page, username, password);
  await page.waitForURL(/\/admin\/releases$/);
  out.adminNav = await page.getByRole("navigation", { name: "Admin" }).getByRole("link").allInnerTexts();

  // The list polls while the release runs: wait for it to reach "Promoted" on screen.
  const row = page.getByRole("row").filter({ hasText: releaseId });
  await row.getByTestId("release-stage").filter({ hasText: "Promoted" }).waitFor({ timeout: RELEASE_TIMEOUT_MS });
  out.releaseRow = (await row.innerText()).split("\t").map((cell) => cell.trim());
  await shot(page, "10-admin-releases");

  await row.getByRole("link", { name: releaseId }).click();
  await page.waitForURL(new RegExp(`/admin/releases/${releaseId}$`));
  const timeline = page.getByRole("list", { name: "Release timeline" });
  await timeline.waitFor();
  out.timelineStages = await timeline.locator(":scope > li .timeline-head strong").allInnerTexts();
  out.releaseStage = await page.getByTestId("release-stage").innerText();
  await shot(page, "11-admin-release-timeline");
  // An ended release: the server refuses with 409, and the page says why.
  await page.getByRole("button", { name: "Pause", exact: true }).click();
  out.pauseError = await page.getByTestId("action-error").innerText();

  await adminSection(page, "Deployments");
  const card = page.locator('[data-deployment="smol-v1"]');
  await card.getByTestId("ready-count").filter({ hasText: /^1 of 1 replicas ready/ }).waitFor({ timeout: 60_000 });
  out.readyCount = await card.getByTestId("ready-count").innerText();
  out.replicaStates = await card.getByRole("table").locator("tbody tr td:nth-child(2)").allInnerTexts();
  await card.getByLabel("Replicas", { exact: true }).fill("5");
  await card.getByRole("button", { name: "Scale" }).click();
  out.scaleError = await card.getByRole("alert").innerText();
  await shot(page, "12-admin-deployments");

  await adminSection(page, "Models");
  await page.getByRole("button", { name: /smol/ }).click();
  const versions = page.getByRole("table", { name: "Versions of smol" });
  await versions.waitFor();
  out.versionRows = (await versions.locator("tbody tr").allInnerTexts()).map((r) => r.split("\t").map((c) => c.trim()));
  await shot(page, "13-admin-models");

  await adminSection(page, "Experiments");
  await page.getByText("No A/B experiments.").waitFor();
  out.experimentsEmpty = true;
  await shot(page, "14-admin-experiments");

  await adminSection(page, "API keys");
  await page.getByLabel("Name", { exact: true }).fill(process.env.KEY_NAME);
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = page.getByLabel("New API key");
  await secret.waitFor();
  out.secret = await secret.inputValue();
  out.keyNames = await page.getByRole("table", { name: "API keys" }).locator("tbody tr td:first-child").allInnerTexts();
  await shot(page, "15-admin-key-created");
  // Shown once: after "Done" (or a reload) the secret is nowhere on the page.
  await page.getByRole("button", { name: "Done" }).click();
  await page.reload();
  await page.getByRole("table", { name: "API keys" }).waitFor();
  out.secretStillShown = (await page.content()).includes(out.secret);
  await page.getByRole("button", { name: /Switch to the (dark|light) theme/ }).click();
  await shot(page, "16-admin-keys-other-theme");
  return out;
}

async function adminRevoke(page) {
  const out = {};
  const keyName = process.env.KEY_NAME;
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(`${baseUrl}/admin/keys`);
  await signIn(page, username, password);
  await page.waitForURL(/\/admin\/keys$/);
  const row = page.locator(`tr[data-key-name="${keyName}"]`);
  await row.getByRole("button", { name: `Revoke ${keyName}` }).click();
  await row.getByText("Revoked", { exact: true }).waitFor();
  out.revoked = true;
  await shot(page, "17-admin-key-revoked");

  // The key's chat request shows up in usage by model and day (written within a second).
  await adminSection(page, "Usage");
  const table = page.getByRole("table", { name: "Tokens by model and day" });
  for (let attempt = 0; ; attempt += 1) {
    if (await table.getByRole("columnheader", { name: "smol", exact: true }).isVisible().catch(() => false)) break;
    if (attempt >= 30) throw new Error("usage for smol never appeared");
    await page.waitForTimeout(1000);
    await page.reload();
    await page.getByRole("heading", { level: 2, name: "Usage" }).waitFor();
    await page.locator(".usage-chart, .notice").first().waitFor();
  }
  out.usageHeaders = await table.locator("thead th").allInnerTexts();
  out.usageRows = (await table.locator("tbody tr").allInnerTexts()).map((r) => r.split("\t").map((c) => c.trim()));
  out.chartCanvas = await page.locator(".usage-chart canvas").count();
  await shot(page, "18-admin-usage");
  return out;
}

async function notAdmin(page) {
  await page.goto(`${baseUrl}/admin/releases`);
  await signIn(page, username, password);
  await page.getByRole("heading", { name: "Admins only" }).waitFor();
  const out = {
    adminLinkInTopbar: await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Admin" }).count(),
    text: await page.locator(".empty-state").innerText(),
  };
  await shot(page, "19-admin-not-admin");
  return out;
}

/** Drags from one handle of the canvas to another, as a person connecting two blocks does. */
async function connect(page, [fromNode, fromHandle], [toNode, toHandle]) {
  const handle = (node, id, kind) => page.locator(`.react-flow__node[data-id="${node}"] .react-flow__handle.${kind}[data-handleid="${id}"]`);
  const from = await handle(fromNode, fromHandle, "source").boundingBox();
  const to = await handle(toNode, toHandle, "target").boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(to.x + to.width / 2, to.y + to.height / 2, { steps: 12 });
  await page.mouse.up();
}

/** Selects a block on the canvas and fills one field of its side-panel form. */
async function configure(page, nodeId, label, value) {
  await page.locator(`.react-flow__node[data-id="${nodeId}"] .wf-node-head`).click();
  const field = page.getByRole("region", { name: `Block ${nodeId}` }).getByLabel(new RegExp(`^${label}`));
  await field.fill(value);
  await field.blur();
}

async function workflow(page) {
  const out = {};
  const canvas = page.locator(".react-flow__pane");
  const nodeCount = () => page.locator(".react-flow__node").count();
  await page.goto(`${baseUrl}/workflows`);
  await page.waitForURL(/\/login\?next=%2Fworkflows/);
  await signIn(page, username, password);
  await page.waitForURL(/\/workflows$/);
  await page.locator('.react-flow__node[data-id="end"]').waitFor();
  out.palette = await page.getByRole("navigation", { name: "Blocks" }).getByRole("button").allInnerTexts();
  await page.getByLabel("Workflow name", { exact: true }).fill(process.env.WORKFLOW_NAME);
  await page.getByLabel("Workflow name", { exact: true }).press("Enter");

  // The starter blocks go with the Delete key; Ctrl+Z brings one back.
  await page.locator('.react-flow__node[data-id="end"] .wf-node-head').click();
  await page.keyboard.press("Delete");
  out.afterDelete = await nodeCount();
  await canvas.click({ position: { x: 5, y: 5 } });
  await page.keyboard.press("Control+z");
  out.afterUndo = await nodeCount();
  for (const id of ["end", "start"]) {
    await page.locator(`.react-flow__node[data-id="${id}"] .wf-node-head`).click();
    await page.keyboard.press("Delete");
  }
  out.emptied = await nodeCount();

  // Three blocks dragged from the palette, then configured in the side panel.
  const drops = { start: { x: 80, y: 160 }, transform: { x: 380, y: 160 }, end: { x: 680, y: 160 } };
  for (const [type, targetPosition] of Object.entries(drops)) {
    await page.locator(`[data-block-type="${type}"]`).dragTo(canvas, { targetPosition });
    await page.locator(`.react-flow__node[data-id="${type}"]`).waitFor();
  }
  await configure(page, "start", "Workflow inputs", '{"text": {"type": "string"}}');
  await page.locator('.react-flow__node[data-id="transform"] .wf-node-head').click();
  await page.getByRole("region", { name: "Block transform" }).getByLabel("Language", { exact: true }).selectOption("jinja");
  await configure(page, "transform", "Expressions", '{"shout": "data | upper"}');
  await configure(page, "end", "Outputs", '{"result": {"type": "string"}}');
  // Validation runs on the server a moment after the last edit: wait for its answer.
  await page.getByTestId("node-problems").first().waitFor();
  out.problemsBeforeWiring = await page.getByTestId("node-problems").allInnerTexts();

  // A control handle into a value input is refused, with the reason.
  await connect(page, ["start", "done"], ["end", "result"]);
  out.refused = await page.getByTestId("builder-notice").innerText();
  await connect(page, ["start", "text"], ["transform", "data"]);
  await connect(page, ["transform", "shout"], ["end", "result"]);
  out.edges = await page.locator(".react-flow__edge").count();
  await canvas.click({ position: { x: 5, y: 5 } });
  await page.getByTestId("validity").filter({ hasText: "No problems found." }).waitFor();
  out.problemsAfterWiring = await page.getByTestId("node-problems").count();
  await shot(page, "20-workflow-builder");

  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await page.getByTestId("save-status").filter({ hasText: "v1 published" }).waitFor();
  out.saveStatus = await page.getByTestId("save-status").innerText();
  const input = page.getByRole("form", { name: "Run inputs" }).getByLabel(/^text/);
  await input.fill("hello builder");
  await input.blur();
  await page.getByRole("button", { name: "Run", exact: true }).click();
  await page.getByTestId("run-status").filter({ hasText: /succeeded|failed|cancelled/ }).waitFor({ timeout: 60_000 });
  out.runStatus = await page.getByTestId("run-status").innerText();
  out.runOutputs = JSON.parse(await page.getByTestId("run-outputs").innerText());
  out.nodeStatuses = await page.locator(".react-flow__node").evaluateAll((nodes) =>
    Object.fromEntries(nodes.map((n) => [n.dataset.id, n.querySelector("[data-testid=node-status]")?.textContent ?? null])),
  );
  await page.locator('.react-flow__node[data-id="transform"] .wf-node-head').click();
  const detail = page.getByRole("region", { name: "Last run of transform" });
  out.transformInputs = JSON.parse(await detail.getByTestId("detail-inputs").innerText());
  out.transformOutputs = JSON.parse(await detail.getByTestId("detail-outputs").innerText());
  out.transformStatus = await detail.getByTestId("detail-status").innerText();
  await shot(page, "21-workflow-run");
  return out;
}

/** Asks a knowledge base in the chat, opens a citation, rates the answer, attaches a document. */
async function kbChat(page) {
  const out = {};
  const kb = process.env.KB_NAME;
  await page.goto(`${baseUrl}/chat`);
  await signIn(page, username, password);
  await page.waitForURL(/\/chat$/);
  await page.locator(`#kb-picker option[value="${kb}"]`).waitFor({ state: "attached" });
  await page.getByLabel("Knowledge base", { exact: true }).selectOption(kb);
  await page.getByLabel("Message", { exact: true }).fill(process.env.KB_QUESTION);
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.waitForURL(/\/chat\/[0-9a-f]{32}$/);
  await page.locator(".message.assistant.streaming").waitFor({ state: "detached", timeout: ANSWER_TIMEOUT_MS });
  const answer = page.locator(".message.assistant").last();
  out.answer = (await answer.locator(".markdown").innerText()).trim();
  out.answerModel = await answer.locator(".message-meta").innerText();
  const sources = answer.locator("aside.citations");
  out.citations = await sources.getByRole("button").allInnerTexts();
  await shot(page, "30-chat-kb-answer");

  await sources.getByRole("button").first().click();
  const drawer = page.getByRole("dialog", { name: "Citation 1" });
  await drawer.waitFor();
  out.drawerTitle = await drawer.getByRole("heading").innerText();
  out.drawerText = await drawer.getByTestId("citation-text").innerText();
  out.drawerLink = await drawer.getByRole("link").getAttribute("href").catch(() => null);
  await shot(page, "31-chat-citation-open");
  await page.keyboard.press("Escape");
  await drawer.waitFor({ state: "detached" });

  await answer.getByRole("button", { name: "Bad answer" }).click();
  await answer.getByLabel("Comment (optional)").fill(process.env.KB_COMMENT);
  const sent = page.waitForResponse((r) => r.url().endsWith(`/v1/knowledge-bases/${kb}/feedback`));
  await answer.getByRole("button", { name: "Send feedback" }).click();
  out.feedbackStatus = (await sent).status();
  out.feedbackGiven = await answer.getByTestId("feedback-given").innerText();
  await shot(page, "32-chat-kb-feedback");

  // Kept with the conversation: after a reload the sources and the rating are still there.
  await page.waitForLoadState("networkidle");
  await page.reload();
  const kept = page.locator(".message.assistant").last();
  await kept.locator("aside.citations").waitFor();
  out.citationsAfterReload = await kept.locator("aside.citations").getByRole("button").allInnerTexts();
  out.feedbackAfterReload = await kept.getByTestId("feedback-given").innerText();
  out.kbAfterReload = await page.getByLabel("Knowledge base", { exact: true }).inputValue();

  // "Analyze this": a new chat with the plain model; a file of the wrong type is refused
  // before it is sent, a Markdown memo is read by the server, the next question carries it.
  await page.getByRole("link", { name: "+ New chat" }).click();
  await page.waitForURL(/\/chat$/);
  await page.getByLabel("Knowledge base", { exact: true }).selectOption("");
  await page.locator("#attach-input").setInputFiles({ name: "photo.png", mimeType: "image/png", buffer: Buffer.from([137, 80, 78, 71]) });
  out.refusedAttachment = await page.locator(".error.banner").innerText();
  const memo = process.env.MEMO_TEXT;
  const read = page.waitForResponse((r) => r.url().endsWith("/v1/attachments") && r.request().method() === "POST");
  await page.locator("#attach-input").setInputFiles({ name: "memo.md", mimeType: "text/markdown", buffer: Buffer.from(memo) });
  out.attachmentStatus = (await read).status();
  await page.getByTestId("attachment").waitFor();
  out.attachment = await page.getByTestId("attachment").innerText();
  await page.waitForURL(/\/chat\/[0-9a-f]{32}$/);
  const asked = page.waitForRequest((r) => r.url().endsWith("/v1/chat/completions"));
  await page.getByLabel("Message", { exact: true }).fill("What is the code word in the memo?");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  const body = JSON.parse((await asked).postData());
  out.askedWithMemo = body.messages.some((m) => m.content.includes(memo.trim()));
  out.askedRoles = body.messages.map((m) => m.role);
  await page.locator(".message.assistant.streaming").waitFor({ state: "detached", timeout: ANSWER_TIMEOUT_MS });
  await shot(page, "33-chat-attachment");
  return out;
}

const scenarios = {
  chat, "kb-chat": kbChat, "wrong-password": wrongPassword, admin, "admin-revoke": adminRevoke, "not-admin": notAdmin, workflow,
};

runScenario(scenario, (page) => scenarios[scenario](page), { artifacts });
