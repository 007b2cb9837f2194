// What the browser scenarios share: playwright-core from ui/node_modules, Debian's chromium
// launched headless with a fresh profile (the flags issue 7 names), the sign-in form,
// screenshots, and the run that prints one JSON object of observations (with every console
// error and HTTP error the page saw) or exits non-zero with a screenshot of the failure.
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(resolve(here, "../../../ui/package.json"));
const { chromium } = require("playwright-core");

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Fills the sign-in form and submits it. */
export async function signIn(page, user, pass) {
  await page.getByLabel("Username", { exact: true }).fill(user);
  await page.getByLabel("Password", { exact: true }).fill(pass);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** A function writing full-page screenshots into `artifacts` by name. */
export function screenshots(artifacts) {
  return (page, name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
}

/**
 * Runs `scenario(page, out)` in a fresh browser and prints `{...out, ...returned, consoleErrors}`.
 * On failure the page is saved as `failed-<name>.png`, what was seen so far goes to stderr,
 * and the process exits with 1.
 */
export function runScenario(name, scenario, { artifacts, viewport = { width: 1280, height: 800 }, acceptDialogs = false }) {
  const shot = screenshots(artifacts);
  const main = async () => {
    mkdirSync(artifacts, { recursive: true });
    const profile = mkdtempSync(join(tmpdir(), "atrium-chromium-"));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
      viewport,
    });
    context.setDefaultTimeout(30_000);
    const page = context.pages()[0] ?? (await context.newPage());
    const consoleErrors = [];
    page.on("console", (msg) => msg.type() === "error" && consoleErrors.push(msg.text()));
    page.on("pageerror", (err) => consoleErrors.push(String(err)));
    page.on("response", (r) => r.status() >= 400 && consoleErrors.push(`HTTP ${r.status()} ${new URL(r.url()).pathname}`));
    if (acceptDialogs) page.on("dialog", (dialog) => dialog.accept());
    const out = {};
    try {
      const returned = await scenario(page, out);
      process.stdout.write(JSON.stringify({ ...out, ...returned, consoleErrors }));
    } catch (error) {
      await shot(page, `failed-${name}`).catch(() => {});
      process.stderr.write(`${JSON.stringify(out)}\n`);
      throw error;
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  };
  main().catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  });
}
