// The workflow builder's editing, drafts and versions for tests/e2e/test_ui_builder.py:
// playwright-core driving Debian's chromium against a running `atrium serve`. Usage:
//   node builder.mjs BASE_URL ARTIFACTS_DIR
// Credentials in UI_USERNAME/UI_PASSWORD, the workflow's name in WORKFLOW_NAME, a published
// workflow with an approval block (prepared through the API) in APPROVAL_WORKFLOW.
// Prints one JSON object of observations on stdout; exits non-zero when a step fails.
import { runScenario, screenshots, signIn as fillSignIn } from "./harness.mjs";

const [baseUrl, artifacts] = process.argv.slice(2);
const env = process.env;
const shot = screenshots(artifacts);
const DRAFT_KEY = `atrium.workflows.draft:${env.UI_USERNAME}`;

async function signIn(page) {
  await fillSignIn(page, env.UI_USERNAME, env.UI_PASSWORD);
}

const node = (page, id) => page.locator(`.react-flow__node[data-id="${id}"]`);
const nodeIds = (page) => page.locator(".react-flow__node").evaluateAll((nodes) => nodes.map((n) => n.dataset.id));
const status = (page) => page.getByTestId("save-status");
const draft = (page) => page.evaluate((key) => JSON.parse(localStorage.getItem(key) ?? "null"), DRAFT_KEY);

async function select(page, id) {
  await node(page, id).locator(".wf-node-head").click();
  await page.getByRole("region", { name: `Block ${id}` }).waitFor();
}

/** Selects a block and fills one field of its side-panel form. */
async function configure(page, id, label, value) {
  await select(page, id);
  const field = page.getByRole("region", { name: `Block ${id}` }).getByLabel(new RegExp(`^${label}`));
  await field.fill(value);
  await field.blur();
}

/** Drags from one handle of the canvas to another, as a person connecting two blocks does. */
async function connect(page, [fromNode, fromHandle], [toNode, toHandle]) {
  const handle = (id, handleId, kind) => node(page, id).locator(`.react-flow__handle.${kind}[data-handleid="${handleId}"]`);
  const from = await handle(fromNode, fromHandle, "source").boundingBox();
  const to = await handle(toNode, toHandle, "target").boundingBox();
  await page.mouse.move(from.x + from.width / 2, from.y + from.height / 2);
  await page.mouse.down();
  await page.mouse.move(to.x + to.width / 2, to.y + to.height / 2, { steps: 12 });
  await page.mouse.up();
}

async function clearSelection(page) {
  await page.locator(".react-flow__pane").click({ position: { x: 5, y: 5 } });
}

async function build(page, out) {
  await page.goto(`${baseUrl}/workflows`);
  await page.waitForURL(/\/login\?next=%2Fworkflows/);
  await signIn(page);
  await page.waitForURL(/\/workflows$/);
  await node(page, "end").waitFor();
  await page.getByLabel("Workflow name", { exact: true }).fill(env.WORKFLOW_NAME);
  await page.getByLabel("Workflow name", { exact: true }).press("Enter");
  const canvas = page.locator(".react-flow__pane");
  await page.locator('[data-block-type="transform"]').dragTo(canvas, { targetPosition: { x: 380, y: 160 } });
  await node(page, "transform").waitFor();
  await configure(page, "start", "Workflow inputs", '{"text": {"type": "string"}}');
  await select(page, "transform");
  await page.getByRole("region", { name: "Block transform" }).getByLabel("Language", { exact: true }).selectOption("jinja");
  await configure(page, "transform", "Expressions", '{"shout": "data | upper"}');
  await configure(page, "end", "Outputs", '{"result": {"type": "string"}}');
  await connect(page, ["start", "text"], ["transform", "data"]);
  await connect(page, ["transform", "shout"], ["end", "result"]);
  await clearSelection(page);
  await page.getByTestId("validity").filter({ hasText: "No problems found." }).waitFor();
  out.built = await nodeIds(page);
  out.builtEdges = await page.locator(".react-flow__edge").count();
}

