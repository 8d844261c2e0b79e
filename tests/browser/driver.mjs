// driver.mjs: a headless Debian chromium (playwright-core) for
// tests/herald/browser.rs. It reads one JSON command a line on stdin and
// answers each with one JSON line on stdout ({"ok": true, ...} or
// {"ok": false, "error": "..."}), so the Rust test steps the page while it
// stops and starts herald around it.
//
//   {"cmd": "open", "url": "http://127.0.0.1:PORT/"}
//   {"cmd": "click", "selector": "#notify"}
//   {"cmd": "wait_status", "status": "open"}        // #status[data-status]
//   {"cmd": "wait_count", "title": "T", "count": 1} // notifications titled T
//   {"cmd": "count", "title": "T"}
//   {"cmd": "text", "selector": "#job"}
import { chromium } from "playwright-core";
import { answerCommands } from "./steps.mjs";

const WAIT = Number(process.env.DRIVER_WAIT_MS || 30000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage();
page.on("console", (message) => console.error(`page: ${message.text()}`));

// Notifications on the page whose title is exactly `title`.
const countTitled = (title) =>
  page.evaluate((t) => [...document.querySelectorAll(".n .title")].filter((e) => e.textContent === t).length, title);

const commands = {
  open: async ({ url }) => { await page.goto(url); return {}; },
  click: async ({ selector }) => { await page.click(selector); return {}; },
  wait_status: async ({ status }) => {
    await page.waitForSelector(`#status[data-status="${status}"]`, { timeout: WAIT });
    return {};
  },
  wait_count: async ({ title, count }) => {
    await page.waitForFunction(
      ([t, n]) => [...document.querySelectorAll(".n .title")].filter((e) => e.textContent === t).length >= n,
      [title, count],
      { timeout: WAIT },
    );
    return { count: await countTitled(title) };
  },
  count: async ({ title }) => ({ count: await countTitled(title) }),
  text: async ({ selector }) => ({ text: await page.locator(selector).innerText() }),
};

await answerCommands(commands);
await browser.close();
