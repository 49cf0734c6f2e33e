// The demo page in real Chromium against the real server, with real files on disk.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { ARTIFACTS, launchChromium, randomFile, sha256File, startServer, watchErrors } from "./support.mjs";

const MIB = 1024 * 1024;
let browser;
before(async () => { browser = await launchChromium(); });
after(async () => { await browser?.close(); });

async function openDemo(server, viewport = { width: 1280, height: 800 }) {
  const page = await browser.newPage({ viewport });
  const errors = watchErrors(page);
  await page.goto(server.url + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  return { page, errors };
}

// Counts what the page shows in flight, on every change, from before Start is clicked.
async function watchInFlight(page) {
  await page.evaluate(() => {
    window.__maxShown = 0;
    const look = () => {
      const shown = Number(document.getElementById("in-flight").value);
      const cells = document.querySelectorAll("#slice-map i.sending").length;
      window.__maxShown = Math.max(window.__maxShown, shown, cells);
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
}

describe("demo page", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  test("loads the wasm module without console errors", async () => {
    const { page, errors } = await openDemo(server);
    assert.match(await page.locator("#memory").textContent(), /wasm \d/);
    assert.equal(await page.locator("#start").isDisabled(), true, "nothing to start before a file is chosen");
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("uploads a 64 MiB file byte-identical and never shows more than maxInFlight in flight", async () => {
    const source = randomFile(64 * MIB, "sixty-four.bin");
    const { page, errors } = await openDemo(server);
    await page.setInputFiles("#file", source.path);
    assert.match(await page.locator("#file-info").textContent(), /sixty-four\.bin — 64\.0 MiB/);
    await page.selectOption("#chunk-size", String(4 * MIB));
    await page.fill("#max-in-flight", "3");
    await watchInFlight(page);
    await page.click("#start");
    await page.waitForSelector("body[data-state=done]", { timeout: 120_000 });

    const serverSha = await page.locator("#server-sha").textContent();
    assert.equal(serverSha, source.sha256);
    assert.match(await page.locator("#checked").textContent(), /all 16 slices/);
    assert.match(await page.locator("#verdict").getAttribute("class"), /match/);
    const id = (await page.locator("#upload-id").textContent()).split(" ")[0];
    assert.equal(await sha256File(join(server.dataDir, "files", id)), source.sha256, "the stored file");
    assert.equal(await page.locator("#progress").evaluate((p) => p.value), 1);
    assert.equal(await page.locator("#slice-map i.done").count(), 16);

    const maxShown = await page.evaluate(() => window.__maxShown);
    const peak = Number(await page.locator("#peak-in-flight").textContent());
    assert.ok(maxShown <= 3 && peak <= 3, `showed ${maxShown} in flight, peak ${peak}`);
    assert.ok(peak >= 1);
    assert.deepEqual(errors, []);
    await page.screenshot({ path: join(ARTIFACTS, "demo-done-1280.png"), fullPage: true });
    await page.setViewportSize({ width: 400, height: 800 });
    await page.screenshot({ path: join(ARTIFACTS, "demo-done-400.png"), fullPage: true });
    await page.close();
  });
});

describe("demo page cancel", () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { await server?.stop(); });

  test("cancel mid-upload aborts and the server deletes the upload", async () => {
    const source = randomFile(64 * MIB, "cancel-me.bin");
    const { page, errors } = await openDemo(server);
    await page.setInputFiles("#file", source.path);
    await page.selectOption("#chunk-size", String(256 * 1024));
    await page.fill("#max-in-flight", "1");
    await page.click("#start");
    await page.waitForFunction(() => document.getElementById("progress").value > 0.02, null, { timeout: 60_000 });
    await page.click("#cancel");
    await page.waitForSelector("body[data-state=cancelled]", { timeout: 30_000 });
    assert.match(await page.locator("#error").textContent(), /Cancelled/);
    assert.deepEqual(readdirSync(join(server.dataDir, "uploads")), [], "no partial upload left");
    assert.deepEqual(readdirSync(join(server.dataDir, "files")), [], "nothing completed");
    assert.deepEqual(errors.filter((e) => !/ERR_ABORTED|aborted/i.test(e)), []);
    await page.close();
  });
});

// A page served from an address that is not loopback, over plain http, is not a secure
// context: there is no WebCrypto, so the library hashes slices in wasm. People try the demo
// this way from another machine on their network.
describe("demo page over plain http from a LAN address", () => {
  const address = Object.values(networkInterfaces()).flat()
    .find((a) => a && a.family === "IPv4" && !a.internal)?.address;
  let server;
  before(async () => { if (address) server = await startServer([], { listen: `${address}:0` }); });
  after(async () => { await server?.stop(); });

  test("hashes in wasm without WebCrypto and still verifies every slice", async (t) => {
    if (!address) return t.skip("this machine has no non-loopback IPv4 address");
    const source = randomFile(20 * MIB + 1, "insecure.bin");
    const { page, errors } = await openDemo(server);
    assert.deepEqual(await page.evaluate(() => [window.isSecureContext, typeof crypto.subtle]), [false, "undefined"]);
    await page.setInputFiles("#file", source.path);
    await page.selectOption("#chunk-size", String(4 * MIB));
    await page.click("#start");
    await page.waitForSelector("body[data-state=done]", { timeout: 120_000 });
    assert.equal(await page.locator("#server-sha").textContent(), source.sha256);
    assert.match(await page.locator("#checked").textContent(), /all 6 slices/);
    assert.match(await page.locator("#verdict").getAttribute("class"), /match/);
    const id = (await page.locator("#upload-id").textContent()).split(" ")[0];
    assert.equal(await sha256File(join(server.dataDir, "files", id)), source.sha256, "the stored file");
    assert.deepEqual(errors, []);
    await page.close();
  });
});