async function copyPasteUndoRedo(page, out) {
  await select(page, "transform");
  await page.keyboard.press("Control+c");
  out.copiedNotice = await page.getByTestId("builder-notice").innerText();
  await page.keyboard.press("Control+v");
  await node(page, "transform_2").waitFor();
  out.afterPaste = await nodeIds(page);
  out.pastedSelected = await node(page, "transform_2").evaluate((n) => n.classList.contains("selected"));
  // The paste carries the config: the copy has the same output port.
  await node(page, "transform_2").locator('.react-flow__handle.source[data-handleid="shout"]').waitFor();
  await clearSelection(page);
  await page.keyboard.press("Control+z");
  await node(page, "transform_2").waitFor({ state: "detached" });
  out.afterUndo = await nodeIds(page);
  await page.keyboard.press("Control+y");
  await node(page, "transform_2").waitFor();
  out.afterRedo = await nodeIds(page);
  await page.keyboard.press("Control+z");
  await node(page, "transform_2").waitFor({ state: "detached" });
  // The shortcuts' help lists them.
  await page.keyboard.press("?");
  out.shortcuts = await page.getByRole("region", { name: "Keyboard shortcuts" }).locator("td").allInnerTexts();
  await shot(page, "60-builder-shortcuts");
  await page.getByRole("region", { name: "Keyboard shortcuts" }).getByRole("button", { name: "Close" }).click();
}

/** A drag: shown as the pointer moves, the graph (its draft) changed once, at the drop, and
 * undone in one step. */
async function dragAndUndo(page, out) {
  const position = async () => (await draft(page)).definition.nodes.find((n) => n.id === "transform").position;
  const positionNot = (x) => page.waitForFunction(
    ([key, old]) => JSON.parse(localStorage.getItem(key)).definition.nodes.find((n) => n.id === "transform").position.x !== old,
    [DRAFT_KEY, x],
  );
  out.dragFrom = await position();
  const head = node(page, "transform").locator(".wf-node-head");
  const box = await head.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 120, box.y + box.height / 2 + 40, { steps: 10 });
  const midway = await head.boundingBox();
  out.dragShownMidway = [Math.round(midway.x - box.x), Math.round(midway.y - box.y)];
  out.draftMidway = await position();
  await page.mouse.up();
  await positionNot(out.dragFrom.x);
  out.dragTo = await position();
  await page.keyboard.press("Control+z");
  await positionNot(out.dragTo.x);
  out.afterDragUndo = await position();
}

async function draftKept(page, out) {
  out.statusBeforeSave = await status(page).innerText();
  await page.keyboard.press("Control+s");
  await status(page).filter({ hasText: "Draft saved" }).waitFor();
  out.statusSaved = await status(page).innerText();
  // An edit after the save is kept in the browser across a reload.
  await node(page, "transform").locator(".wf-node-head").click();
  await configure(page, "transform", "Expressions", '{"shout": "data | upper", "size": "data | length"}');
  await clearSelection(page);
  await status(page).filter({ hasText: "Unsaved changes" }).waitFor();
  await page.reload();
  await node(page, "end").waitFor();
  out.restoredNotice = await page.getByTestId("builder-notice").innerText();
  out.afterReload = await nodeIds(page);
  out.edgesAfterReload = await page.locator(".react-flow__edge").count();
  out.nameAfterReload = await page.getByLabel("Workflow name", { exact: true }).inputValue();
  out.statusAfterReload = await status(page).innerText();
  const kept = await draft(page);
  out.keptExpressions = kept.definition.nodes.find((n) => n.id === "transform").config.expressions;
}

async function sessionExpires(page, out) {
  // The session ends; the next edit is kept, the builder sends the user to sign in and back.
  await page.context().clearCookies();
  await configure(page, "transform", "Expressions", '{"shout": "data | upper", "size": "data | length", "same": "data"}');
  await page.waitForURL(/\/login\?next=%2Fworkflows/);
  out.expiredUrl = new URL(page.url()).search;
  await signIn(page);
  await page.waitForURL(/\/workflows$/);
  await node(page, "end").waitFor();
  await select(page, "transform");
  out.expressionsAfterSignIn = JSON.parse(
    await page.getByRole("region", { name: "Block transform" }).getByLabel(/^Expressions/).inputValue(),
  );
  await clearSelection(page);
}

