// Firefox (Debian's firefox-esr, Gecko), headless, driven over WebDriver BiDi by
// puppeteer-core: the scenarios of tests/e2e/engines.mjs.
import puppeteer from "puppeteer-core";
import { installed } from "./support.mjs";
import { describeEngine } from "./engines.mjs";

const FIREFOX = "/usr/bin/firefox-esr";

describeEngine("Firefox", async () => {
  if (!installed(null, FIREFOX)) return null;
  const browser = await puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true });
  // The tabs by id; `page` is the current one.
  const pages = [await browser.newPage()];
  let page = pages[0];
  return {
    goto: (url) => page.goto(url),
    run: (fn, ...args) => page.evaluate(`(${fn})(...${JSON.stringify(args)})`),
    waitFor: (fn) => page.waitForFunction(fn, { timeout: 60_000 }),
    setFiles: async (css, paths) => (await page.$(css)).uploadFile(...paths),
    click: (css) => page.click(css),
    reload: () => page.reload(),
    tab: () => pages.indexOf(page),
    async newTab() {
      page = await browser.newPage();
      return pages.push(page) - 1;
    },
    switchTo: (id) => { page = pages[id]; },
    closeTab: () => page.close(),
    stop: () => browser.close(),
  };
});
