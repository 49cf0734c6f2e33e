// One upload of a file at a time across tabs and workers (Web Locks): the same file picked
// in two tabs of one site, a reload of the tab that uploads, and a worker beside a tab,
// in real Chromium against the real server, which counts every request it gets.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { launchChromium, randomFile, sha256File, startServer } from "./support.mjs";
import { LINKS, emulateLink } from "./link.mjs";

const MIB = 1024 * 1024;

function pageDir() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-tabs-"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<input type="file" id="file">
<script type="module">
import init, { Upload } from "/pkg/index.js";
await init();
const plain = (error) => ({ name: error.name, code: error.code, message: error.message });
window.begin = (options = {}) => {
  window.__progress = null;
  window.__upload = new Upload(document.getElementById("file").files[0], {
    endpoint: "/uploads", chunkSize: 1024 * 1024, maxInFlight: 2, ...options,
    onProgress: (p) => { window.__progress = p; },
  });
  window.__outcome = window.__upload.start().then((result) => ({ result }), (error) => ({ error: plain(error) }));
};
window.previous = async () => Upload.findPrevious(document.getElementById("file").files[0]);
window.inWorker = (file) => new Promise((resolve) => {
  const worker = new Worker("/worker.mjs", { type: "module" });
  worker.onmessage = ({ data }) => { worker.terminate(); resolve(data); };
  worker.postMessage(file);
});
document.body.dataset.ready = "true";
</script>`);
  writeFileSync(join(dir, "worker.mjs"), `import init, { Upload } from "/pkg/index.js";
onmessage = async ({ data: file }) => {
  await init();
  try { postMessage({ result: await new Upload(file, { endpoint: "/uploads" }).start() }); }
  catch (error) { postMessage({ error: { name: error.name, code: error.code, message: error.message } }); }
};`);
  return dir;
}

describe("one upload of a file at a time across tabs and workers", () => {
  let server, browser, context;
  before(async () => {
    server = await startServer(["--enable-fault-injection"], { www: pageDir() });
    browser = await launchChromium();
  });
  after(async () => { await browser?.close(); await server?.stop(); });

  const counts = async () => (await fetch(`${server.url}/_test/requests`)).json();
  const resetCounts = () => fetch(`${server.url}/_test/requests`, { method: "DELETE" });

  /** A tab of the site (one browser context: one origin's locks and IndexedDB). */
  async function tab(file, link = null) {
    const page = await context.newPage();
    if (link) await emulateLink(await context.newCDPSession(page), link);
    await page.goto(`${server.url}/index.html`);
    await page.waitForSelector("body[data-ready=true]");
    await page.setInputFiles("#file", file.path);
    return page;
  }
  const progressed = (page, bytes) => page.waitForFunction((b) => (window.__progress?.bytesAcknowledged ?? 0) >= b, bytes, { timeout: 60_000 });

  test("the same file in a second tab is refused with code busy and sends nothing; findPrevious says it is uploading", async () => {
    context = await browser.newContext();
    const file = randomFile(6 * MIB + 3, "two-tabs.bin");
    // The first tab on an 8 Mbit/s link, so that its upload lasts about 6 s.
    const first = await tab(file, LINKS.slow);
    const second = await tab(file);
    await resetCounts();
    await first.evaluate(() => window.begin());
    await progressed(first, MIB);
    const listed = await second.evaluate(() => window.previous());
    assert.equal(listed.length, 1, JSON.stringify(listed));
    assert.equal(listed[0].uploading, true, "findPrevious shows the upload another tab runs");
    await second.evaluate(() => window.begin());
    const refused = await second.evaluate(() => window.__outcome);
    assert.equal(refused.error?.code, "busy", JSON.stringify(refused));
    assert.match(refused.error.message, /another tab or worker/);
    const done = await first.evaluate(() => window.__outcome);
    assert.ok(done.result, JSON.stringify(done.error));
    assert.equal(await sha256File(join(server.dataDir, "files", done.result.id)), file.sha256);
    // Counted at the server: one upload created, each slice sent once, by the first tab.
    const seen = await counts();
    assert.equal(seen.POST, 2, `one create and one complete: ${JSON.stringify(seen)}`);
    assert.equal(seen.PUT, 7, `each of the 7 slices once: ${JSON.stringify(seen)}`);
    // Once it has ended, the second tab may upload: a second copy, nothing in the way.
    await second.evaluate(() => window.begin());
    const after = await second.evaluate(() => window.__outcome);
    assert.ok(after.result, JSON.stringify(after.error));
    await context.close();
  });

  test("a reload of the uploading tab releases its lock: the other tab resumes the same upload", async () => {
    context = await browser.newContext();
    const file = randomFile(8 * MIB + 1, "reload.bin");
    const first = await tab(file, LINKS.slow);
    const second = await tab(file);
    await first.evaluate(() => window.begin());
    await progressed(first, 2 * MIB);
    const location = await first.evaluate(() => window.__upload.location);
    await second.evaluate(() => window.begin());
    assert.equal((await second.evaluate(() => window.__outcome)).error?.code, "busy");
    await resetCounts();
    await first.reload();
    await second.evaluate(() => window.begin());
    const done = await second.evaluate(() => window.__outcome);
    assert.ok(done.result, JSON.stringify(done.error));
    assert.equal(done.result.location, location, "the same upload went on");
    assert.ok(done.result.resumedSlices >= 2, `resumed ${done.result.resumedSlices} slices`);
    assert.equal(await sha256File(join(server.dataDir, "files", done.result.id)), file.sha256);
    const seen = await counts();
    assert.equal(seen.POST, 1, `no new upload, one complete: ${JSON.stringify(seen)}`);
    assert.ok(seen.PUT <= 9 - done.result.resumedSlices + 2, `only the missing slices (and those cut by the reload): ${JSON.stringify(seen)}`);
    await context.close();
  });

  test("a worker and a tab: the worker is refused with code busy while the tab uploads", async () => {
    context = await browser.newContext();
    const file = randomFile(6 * MIB, "worker.bin");
    const page = await tab(file, LINKS.slow);
    await page.evaluate(() => window.begin());
    await progressed(page, MIB);
    const fromWorker = await page.evaluate(() => window.inWorker(document.getElementById("file").files[0]));
    assert.equal(fromWorker.error?.code, "busy", JSON.stringify(fromWorker));
    const done = await page.evaluate(() => window.__outcome);
    assert.ok(done.result, JSON.stringify(done.error));
    await context.close();
  });
});
