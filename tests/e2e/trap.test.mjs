// A trap inside the wasm module (a panic, in the size build) reaches the page as an
// UploadError with code "crashed", on every pending and later call, and never as a hang.
// Runs a test build of the package (`scripts/build pkg-trap`: the same size build, with an
// export that traps) in Chromium against the real server.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { ROOT, launchChromium, randomFile, sha256File, startServer } from "./support.mjs";

const MIB = 1024 * 1024;

function pageDir() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-trap-"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<input type="file" id="file" multiple>
<script type="module">
import init, { Upload, UploadQueue } from "/pkg/index.js";
import { trapForTest } from "/pkg/chunkwise.js";
await init();
Object.assign(window, { Upload, UploadQueue, trapForTest });
// How a call ended, within a bound: a hang is reported as such, not waited out.
window.settle = (promise, ms = 15000) => Promise.race([
  Promise.resolve(promise).then((value) => ({ value }), (error) => ({ error: { name: error?.name, code: error?.code, message: error?.message } })),
  new Promise((ok) => setTimeout(() => ok({ hung: true }), ms)),
]);
window.thrown = (fn) => { try { fn(); return null; } catch (error) { return { name: error?.name, code: error?.code, message: error?.message }; } };
document.body.dataset.ready = "true";
</script>`);
  return dir;
}

describe("a trap in the wasm module", () => {
  let server, browser;
  before(async () => {
    await promisify(execFile)("scripts/build", ["pkg-trap"], { cwd: ROOT, maxBuffer: 1 << 26 });
    server = await startServer([], { www: pageDir(), pkg: join(ROOT, "target/pkg-trap") });
    browser = await launchChromium();
  });
  after(async () => { await browser?.close(); await server?.stop(); });

  async function openPage(files) {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    await page.goto(`${server.url}/index.html`);
    await page.waitForSelector("body[data-ready=true]");
    await page.setInputFiles("#file", files.map((f) => f.path));
    return { page, pageErrors };
  }

  test("during an upload (from inside its own progress callback): start() rejects with code crashed, and every later call too", async () => {
    const file = randomFile(32 * MIB, "trap.bin");
    const { page } = await openPage([file]);
    const seen = await page.evaluate(async () => {
      const file = document.getElementById("file").files[0];
      let inCallback = null;
      const upload = new window.Upload(file, {
        endpoint: "/uploads", chunkSize: 1024 * 1024, resume: false,
        // Nested: the module calls this page's callback, which calls back into the module.
        onProgress: (p) => { if (p.bytesSent > 0 && !inCallback) inCallback = window.thrown(() => window.trapForTest()); },
      });
      const started = await window.settle(upload.start());
      return {
        inCallback,
        started,
        construct: window.thrown(() => new window.Upload(file, { endpoint: "/uploads" })),
        again: await window.settle(upload.start()),
        previous: await window.settle(window.Upload.findPrevious(file)),
        queue: window.thrown(() => new window.UploadQueue({ endpoint: "/uploads" })),
        free: window.thrown(() => upload.free()),
      };
    });
    assert.equal(seen.inCallback?.code, "crashed", JSON.stringify(seen.inCallback));
    assert.notEqual(seen.started.hung, true, "start() hung after the trap");
    assert.equal(seen.started.error?.name, "UploadError", JSON.stringify(seen.started));
    assert.equal(seen.started.error.code, "crashed");
    assert.match(seen.started.error.message, /reload/);
    for (const name of ["construct", "queue"]) assert.equal(seen[name]?.code, "crashed", `${name}: ${JSON.stringify(seen[name])}`);
    for (const name of ["again", "previous"]) assert.equal(seen[name].error?.code, "crashed", `${name}: ${JSON.stringify(seen[name])}`);
    assert.equal(seen.free, null, "free() of a dead module's object is a no-op");
    await page.close();
  });

  test("a queue running when the module traps settles every file, none hangs", async () => {
    const files = [randomFile(12 * MIB, "q1.bin"), randomFile(12 * MIB, "q2.bin"), randomFile(12 * MIB, "q3.bin"), randomFile(3 * MIB, "q4.bin")];
    const { page } = await openPage(files);
    const seen = await page.evaluate(async () => {
      const queue = new window.UploadQueue({ endpoint: "/uploads", maxInFlight: 2, maxActiveFiles: 1, chunkSize: 1024 * 1024, resume: false });
      let trapped = false;
      queue.add(document.getElementById("file").files);
      const timer = setInterval(() => {
        if (!trapped && queue.progress.bytesSent > 0) { trapped = true; window.thrown(() => window.trapForTest()); }
      }, 5);
      const done = await window.settle(queue.done());
      clearInterval(timer);
      return { trapped, done: done.hung ? done : done.value.map((i) => ({ state: i.state, code: i.error?.code })), progress: queue.progress };
    });
    assert.equal(seen.trapped, true);
    assert.notEqual(seen.done.hung, true, "queue.done() hung after the trap");
    assert.equal(seen.done.length, 4);
    assert.ok(seen.done.every((i) => i.state === "failed" && i.code === "crashed"), JSON.stringify(seen.done));
    assert.equal(seen.progress.inFlight, 0);
    await page.close();
  });

  test("a page loaded afresh uploads again, byte-identical", async () => {
    const file = randomFile(3 * MIB + 1, "after.bin");
    const { page } = await openPage([file]);
    const outcome = await page.evaluate(async () => window.settle(new window.Upload(document.getElementById("file").files[0], { endpoint: "/uploads" }).start(), 60000));
    assert.ok(outcome.value, JSON.stringify(outcome));
    assert.equal(await sha256File(join(server.dataDir, "files", outcome.value.id)), file.sha256);
    await page.close();
  });
});