async function publishTwiceAndDiff(page, out) {
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await status(page).filter({ hasText: /^v1 published$/ }).waitFor();
  out.firstPublish = await status(page).innerText();
  await configure(page, "transform", "Expressions", '{"shout": "data | lower", "size": "data | length", "same": "data"}');
  await clearSelection(page);
  await status(page).filter({ hasText: "Unsaved changes" }).waitFor();
  out.runBlockedWhy = await page.getByRole("form", { name: "Run inputs" }).locator("p.muted").last().innerText();
  await page.getByRole("button", { name: "Publish", exact: true }).click();
  await status(page).filter({ hasText: /^v2 published$/ }).waitFor();
  out.secondPublish = await status(page).innerText();

  await page.getByRole("button", { name: "History", exact: true }).click();
  const history = page.getByRole("region", { name: "Version history" });
  await history.locator("li[data-version]").nth(1).waitFor();
  out.versions = await history.locator("li[data-version]").evaluateAll((items) => items.map((i) => Number(i.dataset.version)));
  out.diffDefaults = [await history.getByLabel("From").inputValue(), await history.getByLabel("To").inputValue()];
  await history.getByRole("button", { name: "Compare" }).click();
  const diff = history.getByRole("region", { name: "Differences" });
  await diff.waitFor();
  out.diffTitle = await diff.getByRole("heading").innerText();
  out.diffSummary = await diff.getByTestId("diff-summary").innerText();
  out.diffUnified = await diff.getByTestId("diff-unified").innerText();
  await shot(page, "61-builder-version-diff");
  await history.getByRole("button", { name: "Close" }).click();
}

async function pickVariable(page, out) {
  const canvas = page.locator(".react-flow__pane");
  await page.locator('[data-block-type="llm"]').dragTo(canvas, { targetPosition: { x: 520, y: 380 } });
  await node(page, "llm").waitFor();
  await configure(page, "llm", "Prompt", "Say: ");
  await connect(page, ["transform", "shout"], ["llm", "text"]);
  await select(page, "llm");
  const panel = page.getByRole("region", { name: "Block llm" });
  const prompt = panel.getByLabel(/^Prompt/);
  await prompt.click();
  await prompt.press("End");
  const variables = panel.getByRole("region", { name: "Variables" });
  out.variableTarget = await variables.getByTestId("variable-target").innerText();
  out.variables = await variables.locator("button[data-variable]").evaluateAll((b) => b.map((x) => x.dataset.variable));
  await variables.locator('button[data-variable="nodes.transform.shout"]').click();
  out.promptAfterPick = await prompt.inputValue();
  await page.waitForFunction(
    (key) => JSON.parse(localStorage.getItem(key)).definition.nodes.find((n) => n.id === "llm")?.config?.prompt?.includes("nodes."),
    DRAFT_KEY,
  );
  out.promptInDraft = (await draft(page)).definition.nodes.find((n) => n.id === "llm").config.prompt;
  await shot(page, "62-builder-variable-picker");
}

