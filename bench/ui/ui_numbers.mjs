// The web UI's numbers in Chromium (playwright-core), against a running `atrium serve`:
//   node ui_numbers.mjs BASE_URL OUT_JSON   (UI_USERNAME, UI_PASSWORD, CHROMIUM, REPEATS,
//                                             GRAPH_YAML: a workflow definition to import,
//                                             PARTS: which of load,tokens,drag; default all)
// 1. first load: navigation start -> the chat is interactive (the model picker holds a
//    model and the composer is on screen), with an empty HTTP cache and with a warm one;
// 2. token to screen: for each streamed chunk of a chat answer, the time between the
//    chunk reaching JavaScript (the stream reader's read() resolving) and the DOM showing
//    it (the streaming answer's mutation), and to the next animation frame after that;
// 3. dragging a block on a 300-block graph in the workflow builder: frame intervals
//    (requestAnimationFrame deltas) and each frame's main-thread work (rAF -> the task
//    after the frame) while the mouse drags a node.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(resolve(here, "../../ui/package.json"));
const { chromium } = require("playwright-core");

const [baseUrl, outPath] = process.argv.slice(2);
const REPEATS = Number(process.env.REPEATS ?? 5);
const PARTS = new Set((process.env.PARTS ?? "load,tokens,drag").split(","));
const ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"];

/** Runs in every page before the app: marks when the chat is interactive, records stream
 * chunks and DOM updates of the streaming answer. */
function instrument() {
  window.__ui = { interactiveAt: null, chunks: [], dom: [] };
  const decoder = new TextDecoder();
  const read = ReadableStreamDefaultReader.prototype.read;
  ReadableStreamDefaultReader.prototype.read = function wrappedRead() {
    return read.call(this).then((result) => {
      if (window.__measureStream && result.value) {
        const at = performance.now();
        const text = decoder.decode(result.value, { stream: true });
        const tokens = [...text.matchAll(/"content":"((?:[^"\\]|\\.)*)"/g)].filter((m) => m[1] !== "");
        if (tokens.length) window.__ui.chunks.push({ at, tokens: tokens.length });
      }
      return result;
    });
  };
  const observer = new MutationObserver(() => {
    const ui = window.__ui;
    if (ui.interactiveAt === null && document.querySelector("#model-picker")?.value && document.querySelector("#composer-input")) {
      ui.interactiveAt = performance.now();
    }
    if (window.__measureStream && document.querySelector(".message.assistant.streaming .markdown")) {
      const at = performance.now();
      const last = ui.dom[ui.dom.length - 1];
      if (!last || last.at !== at) {
        const entry = { at, frame: null };
        ui.dom.push(entry);
        requestAnimationFrame(() => { entry.frame = performance.now(); });
      }
    }
  });
  const start = () => observer.observe(document, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["value"] });
  if (document.documentElement) start(); else document.addEventListener("DOMContentLoaded", start);
}

function pct(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const rank = (s.length - 1) * q;
  const lo = Math.floor(rank), hi = Math.ceil(rank);
  return s[lo] + (s[hi] - s[lo]) * (rank - lo);
}
const stats = (v) => ({ n: v.length, p50: pct(v, 0.5), p95: pct(v, 0.95), p99: pct(v, 0.99), max: v.length ? Math.max(...v) : null });

async function signIn(context) {
  const response = await context.request.post(`${baseUrl}/v1/auth/login`, {
    data: { username: process.env.UI_USERNAME, password: process.env.UI_PASSWORD },
  });
  if (!response.ok()) throw new Error(`sign-in failed: ${response.status()}`);
}

async function interactive(page) {
  await page.waitForFunction(() => window.__ui.interactiveAt !== null, null, { timeout: 30_000, polling: 50 });
  return page.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return { interactive: window.__ui.interactiveAt, domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, transferSize: nav.transferSize };
  });
}

