// Firefox (Debian's firefox-esr, Gecko), driven over WebDriver BiDi by puppeteer-core: the
// package as users load it, with the page and the API on two origins, against the real
// server. Every stored file is compared with its source by SHA-256.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import puppeteer from "puppeteer-core";
import { ROOT, installed, randomFile, sha256File, startServer } from "./support.mjs";
import { startLinkProxy } from "./link-proxy.mjs";

const MIB = 1024 * 1024;
const FIREFOX = "/usr/bin/firefox-esr";

function pageDir() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-firefox-"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<input type="file" id="file" multiple>
<script type="module">
import init, { Upload, UploadQueue } from "/pkg/index.js";
await init();
const plain = (error) => ({ name: error.name, code: error.code, status: error.status, message: error.message });
window.files = () => [...document.getElementById("file").files];
window.begin = (source, options) => {
  window.__log = [];
  window.__upload = new Upload(source, { ...options, onProgress: (p) => { window.__log.push([p.bytesSent, p.bytesAcknowledged]); } });
  window.__outcome = window.__upload.start().then((result) => ({ result }), (error) => ({ error: plain(error) }));
};
window.queue = async (endpoint) => {
  const queue = new UploadQueue({ endpoint, maxInFlight: 3 });
  queue.add(window.files());
  return (await queue.done()).map((i) => ({ path: i.path, state: i.state, id: i.result?.id, error: i.error && plain(i.error) }));
};
window.inWorker = (endpoint) => new Promise((resolve) => {
  const worker = new Worker("/worker.mjs", { type: "module" });
  worker.onmessage = ({ data }) => { worker.terminate(); resolve(data); };
  worker.onerror = (e) => resolve({ error: { message: e.message } });
  worker.postMessage({ file: window.files()[0], endpoint });
});
document.body.dataset.ready = "true";
</script>`);
  writeFileSync(join(dir, "worker.mjs"), `import init, { Upload } from "/pkg/index.js";