async function templateGallery(page, out) {
  const opener = page.getByRole("toolbar", { name: "Workflow" }).getByRole("button", { name: "Templates…" });
  await opener.click();
  const gallery = page.getByRole("dialog", { name: "Start from a template" });
  const cards = gallery.getByRole("list", { name: "Templates" }).locator("article");
  const shown = () => cards.evaluateAll((all) => all.map((card) => card.dataset.template));
  await cards.first().waitFor();
  out.galleryTemplates = await shown();
  out.galleryFocus = await page.evaluate(() => document.activeElement?.id);
  const categoryButtons = await gallery.getByRole("group", { name: "Category" }).getByRole("button").allInnerTexts();
  out.galleryCategories = categoryButtons.map((text) => text.replace(/\s+/g, " "));
  const qa = gallery.locator('article[data-template="document-qa"]');
  out.galleryCard = {
    title: await qa.getByRole("heading").innerText(),
    blocks: await qa.getByRole("list").getByRole("listitem").allInnerTexts(),
    meta: await qa.locator(".wf-gallery-meta").innerText(),
  };
  // A search by block type, then narrowed to a category; then one that matches nothing.
  const search = gallery.getByLabel("Search templates", { exact: true });
  await search.fill("analyze_document");
  out.gallerySearch = await shown();
  await gallery.getByRole("group", { name: "Category" }).getByRole("button", { name: /^Risk/ }).click();
  out.galleryRisk = await shown();
  out.galleryCount = await gallery.getByTestId("gallery-count").innerText();
  await search.fill("nothing is called this");
  out.galleryNoMatch = await gallery.locator(".notice.empty p").innerText();
  await shot(page, "63-builder-template-gallery-empty");
  await gallery.getByRole("button", { name: "Clear the search" }).click();
  out.galleryCleared = (await shown()).length;
  await shot(page, "63-builder-template-gallery");
  // Escape closes it and gives the focus back to the button that opened it.
  await page.keyboard.press("Escape");
  await gallery.waitFor({ state: "hidden" });
  out.galleryFocusBack = await opener.evaluate((button) => button === document.activeElement);
}

async function templateWithParameters(page, out) {
  // Chosen with the keyboard alone: open the gallery, search, tab to the card's button.
  const opener = page.getByRole("toolbar", { name: "Workflow" }).getByRole("button", { name: "Templates…" });
  await opener.focus();
  await page.keyboard.press("Enter");
  const gallery = page.getByRole("dialog", { name: "Start from a template" });
  await gallery.getByLabel("Search templates", { exact: true }).waitFor();
  await page.keyboard.type("document q");
  const use = gallery.getByRole("button", { name: "Use the template Document Q&A" });
  await use.waitFor();
  for (let i = 0; i < 12 && !(await use.evaluate((b) => b === document.activeElement)); i += 1) await page.keyboard.press("Tab");
  out.templateChosenByKeyboard = await use.evaluate((b) => b === document.activeElement);
  await page.keyboard.press("Enter");
  await gallery.waitFor({ state: "hidden" });
  const form = page.getByRole("form", { name: "Template parameters" });
  out.templateDefaults = {
    knowledge_base: await form.getByLabel(/^knowledge_base/).inputValue(),
    top_k: await form.getByLabel(/^top_k/).inputValue(),
  };
  await form.getByLabel(/^top_k/).fill("2");
  await form.getByLabel(/^knowledge_base/).fill("handbook");
  await form.getByRole("button", { name: "Start from this template" }).click();
  await node(page, "retrieve").waitFor();
  out.templateNotice = await page.getByTestId("builder-notice").innerText();
  out.templateName = await page.getByLabel("Workflow name", { exact: true }).inputValue();
  await page.waitForFunction((key) => JSON.parse(localStorage.getItem(key)).definition.name === "document-qa", DRAFT_KEY);
  out.templateRetrieve = (await draft(page)).definition.nodes.find((n) => n.id === "retrieve").config;
  await shot(page, "63-builder-template");
}