async function firstLoad(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  const cold = [], warm = [];
  for (let i = 0; i < REPEATS; i += 1) {
    await cdp.send("Network.clearBrowserCache");
    await page.goto(`${baseUrl}/chat`);
    cold.push(await interactive(page));
    await page.goto(`${baseUrl}/chat`);
    warm.push(await interactive(page));
  }
  const bytes = await page.evaluate(() => performance.getEntriesByType("resource").reduce((sum, r) => sum + (r.encodedBodySize || 0), 0));
  return { cold: stats(cold.map((r) => r.interactive)), warm: stats(warm.map((r) => r.interactive)), coldRuns: cold, warmRuns: warm, warmResourceBytes: bytes };
}

async function tokenToScreen(page, prompt) {
  const toDom = [], toFrame = [];
  let tokens = 0, chunks = 0;
  for (let i = 0; i < REPEATS; i += 1) {
    await page.goto(`${baseUrl}/chat`);
    await interactive(page);
    await page.evaluate(() => { window.__ui.chunks = []; window.__ui.dom = []; window.__measureStream = true; });
    await page.locator("#composer-input").fill(prompt);
    await page.locator("#composer-input").press("Enter");
    await page.locator(".message.assistant.streaming").waitFor({ state: "attached", timeout: 60_000 });
    await page.locator(".message.assistant.streaming").waitFor({ state: "detached", timeout: 180_000 });
    const { chunks: seen, dom } = await page.evaluate(() => { window.__measureStream = false; return window.__ui; });
    for (const chunk of seen) {
      const shown = dom.find((d) => d.at >= chunk.at);
      if (!shown) continue; // the last chunk can end the stream: the final message replaces it
      toDom.push(shown.at - chunk.at);
      if (shown.frame !== null) toFrame.push(shown.frame - chunk.at);
      tokens += chunk.tokens;
      chunks += 1;
    }
  }
  return { chunks, tokens, toDom: stats(toDom), toNextFrame: stats(toFrame) };
}

/** The canvas's zoom after an import, and whether the graph's first and last blocks are
 * inside the canvas (the fit took effect). */
function viewAfterImport(page) {
  return page.evaluate(() => {
    const pane = document.querySelector(".react-flow__pane").getBoundingClientRect();
    const inside = (el) => {
      const r = el.getBoundingClientRect();
      return r.left >= pane.left && r.right <= pane.right && r.top >= pane.top && r.bottom <= pane.bottom;
    };
    const all = document.querySelectorAll(".react-flow__node");
    const transform = getComputedStyle(document.querySelector(".react-flow__viewport")).transform;
    return { zoom: new DOMMatrixReadOnly(transform).a, firstInside: inside(all[0]), lastInside: inside(all[all.length - 1]) };
  });
}

const COST_METRICS = ["ThreadTime", "ProcessTime", "TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration"];
const median = (values) => { const v = [...values].sort((a, b) => a - b); return Math.round(v[Math.floor(v.length / 2)] * 1000) / 1000; };

