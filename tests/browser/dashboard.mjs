// dashboard.mjs: a headless Debian chromium (playwright-core) for the
// operations dashboard's test (tests/herald/dashboard.rs). Like driver.mjs
// it reads one JSON command a line on stdin and answers each with one JSON
// line on stdout ({"ok": true, ...} or {"ok": false, "error": "..."}).
//
//   {"cmd": "open", "url": "http://127.0.0.1:PORT/dashboard"}
//   {"cmd": "fill", "selector": "#key", "value": "..."}
//   {"cmd": "click", "selector": "#sign-in-button"}
//   {"cmd": "wait", "selector": "#status[data-status=live]"}   // visible
//   {"cmd": "wait_js", "js": "document.querySelectorAll('tr').length > 2"}
//   {"cmd": "js", "js": "window.heraldStats.at"}                 // {"value": ...}
//   {"cmd": "text", "selector": "#dead .error"}                  // {"text": ...}
//   {"cmd": "scroll", "selector": "#scans"}                        // to the top
//   {"cmd": "screenshot", "path": "/tmp/x.png", "full": false}
import { chromium } from "playwright-core";
import { answerCommands } from "./steps.mjs";

const WAIT = Number(process.env.DRIVER_WAIT_MS || 30000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on("console", (message) => console.error(`page: ${message.text()}`));
page.on("pageerror", (error) => console.error(`page error: ${error.message}`));

const commands = {
  open: async ({ url }) => { await page.goto(url); return {}; },
  fill: async ({ selector, value }) => { await page.fill(selector, value); return {}; },
  click: async ({ selector }) => { await page.click(selector, { timeout: WAIT }); return {}; },
  wait: async ({ selector }) => { await page.waitForSelector(selector, { timeout: WAIT }); return {}; },
  // Polled from here (CDP evaluation): the page's Content-Security-Policy
  // forbids the in-page eval that waitForFunction would use.
  wait_js: async ({ js }) => {
    const deadline = Date.now() + WAIT;
    for (;;) {
      if (await page.evaluate(js)) return {};
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${js}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  },
  js: async ({ js }) => ({ value: await page.evaluate(js) }),
  text: async ({ selector }) => ({ text: await page.locator(selector).first().innerText({ timeout: WAIT }) }),
  scroll: async ({ selector }) => {
    await page.locator(selector).first().scrollIntoViewIfNeeded();
    await page.evaluate((s) => document.querySelector(s).scrollIntoView({ block: "start" }), selector);
    return {};
  },
  screenshot: async ({ path, full }) => { await page.screenshot({ path, fullPage: !!full }); return {}; },
};

await answerCommands(commands);
await browser.close();
