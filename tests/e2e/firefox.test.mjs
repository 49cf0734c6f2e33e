// Firefox (Debian's firefox-esr, Gecko), headless, driven over WebDriver BiDi by
// puppeteer-core: the scenarios of tests/e2e/engines.mjs.
import puppeteer from "puppeteer-core";
import { installed } from "./support.mjs";
import { describeEngine } from "./engines.mjs";

const FIREFOX = "/usr/bin/firefox-esr";

describeEngine("Firefox", async () => {
  if (!installed(null, FIREFOX)) return null;
  const browser = await puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true });
  let page = await browser.newPage();
  return {
    goto: (url) => page.goto(url),
    run: (fn, ...args) => page.evaluate(`(${fn})(...${JSON.stringify(args)})`),
    waitFor: (fn) => page.waitForFunction(fn, { timeout: 60_000 }),
    setFiles: async (css, paths) => (await page.$(css)).uploadFile(...paths),
    click: (css) => page.click(css),
    reload: () => page.reload(),
    async newTab() {
      const previous = page;
      page = await browser.newPage();
      return async () => { await page.close(); page = previous; };
    },
    stop: () => browser.close(),
  };
});