async function dragFrames(page, yaml) {
  await page.goto(`${baseUrl}/workflows`);
  await page.locator(".react-flow__pane").waitFor();
  // The builder validates the imported graph on the server; its answer re-renders every block.
  const validated = page.waitForResponse((r) => r.url().endsWith("/v1/workflows/validate") && r.request().method() === "POST", { timeout: 60_000 });
  await page.getByLabel("YAML file to import").setInputFiles({ name: "graph.yaml", mimeType: "application/yaml", buffer: Buffer.from(yaml) });
  await page.waitForFunction(() => document.querySelectorAll(".react-flow__node").length >= 300, null, { timeout: 60_000 });
  // The builder fits the view to the imported graph once React Flow has measured its blocks,
  // and says so on the canvas; a drag before that would start where the block no longer is.
  await page.locator('.wf-canvas[data-fit="done"]').waitFor({ timeout: 60_000 });
  const view = await viewAfterImport(page);
  await validated;
  await page.waitForTimeout(1500); // the validation's answer is rendered, the page is idle
  const nodes = await page.locator(".react-flow__node").count();
  // The block nearest the middle of the canvas (the fit's zoom has a floor: with it some
  // blocks may be off screen).
  const target = await page.evaluate(() => {
    const pane = document.querySelector(".react-flow__pane").getBoundingClientRect();
    const cx = pane.left + pane.width / 2, cy = pane.top + pane.height / 2;
    let best = null, bestDistance = Infinity;
    for (const el of document.querySelectorAll(".react-flow__node")) {
      const r = el.getBoundingClientRect();
      const d = Math.hypot(r.left + r.width / 2 - cx, r.top + r.height / 2 - cy);
      if (d < bestDistance) { best = el.dataset.id; bestDistance = d; }
    }
    return best;
  });
  const node = page.locator(`.react-flow__node[data-id="${target}"] .wf-node-head`);
  const frames = [];
  const moves = [];
  // The renderer's own accounting of each drag (CPU of its main thread and of the whole
  // process, and where the main thread's time went), per mouse move: less sensitive than
  // frame timings to other work on the machine.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable", { timeDomain: "threadTicks" });
  const metrics = async () => Object.fromEntries((await cdp.send("Performance.getMetrics")).metrics.map((m) => [m.name, m.value]));
  const costs = [];
  for (let round = 0; round < REPEATS; round += 1) {
    const box = await node.boundingBox();
    const x = box.x + box.width / 2, y = box.y + box.height / 2;
    await page.evaluate(() => {
      window.__frames = { intervals: [], work: [], running: true, last: null };
      const f = window.__frames;
      const tick = (now) => {
        if (f.last !== null) f.intervals.push(now - f.last);
        f.last = now;
        const channel = new MessageChannel();
        channel.port1.onmessage = () => f.work.push(performance.now() - now);
        channel.port2.postMessage(null);
        if (f.running) requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    await page.mouse.move(x, y);
    const before = await metrics();
    await page.mouse.down();
    const dx = round % 2 === 0 ? 200 : -200;
    for (let step = 1; step <= 60; step += 1) {
      await page.mouse.move(x + (dx * step) / 60, y + 40 * Math.sin(step / 10));
    }
    await page.mouse.up();
    const after = await metrics();
    costs.push(Object.fromEntries(COST_METRICS.map((name) => [name, ((after[name] - before[name]) * 1000) / 60])));
    frames.push(await page.evaluate(() => { window.__frames.running = false; return window.__frames; }));
    const moved = await node.boundingBox();
    moves.push(Math.round(moved.x - box.x));
  }
  const intervals = frames.flatMap((f) => f.intervals), work = frames.flatMap((f) => f.work);
  return {
    nodes, edges: await page.locator(".react-flow__edge").count(), view, dragged: target, moves,
    moved: moves.every((m, i) => Math.abs(m - (i % 2 === 0 ? 200 : -200)) < 20),
    frameInterval: stats(intervals), frameWork: stats(work),
    framesOver16_7: intervals.filter((v) => v > 16.7 * 1.5).length,
    // ms per mouse move, the median over the rounds
    costPerMove: Object.fromEntries(COST_METRICS.map((name) => [name, median(costs.map((c) => c[name]))])),
  };
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), "atrium-bench-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true, args: ARGS, viewport: { width: 1440, height: 900 },
  });
  try {
    context.setDefaultTimeout(60_000);
    await context.addInitScript(instrument);
    await signIn(context);
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const result = {
      browser: context.browser()?.version() ?? null,
      repeats: REPEATS,
      firstLoad: PARTS.has("load") ? await firstLoad(context, page) : null,
      tokenToScreen: PARTS.has("tokens") ? await tokenToScreen(page, process.env.PROMPT ?? "Write a short paragraph about the sea.") : null,
      drag: PARTS.has("drag") ? await dragFrames(page, process.env.GRAPH_YAML) : null,
      pageErrors: errors,
    };
    writeFileSync(outPath, JSON.stringify(result, null, 2));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
