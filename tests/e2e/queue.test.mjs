// UploadQueue in real Chromium against the real server: a folder of 1,000 small files and
// two large ones under one limit, bad input, a file that vanishes before its turn, an empty
// folder, and the demo's list. Every stored file is compared with its source by SHA-256.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { faultStats, launchChromium, randomFile, sha256File, startServer, watchErrors } from "./support.mjs";

/** What the server stored, by the `path` metadata the queue sends: path -> SHA-256. */
async function storedByPath(dataDir) {
  const stored = new Map();
  const dir = join(dataDir, "files");
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".json"))) {
    const meta = JSON.parse(readFileSync(join(dir, name), "utf8"));
    stored.set(meta.metadata.path, await sha256File(join(dir, meta.id)));
  }
  return stored;
}

/** A blank page on the server's origin with a folder picker and a file picker. */
async function blankPage(browser, server) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.route("**/favicon.ico", (route) => route.fulfill({ status: 204 }));
  await page.goto(`${server.url}/pkg/package.json`);
  await page.setContent(`<input id="folder" type="file" webkitdirectory><input id="files" type="file" multiple>`);
  return { page, errors };
}

describe("UploadQueue", () => {
  let server, browser;
  before(async () => {
    server = await startServer(["--enable-fault-injection"]);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("a folder of 1,000 small files and two large ones: all intact, in flight never above the limit", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chunkwise-queue-"));
    const sources = new Map();
    const big = [["big/a.bin", 24 * 1024 * 1024 + 1], ["big/b.bin", 16 * 1024 * 1024]];
    mkdirSync(join(dir, "big"));
    for (const [path, size] of big) {
      const file = randomFile(size);
      writeFileSync(join(dir, path), readFileSync(file.path));
      sources.set(`${path}`, file.sha256);
    }
    for (let i = 0; i < 1000; i++) {
      const sub = `small/${String(Math.floor(i / 100)).padStart(2, "0")}`;
      mkdirSync(join(dir, sub), { recursive: true });
      const size = i === 0 ? 0 : i === 1 ? 1 : (i * 7919) % 20_000;
      const bytes = randomBytes(size);
      writeFileSync(join(dir, sub, `${i}.bin`), bytes);
      sources.set(`${sub}/${i}.bin`, createHash("sha256").update(bytes).digest("hex"));
    }
    const { page, errors } = await blankPage(browser, server);
    const cdp = await page.context().newCDPSession(page);
    await page.setInputFiles("#folder", dir);
    const key = `queue-${Date.now()}`;
    const heap = async () => {
      await cdp.send("HeapProfiler.collectGarbage");
      return (await cdp.send("Runtime.getHeapUsage")).usedSize;
    };
    const heapBefore = await heap();
    const outcome = await page.evaluate(async ({ endpoint, key }) => {
      const { default: init, UploadQueue } = await import("/pkg/index.js");
      const wasm = await init();
      // The big files first: the small ones must still get through beside them.
      const files = [...document.getElementById("folder").files]
        .map((file) => ({ file, path: file.webkitRelativePath.split("/").slice(1).join("/") }))
        .sort((a, b) => b.file.size - a.file.size);
      let most = 0;
      const queue = new UploadQueue({
        endpoint, maxInFlight: 4, chunkSize: 1024 * 1024, resume: false,
        headers: { "x-chunkwise-fault-key": key },
        onProgress: (p) => { most = Math.max(most, p.inFlight); },
      });
      const started = performance.now();
      queue.add(files);
      const items = await queue.done();
      return {
        most,
        seconds: (performance.now() - started) / 1000,
        wasmBytes: wasm.memory.buffer.byteLength,
        states: items.map((i) => ({ path: i.path, state: i.state, error: i.error?.message })),
        idsInOrder: items.every((item, index) => item.id === index),
        totalBytes: queue.progress.bytesTotal,
      };
    }, { endpoint: `${server.url}/uploads`, key });
    const heapAfter = await heap();
    const notDone = outcome.states.filter((s) => s.state !== "done");
    assert.deepEqual(notDone, [], "every file is done");
    assert.equal(outcome.states.length, 1002);
    assert.ok(outcome.idsInOrder, "item ids are their positions");
    const stored = await storedByPath(server.dataDir);
    for (const [path, sha256] of sources) assert.equal(stored.get(path), sha256, path);
    const stats = await faultStats(server.url, key);
    const mib = outcome.totalBytes / 2 ** 20;
    console.log(`# queue: 1,002 files (${mib.toFixed(1)} MiB) in ${outcome.seconds.toFixed(1)} s; slice requests in flight at most ${stats.maxInFlight} at the server, ${outcome.most} reported; JS heap ${(heapBefore / 2 ** 20).toFixed(1)} -> ${(heapAfter / 2 ** 20).toFixed(1)} MiB; wasm memory ${(outcome.wasmBytes / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(stats.maxInFlight <= 4, `the server saw ${stats.maxInFlight} slice requests at once`);
    assert.ok(outcome.most <= 4, `the queue reported ${outcome.most} in flight`);
    assert.ok(heapAfter - heapBefore < 16 * 2 ** 20, `JS heap grew ${heapAfter - heapBefore} bytes`);
    assert.ok(outcome.wasmBytes <= 16 * 2 ** 20, `wasm memory is ${outcome.wasmBytes} bytes`);
    assert.deepEqual(errors, []);
    await page.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("small files are not starved behind a big one on a slow link", async () => {
    // The big file is added first and could fill every slot for its whole run.
    const bigFile = randomFile(12 * 1024 * 1024, "big.bin");
    const small = [1, 2, 3].map((i) => randomFile(10_000 * i, `s${i}.bin`));
    const { page } = await blankPage(browser, server);
    await page.setInputFiles("#files", [bigFile.path, ...small.map((s) => s.path)]);
    const key = `starve-${Date.now()}`;
    // Every slice request of this key is answered after 300 ms.
    await fetch(`${server.url}/_test/faults/${key}`, { method: "POST", body: JSON.stringify([{ delayMs: 300, times: 1000 }]) });
    const order = await page.evaluate(async ({ endpoint, key }) => {
      const { default: init, UploadQueue } = await import("/pkg/index.js");
      await init();
      const finished = [];
      const queue = new UploadQueue({
        endpoint, maxInFlight: 2, chunkSize: 256 * 1024, resume: false,
        headers: { "x-chunkwise-fault-key": key },
        onFileChange: (item) => { if (item.state === "done") finished.push(item.path); },
      });
      queue.add(document.getElementById("files").files);
      await queue.done();
      return finished;
    }, { endpoint: `${server.url}/uploads`, key });
    assert.equal(order.length, 4);
    assert.equal(order.at(-1), "big.bin", `finish order ${order.join(", ")}`);
    await page.close();
  });

  test("bad input: a TypeError naming the item, and nothing added", async () => {
    const { page } = await blankPage(browser, server);
    const thrown = await page.evaluate(async (endpoint) => {
      const { default: init, UploadQueue } = await import("/pkg/index.js");
      await init();
      const queue = new UploadQueue({ endpoint });
      const caught = (fn) => { try { fn(); return null; } catch (e) { return { name: e.name, message: e.message }; } };
      return {
        item: caught(() => queue.add([new Blob(["a"]), "not a file"])),
        notIterable: caught(() => queue.add(42)),
        option: caught(() => new UploadQueue({ endpoint, maxInFlight: 0 })),
        perFileOption: caught(() => new UploadQueue({ endpoint, chunkSize: 5 })),
        single: caught(() => new UploadQueue({ endpoint, onSlice: () => {} })),
        added: queue.items.length,
        emptyDone: (await queue.done()).length,
      };
    }, `${server.url}/uploads`);
    assert.equal(thrown.item.name, "TypeError");
    assert.match(thrown.item.message, /item 1 is a string, not a File or Blob/);
    assert.equal(thrown.notIterable.name, "TypeError");
    assert.equal(thrown.option.name, "RangeError");
    assert.match(thrown.option.message, /maxInFlight/);
    assert.equal(thrown.perFileOption.name, "RangeError");
    assert.match(thrown.perFileOption.message, /chunkSize/);
    assert.equal(thrown.single.name, "TypeError");
    assert.match(thrown.single.message, /onSlice/);
    assert.equal(thrown.added, 0, "nothing was added");
    assert.equal(thrown.emptyDone, 0, "an empty queue is done at once");
    await page.close();
  });

  test("an empty folder adds nothing; a file that vanishes before its turn fails with source_read and the rest go on", async () => {
    const empty = mkdtempSync(join(tmpdir(), "chunkwise-empty-"));
    const first = randomFile(3 * 1024 * 1024, "first.bin");
    const vanishing = randomFile(100_000, "vanishing.bin");
    const last = randomFile(200_000, "last.bin");
    const { page } = await blankPage(browser, server);
    await page.setInputFiles("#folder", empty);
    await page.setInputFiles("#files", [first.path, vanishing.path, last.path]);
    const key = `vanish-${Date.now()}`;
    await fetch(`${server.url}/_test/faults/${key}`, { method: "POST", body: JSON.stringify([{ delayMs: 400, times: 1000 }]) });
    await page.evaluate(async ({ endpoint, key }) => {
      const { default: init, UploadQueue } = await import("/pkg/index.js");
      await init();
      window.emptyItems = new UploadQueue({ endpoint }).add(document.getElementById("folder").files).length;
      const queue = new UploadQueue({ endpoint, maxActiveFiles: 1, resume: false, headers: { "x-chunkwise-fault-key": key } });
      queue.add(document.getElementById("files").files);
      window.queueDone = queue.done().then((items) => items.map((i) => ({ path: i.path, state: i.state, code: i.error?.code, id: i.result?.id })));
    }, { endpoint: `${server.url}/uploads`, key });
    assert.equal(await page.evaluate(() => window.emptyItems), 0);
    unlinkSync(vanishing.path); // while the first file is still uploading
    const items = await page.evaluate(() => window.queueDone);
    assert.deepEqual(items.map((i) => [i.path, i.state, i.code]), [
      ["first.bin", "done", undefined],
      ["vanishing.bin", "failed", "source_read"],
      ["last.bin", "done", undefined],
    ]);
    assert.equal(await sha256File(join(server.dataDir, "files", items[0].id)), first.sha256);
    assert.equal(await sha256File(join(server.dataDir, "files", items[2].id)), last.sha256);
    await page.close();
  });

  test("the demo uploads several files with a bar each", async () => {
    const files = [randomFile(2 * 1024 * 1024 + 5, "one.bin"), randomFile(0, "two.bin"), randomFile(70_000, "three.bin")];
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(server.url);
    await page.waitForSelector("body[data-ready=true]");
    await page.setInputFiles("#file", files.map((f) => f.path));
    assert.equal(await page.locator("#queue-list li").count(), 3);
    await page.click("#start");
    await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
    assert.deepEqual(await page.locator("#queue-list li").evaluateAll((lis) => lis.map((li) => li.dataset.state)), ["done", "done", "done"]);
    assert.deepEqual(await page.locator("#queue-list progress").evaluateAll((bars) => bars.map((b) => b.value)), [1, 1, 1]);
    const stored = await storedByPath(server.dataDir);
    for (const f of files) assert.equal(stored.get(f.path.split("/").at(-1)), f.sha256);
    assert.deepEqual(errors, []);
    await page.close();
  });
});