async function approvalFromRunView(page, out) {
  await page.getByLabel("Open a workflow", { exact: true }).selectOption(env.APPROVAL_WORKFLOW);
  await node(page, "gate").waitFor();
  await status(page).filter({ hasText: /^v1 published$/ }).waitFor();
  const inputs = page.getByRole("form", { name: "Run inputs" });
  // A required input left empty is refused before anything is sent, beside its field.
  let sent = 0;
  const count = (r) => r.url().endsWith("/runs") && r.method() === "POST" && (sent += 1);
  page.on("request", count);
  await page.getByRole("button", { name: "Run", exact: true }).click();
  out.emptyInputError = await inputs.locator("#run-input-amount-help").innerText();
  out.emptyInputInvalid = await inputs.getByLabel(/^amount/).getAttribute("aria-invalid");
  out.sentWhenEmpty = sent;
  page.off("request", count);
  await inputs.getByLabel(/^amount/).fill("10");
  await inputs.getByLabel(/^amount/).blur();
  await page.getByRole("button", { name: "Run", exact: true }).click();
  const card = page.getByRole("region", { name: "Approval gate" });
  await card.waitFor({ timeout: 60_000 });
  out.approvalMessage = await card.getByTestId("approval-message").innerText();
  out.gateStatusWaiting = await node(page, "gate").getByTestId("node-status").innerText();
  await shot(page, "64-builder-approval");
  await card.getByLabel("Comment", { exact: true }).fill("fine by me");
  await card.getByRole("button", { name: "Approve" }).click();
  await page.getByTestId("run-status").filter({ hasText: /succeeded|failed|cancelled/ }).waitFor({ timeout: 60_000 });
  out.approvalRunStatus = await page.getByTestId("run-status").innerText();
  out.approvalRunOutputs = JSON.parse(await page.getByTestId("run-outputs").innerText());
  out.cardsLeft = await page.locator(".wf-approval").count();
}

/** The canvas's zoom and pan, and whether the first and last blocks are inside it. */
const view = (page) => page.evaluate(() => {
  const pane = document.querySelector(".react-flow__pane").getBoundingClientRect();
  const inside = (el) => {
    const r = el.getBoundingClientRect();
    return r.left >= pane.left && r.right <= pane.right && r.top >= pane.top && r.bottom <= pane.bottom;
  };
  const nodes = document.querySelectorAll(".react-flow__node");
  const m = new DOMMatrixReadOnly(getComputedStyle(document.querySelector(".react-flow__viewport")).transform);
  return { zoom: m.a, x: m.e, y: m.f, firstInside: inside(nodes[0]), lastInside: inside(nodes[nodes.length - 1]) };
});

/** A large import (36 blocks spanning 1,550 px by 900: wider than the canvas at zoom 1) is
 * fitted into the canvas once: a pan after it, and a change to the graph, are not undone by
 * another fit. */
async function importFits(page, out) {
  const nodes = [{ id: "start", type: "start", position: { x: 0, y: 0 } }];
  for (let i = 1; i < 36; i += 1) {
    nodes.push({ id: `t${i}`, type: "transform", config: { expressions: { out: "data" } }, position: { x: (i % 6) * 260, y: Math.floor(i / 6) * 160 } });
  }
  const text = JSON.stringify({ name: "big-import", nodes, edges: [] }); // JSON is YAML
  out.viewBeforeImport = await view(page);
  out.runStatusBeforeImport = await page.getByTestId("run-status").count();
  await page.getByLabel("YAML file to import").setInputFiles({ name: "big.yaml", mimeType: "application/yaml", buffer: Buffer.from(text) });
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length === 36);
  await page.locator('.wf-canvas[data-fit="done"]').waitFor();
  out.viewAfterImport = await view(page);
  out.runStatusAfterImport = await page.getByTestId("run-status").count();
  await shot(page, "65-builder-large-import");
  // The user pans; then selects a block (a change to the graph): the view stays theirs.
  const pane = await page.locator(".react-flow__pane").boundingBox();
  await page.mouse.move(pane.x + pane.width - 30, pane.y + 30);
  await page.mouse.down();
  await page.mouse.move(pane.x + pane.width - 130, pane.y + 90, { steps: 5 });
  await page.mouse.up();
  await node(page, "t5").locator(".wf-node-head").click();
  await page.waitForTimeout(500);
  out.viewAfterPan = await view(page);
}

runScenario(
  "builder",
  async (page, out) => {
    const steps = [
      build, copyPasteUndoRedo, dragAndUndo, draftKept, sessionExpires, publishTwiceAndDiff, pickVariable,
      templateGallery, templateWithParameters, approvalFromRunView, importFits,
    ];
    for (const step of steps) {
      await step(page, out);
    }
  },
  { artifacts, viewport: { width: 1400, height: 900 } },
);