onmessage = async ({ data: { file, endpoint } }) => {
  await init();
  try { postMessage({ result: await new Upload(file, { endpoint }).start() }); }
  catch (error) { postMessage({ error: { name: error.name, code: error.code, message: error.message } }); }
};`);
  return dir;
}

describe("in Firefox", () => {
  let site, api, browser, endpoint;
  before(async (t) => {
    if (!installed(t, FIREFOX)) return;
    site = await startServer([], { www: pageDir() });
    api = await startServer(["--allowed-origin", site.url]);
    endpoint = `${api.url}/uploads`;
    browser = await puppeteer.launch({ browser: "firefox", executablePath: FIREFOX, headless: true });
  });
  after(async () => { await browser?.close(); await api?.stop(); await site?.stop(); });

  async function open(files = []) {
    const page = await browser.newPage();
    await page.goto(`${site.url}/index.html`);
    await page.waitForSelector("body[data-ready=true]");
    if (files.length) await (await page.$("#file")).uploadFile(...files.map((f) => f.path));
    return page;
  }
  const stored = (id) => sha256File(join(api.dataDir, "files", id));
  const outcome = (page) => page.evaluate(() => window.__outcome);

  test("a 40 MiB + 1 file: verified, byte progress, stored byte-identical", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(40 * MIB + 1, "ff-large.bin");
    const page = await open([file]);
    await page.evaluate((endpoint) => window.begin(window.files()[0], { endpoint, resume: false }), endpoint);
    const done = await outcome(page);
    assert.ok(done.result, JSON.stringify(done.error));
    assert.equal(done.result.verified, true);
    assert.equal(done.result.sha256, file.sha256);
    assert.equal(await stored(done.result.id), file.sha256);
    const log = await page.evaluate(() => window.__log);
    assert.ok(log.length >= 5, `${log.length} progress reports`);
    assert.ok(log.some(([sent, acked]) => sent > acked), "bytes were shown as they left, before they were stored");
    await page.close();
  });

  test("a ReadableStream of unknown length", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const page = await open();
    const done = await page.evaluate(async (endpoint) => {
      let left = 9 * 1024 * 1024 + 7;
      let seed = 1;
      const stream = new ReadableStream({
        pull(controller) {
          if (left === 0) return controller.close();
          const chunk = new Uint8Array(Math.min(left, 300_001));
          for (let i = 0; i < chunk.length; i++) chunk[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
          left -= chunk.length;
          controller.enqueue(chunk);
        },
      });
      window.begin(stream, { endpoint });
      return window.__outcome;
    }, endpoint);
    assert.ok(done.result, JSON.stringify(done.error));
    assert.equal(done.result.size, 9 * MIB + 7);
    assert.equal(done.result.verified, true);
    assert.equal(await stored(done.result.id), done.result.sha256);
    await page.close();
  });

  test("an UploadQueue of four files, an empty one among them", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const files = [randomFile(0, "ff-q0.bin"), randomFile(1, "ff-q1.bin"), randomFile(3 * MIB, "ff-q2.bin"), randomFile(9 * MIB + 3, "ff-q3.bin")];
    const page = await open(files);
    const items = await page.evaluate((endpoint) => window.queue(endpoint), endpoint);
    assert.equal(items.length, 4);
    for (const [i, item] of items.entries()) {
      assert.equal(item.state, "done", JSON.stringify(item.error));
      assert.equal(await stored(item.id), files[i].sha256, item.path);
    }
    await page.close();
  });

  test("from a module worker", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(5 * MIB + 1, "ff-worker.bin");
    const page = await open([file]);
    const done = await page.evaluate((endpoint) => window.inWorker(endpoint), endpoint);
    assert.ok(done.result, JSON.stringify(done.error));
    assert.equal(await stored(done.result.id), file.sha256);
    await page.close();
  });

  test("cancel: an AbortError, and the server forgets the upload", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(24 * MIB, "ff-cancel.bin");
    const page = await open([file]);
    const done = await page.evaluate(async (endpoint) => {
      const controller = new AbortController();
      window.begin(window.files()[0], { endpoint, chunkSize: 1024 * 1024, maxInFlight: 1, signal: controller.signal });
      while ((window.__log.at(-1)?.[1] ?? 0) < 2 * 1024 * 1024) await new Promise((r) => setTimeout(r, 5));
      controller.abort();
      return { ...(await window.__outcome), location: window.__upload.location };
    }, endpoint);
    assert.equal(done.error?.name, "AbortError", JSON.stringify(done));
    assert.equal(done.error.code, "aborted");
    assert.equal((await fetch(done.location)).status, 404, "the upload was deleted on the server");
    await page.close();
  });

  test("a reload mid-upload resumes from IndexedDB and sends only the rest", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(16 * MIB + 5, "ff-reload.bin");
    // Through a 64 Mbit/s link, so that the reload lands mid-upload.
    const link = await startLinkProxy(api.port, { upBitsPerSecond: 64e6, rttMs: 10 });
    try {
      const viaLink = `${link.url}/uploads`;
      const page = await open([file]);
      await page.evaluate((endpoint) => window.begin(window.files()[0], { endpoint, chunkSize: 1024 * 1024, maxInFlight: 2 }), viaLink);
      await page.waitForFunction(() => (window.__log.at(-1)?.[1] ?? 0) >= 4 * 1024 * 1024, { timeout: 60_000 });
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      await (await page.$("#file")).uploadFile(file.path);
      link.reset();
      await page.evaluate((endpoint) => window.begin(window.files()[0], { endpoint, chunkSize: 1024 * 1024, maxInFlight: 2 }), viaLink);
      const done = await outcome(page);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.ok(done.result.resumedSlices >= 4, `resumed ${done.result.resumedSlices}`);
      assert.equal(await stored(done.result.id), file.sha256);
      const counts = link.counts();
      assert.equal(counts.PUT, 17 - done.result.resumedSlices, `only the missing slices: ${JSON.stringify(counts)}`);
      assert.equal(counts.POST, 1, "no new upload, one complete");
      await page.close();
    } finally {
      link.close();
    }
  });

  test("over an 8 Mbit/s, 60 ms link: progress moves, nothing is sent twice", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(6 * MIB, "ff-slow.bin");
    const link = await startLinkProxy(api.port, { upBitsPerSecond: 8e6, rttMs: 60 });
    try {
      const page = await open([file]);
      await page.evaluate((endpoint) => window.begin(window.files()[0], { endpoint, chunkSize: 1024 * 1024, maxInFlight: 2, resume: false }), `${link.url}/uploads`);
      const done = await outcome(page);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(await stored(done.result.id), file.sha256);
      const log = await page.evaluate(() => window.__log);
      assert.ok(new Set(log.map(([sent]) => sent)).size >= 6, `progress moved in ${new Set(log.map(([sent]) => sent)).size} steps`);
      assert.equal(link.counts().PUT, 6, `each 1 MiB slice once: ${JSON.stringify(link.counts())}`);
      await page.close();
    } finally {
      link.close();
    }
  });

  test("the same file in a second tab is refused with code busy (Web Locks)", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const file = randomFile(12 * MIB, "ff-tabs.bin");
    const link = await startLinkProxy(api.port, { upBitsPerSecond: 32e6, rttMs: 10 });
    try {
      const viaLink = `${link.url}/uploads`;
      const first = await open([file]);
      const second = await open([file]);
      await first.evaluate((endpoint) => window.begin(window.files()[0], { endpoint }), viaLink);
      await first.waitForFunction(() => (window.__log.at(-1)?.[0] ?? 0) > 0, { timeout: 60_000 });
      await second.evaluate((endpoint) => window.begin(window.files()[0], { endpoint }), viaLink);
      assert.equal((await outcome(second)).error?.code, "busy");
      const done = await outcome(first);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(await stored(done.result.id), file.sha256);
      assert.equal(link.counts().PUT, 2, "two 8 MiB slices, each once: the second tab sent none");
      await first.close();
      await second.close();
    } finally {
      link.close();
    }
  });

  test("the demo page loads and uploads", async (t) => {
    if (!browser) return t.skip("no Firefox");
    const demo = await startServer([]);
    try {
      const file = randomFile(3 * MIB + 1, "ff-demo.bin");
      const page = await browser.newPage();
      await page.goto(demo.url);
      await page.waitForSelector("body[data-ready=true]");
      await (await page.$("#file")).uploadFile(file.path);
      await page.waitForFunction(() => !document.getElementById("start").disabled);
      await page.click("#start");
      await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
      // files/ holds each upload's bytes ({id}) beside its record ({id}.json).
      const ids = readdirSync(join(demo.dataDir, "files")).filter((name) => !name.endsWith(".json"));
      assert.equal(ids.length, 1, ids.join(", "));
      assert.equal(await sha256File(join(demo.dataDir, "files", ids[0])), file.sha256);
      await page.close();
    } finally {
      await demo.stop();
    }
  });
});
