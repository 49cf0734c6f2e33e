// protocol: "tus" against a real tus server: @tus/server 2.4.5 with @tus/file-store
// (tests/e2e/tus-server.mjs), on another origin than the page, behind the counting proxy.
// What the server stores is read from its directory and compared with the source by
// SHA-256; what went over the wire is what the proxy counted.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchChromium, randomFile, sha256File, startServer, watchErrors } from "./support.mjs";
import { startTus } from "./tus.mjs";
import { LINKS, emulateLink, firstMoveMs } from "./link.mjs";

const MIB = 1024 * 1024;

/** A page with a file input and nothing else (the demo would look for earlier uploads). */
function pageDir() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-tus-page-"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<input type="file" id="file"><script>document.body.dataset.ready = "true";</script>`);
  return dir;
}

let browser;
let site;
let tus;
before(async () => {
  browser = await launchChromium();
  site = await startServer([], { www: pageDir() });
  tus = await startTus();
});
after(async () => { tus?.stop(); await site?.stop(); await browser?.close(); });

async function openPage(file) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.goto(`${site.url}/`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  if (file) await page.setInputFiles("#file", file.path);
  return { page, errors };
}

/** Starts a tus upload of the chosen file (or of `source`, a page expression) in the page. */
async function startUpload(page, options, source = null) {
  await page.evaluate(async ({ options, source, endpoint }) => {
    const { default: init, Upload } = await import("/pkg/chunkwise.js");
    await init();
    window.__controller = new AbortController();
    window.__log = [];
    window.__t0 = performance.now();
    const file = source ? (0, eval)(source) : document.getElementById("file").files[0];
    window.__upload = new Upload(file, {
      protocol: "tus", signal: window.__controller.signal, endpoint, ...options,
      onProgress: (p) => { window.__progress = p; window.__log.push([performance.now() - window.__t0, p.bytesSent]); },
    });
    window.__outcome = window.__upload.start().then(
      (result) => ({ result }),
      (error) => ({ error: { name: error.name, code: error.code, status: error.status, message: error.message } }),
    );
  }, { options, source, endpoint: tus.endpoint });
}

const outcome = (page) => page.evaluate(() => window.__outcome);
const waitForBytes = (page, bytes, timeout = 60_000) =>
  page.waitForFunction((b) => (window.__progress?.bytesSent ?? 0) >= b, bytes, { timeout });

/** Asserts the upload succeeded and the server holds exactly `file`'s bytes. */
async function assertStored(done, file) {
  assert.ok(done.result, `upload failed: ${JSON.stringify(done.error)}`);
  assert.equal(done.result.size, file.size);
  assert.equal(await sha256File(tus.file(done.result.location)), file.sha256);
  assert.equal(tus.info(done.result.location).size, file.size);
}

/** The PATCHes since `from`: one at a time (the proxy saw no two in flight), each at the
 * offset where the one before ended. Returns their total body bytes. */
function patchedBytes(from = 0) {
  const patches = tus.requests("PATCH", from);
  let total = 0;
  for (const [i, p] of patches.entries()) {
    if (i > 0) assert.equal(p.offset, patches[i - 1].offset + patches[i - 1].length, `PATCH ${i} continues where ${i - 1} ended`);
    total += p.length;
  }
  return total;
}

describe("protocol tus against @tus/server", () => {
  test("40 MiB + 3 bytes: stored byte-identical, metadata arrives, PATCHes one at a time in order, nothing twice", async () => {
    const file = randomFile(40 * MIB + 3, "forty.bin");
    const { page, errors } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    tus.proxy.state.maxPutsInFlight = 0;
    const metadata = { filename: "forty.bin", filetype: "application/octet-stream", note: "ünïcode ✓, with commas" };
    await startUpload(page, { metadata, chunkSize: 8 * MIB, resume: false });
    const done = await outcome(page);
    await assertStored(done, file);
    assert.deepEqual(tus.info(done.result.location).metadata, metadata);
    assert.equal(done.result.verified, false, "@tus/server checks no checksum");
    assert.equal(done.result.sha256, null);
    assert.equal(done.result.slices, 6);
    const patches = tus.requests("PATCH", from);
    assert.deepEqual(patches.map((p) => p.length), [8, 8, 8, 8, 8].map((n) => n * MIB).concat(3));
    assert.equal(patchedBytes(from), file.size, "every byte sent once");
    assert.equal(tus.proxy.state.maxPutsInFlight, 1, "never two PATCHes in flight");
    assert.equal(tus.requests("HEAD", from).length, 0, "no failure, so no HEAD");
    assert.equal(tus.requests("OPTIONS", from).filter((r) => !r.preflight).length, 1, "one OPTIONS, to ask for the checksum extension");
    assert.equal(tus.requests("POST", from).length, 1);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("without chunkSize a File goes in 64 MiB PATCHes (nothing reads them); with it, in its slices", async () => {
    const file = randomFile(70 * MIB, "large.bin");
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    await startUpload(page, { resume: false });
    const done = await outcome(page);
    await assertStored(done, file);
    assert.equal(done.result.chunkSize, 64 * MIB);
    assert.deepEqual(tus.requests("PATCH", from).map((p) => p.length), [64 * MIB, 6 * MIB]);
    await page.close();
  });

  test("progress moves within a second on an 8 Mbit/s, 60 ms link, and nothing is sent twice", async () => {
    const file = randomFile(3 * MIB + 5, "slow.bin");
    const { page } = await openPage(file);
    await emulateLink(await page.context().newCDPSession(page), LINKS.slow);
    const from = tus.proxy.state.requests.length;
    await startUpload(page, { chunkSize: MIB, resume: false });
    const done = await outcome(page);
    await assertStored(done, file);
    const log = await page.evaluate(() => window.__log);
    const firstMs = firstMoveMs(log);
    // null when progress never moved (and `null < 1000` is true in JS): that must fail.
    assert.notEqual(firstMs, null, "progress never moved");
    console.log(`# tus over 8 Mbit/s, 60 ms: progress first moved after ${Math.round(firstMs)} ms, ${log.length} reports in ${Math.round(done.result.elapsedMs)} ms`);
    assert.ok(firstMs < 1000, `progress first moved after ${firstMs} ms`);
    assert.ok(log.length > 20, `${log.length} progress reports`);
    assert.equal(patchedBytes(from), file.size);
    await page.close();
  });

  test("on a 1 Mbit/s, 150 ms link one slow PATCH is never taken for a stall, and nothing is sent twice", async () => {
    const file = randomFile(2 * MIB + 5, "mobile.bin");
    const { page } = await openPage(file);
    await emulateLink(await page.context().newCDPSession(page), LINKS.mobile);
    const from = tus.proxy.state.requests.length;
    await startUpload(page, { resume: false, stallTimeoutMs: 5000 });
    const done = await outcome(page);
    await assertStored(done, file);
    const log = await page.evaluate(() => window.__log);
    console.log(`# tus over 1 Mbit/s, 150 ms: one PATCH of ${file.size} bytes in ${Math.round(done.result.elapsedMs)} ms, progress first moved after ${Math.round(firstMoveMs(log))} ms, ${log.length} reports`);
    assert.equal(tus.requests("PATCH", from).length, 1);
    assert.equal(tus.requests("HEAD", from).length, 0, "never stalled");
    assert.ok(log.length > 20, `${log.length} progress reports`);
    await page.close();
  });

  test("a reload mid-upload resumes with one HEAD and sends only the rest", async () => {
    const file = randomFile(24 * MIB + 1, "reload.bin");
    const { page } = await openPage(file);
    const options = { chunkSize: 4 * MIB };
    // Held to 8 MiB/s per connection, so the reload lands mid-upload.
    tus.proxy.state.connectionBytesPerSecond = 8 * MIB;
    try {
      await startUpload(page, options);
      await waitForBytes(page, 10 * MIB);
      const location = await page.evaluate(() => window.__upload.location);
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      // What the cut PATCH wrote, once the server stopped writing it.
      const held = await tus.offset(location);
      assert.equal(statSync(tus.file(location)).size, held, "the file holds what the offset says");
      assert.ok(held >= 8 * MIB && held < file.size, `the server held ${held} bytes at the reload`);
      await page.setInputFiles("#file", file.path);
      const from = tus.proxy.state.requests.length;
      await startUpload(page, options);
      const done = await outcome(page);
      await assertStored(done, file);
      assert.equal(done.result.location, location, "the same upload went on");
      assert.equal(tus.requests("HEAD", from).length, 1, "one HEAD");
      assert.equal(tus.requests("POST", from).length, 0, "no new upload");
      assert.equal(tus.requests("PATCH", from)[0].offset, held, "on from the server's offset");
      assert.equal(patchedBytes(from), file.size - held, "only the rest was sent");
      console.log(`# tus reload: the server held ${held} bytes; ${file.size - held} sent after the reload`);
    } finally {
      tus.proxy.state.connectionBytesPerSecond = 0;
      await page.close();
    }
  });

  test("a connection cut mid-PATCH: HEAD, then on from the server's offset, bytes intact", async () => {
    const file = randomFile(24 * MIB, "cut.bin");
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    const cutsBefore = tus.proxy.state.cuts;
    tus.proxy.state.cutAfterBytes = 12 * MIB;
    await startUpload(page, { chunkSize: 8 * MIB, resume: false });
    const done = await outcome(page);
    await assertStored(done, file);
    assert.equal(tus.proxy.state.cuts - cutsBefore, 1);
    assert.ok(tus.requests("HEAD", from).length >= 1, "asked where the upload stands");
    const offsets = tus.requests("PATCH", from).map((p) => p.offset);
    assert.ok(offsets.some((o) => o > 8 * MIB && o < 16 * MIB), `went on mid-slice, not from the slice's start: ${offsets}`);
    await page.close();
  });

  test("a server that stops reading mid-PATCH is a stall, and the upload finishes", async () => {
    const file = randomFile(16 * MIB, "stall.bin");
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    const before = tus.proxy.state.silenced;
    tus.proxy.state.silenceAfterBytes = 5 * MIB;
    await startUpload(page, { resume: false, stallTimeoutMs: 2000 });
    const done = await outcome(page);
    await assertStored(done, file);
    assert.equal(tus.proxy.state.silenced - before, 1);
    assert.ok(tus.requests("HEAD", from).length >= 1);
    await page.close();
  });

  test("cancel sends DELETE, and the server no longer has the upload", async () => {
    const file = randomFile(24 * MIB, "cancel.bin");
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    tus.proxy.state.connectionBytesPerSecond = 8 * MIB;
    try {
      await startUpload(page, { resume: false });
      await waitForBytes(page, 4 * MIB);
      const location = await page.evaluate(() => window.__upload.location);
      await page.evaluate(() => window.__controller.abort());
      const done = await outcome(page);
      assert.equal(done.error?.name, "AbortError");
      assert.equal(tus.requests("DELETE", from).length, 1);
      const head = await fetch(location, { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
      assert.equal(head.status, 404);
      assert.equal(existsSync(tus.file(location)), false);
    } finally {
      tus.proxy.state.connectionBytesPerSecond = 0;
      await page.close();
    }
  });

  test("a ReadableStream of unknown length: Upload-Defer-Length, then the length at the end", async () => {
    const file = randomFile(5 * MIB + 7, "stream.bin");
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    await startUpload(page, { chunkSize: MIB }, `document.getElementById("file").files[0].stream()`);
    const done = await outcome(page);
    await assertStored(done, file);
    assert.equal(patchedBytes(from), file.size);
    // Six slices, then the PATCH that gives the length.
    assert.deepEqual(tus.requests("PATCH", from).map((p) => p.length).slice(-2), [7, 0]);
    await page.close();
  });

  test("an UploadQueue of 20 files under one limit", async () => {
    const { page } = await openPage();
    // A server of its own: the stall test's silenced PATCH stays counted in flight.
    const own = await startTus();
    const results = await page.evaluate(async (endpoint) => {
      const { default: init, UploadQueue } = await import("/pkg/index.js");
      await init();
      const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
      const files = [];
      for (let i = 0; i < 20; i++) {
        const bytes = new Uint8Array(300 * 1024 + i * 4099);
        for (let at = 0; at < bytes.length; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
        files.push(new File([bytes], `f${i}.bin`));
      }
      const queue = new UploadQueue({ endpoint, protocol: "tus", maxInFlight: 3, chunkSize: 256 * 1024 });
      const items = queue.add(files);
      await queue.done();
      return Promise.all(items.map(async (item) => ({
        state: item.state, error: item.error?.message, location: item.result?.location,
        sha256: hex(await crypto.subtle.digest("SHA-256", await item.file.arrayBuffer())),
      })));
    }, own.endpoint);
    try {
      assert.equal(results.length, 20);
      for (const r of results) {
        assert.equal(r.state, "done", r.error);
        assert.equal(await sha256File(own.file(r.location)), r.sha256);
      }
      const most = own.proxy.state.maxPutsInFlight;
      console.log(`# tus queue: 20 files, at most ${most} PATCHes in flight at once (limit 3)`);
      assert.ok(most <= 3, `${most} PATCHes in flight at once`);
      assert.ok(most > 1, "files went in parallel");
    } finally {
      own.stop();
      await page.close();
    }
  });

  test("the server's refusals reach the page with their status and words: 413 over its max size, 403 from onUploadCreate", async () => {
    const small = await startTus({ TUS_MAX_SIZE: String(MIB) });
    try {
      const file = randomFile(2 * MIB, "big.bin");
      const { page } = await openPage(file);
      await startUpload(page, { endpoint: small.endpoint, resume: false });
      let done = await outcome(page);
      assert.equal(done.error?.code, "http_status");
      assert.equal(done.error.status, 413);
      assert.match(done.error.message, /Maximum size exceeded/);
      await startUpload(page, { endpoint: small.endpoint, resume: false, metadata: { refuse: "no uploads on Sundays" } }, `new Blob(["tiny"])`);
      done = await outcome(page);
      assert.equal(done.error?.status, 403);
      assert.match(done.error.message, /no uploads on Sundays/);
      assert.equal(small.requests("PATCH").length, 0);
      await page.close();
    } finally {
      small.stop();
    }
  });

  test("a server with the checksum extension: every PATCH carries its SHA-256, a slice corrupted on the way is answered 460 and sent again, the result is verified", async () => {
    const checking = await startTus({ TUS_CHECKSUM: "1" });
    try {
      const file = randomFile(9 * MIB + 1, "checked.bin");
      const { page } = await openPage(file);
      checking.proxy.state.flipAfterBytes = 5 * MIB;
      await startUpload(page, { endpoint: checking.endpoint, chunkSize: 4 * MIB, resume: false });
      const done = await outcome(page);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(await sha256File(checking.file(done.result.location)), file.sha256);
      assert.equal(done.result.verified, true, "the server checked every slice");
      assert.equal(checking.proxy.state.flips, 1);
      const stats = await checking.stats();
      assert.deepEqual(stats, { checked: 4, mismatches: 1, shortened: 0 }, "three slices, one sent twice");
      assert.equal(checking.requests("PATCH").length, 4);
      await page.close();
    } finally {
      checking.stop();
    }
  });

  test("a server that wrote less than a PATCH carried (its Upload-Offset says so) is asked with HEAD and sent the rest, by XMLHttpRequest and by fetch", async () => {
    for (const via of ["xhr", "fetch"]) {
      const short = await startTus({ TUS_SHORT_FIRST: "1" });
      try {
        const file = randomFile(3 * MIB + 7, `short-${via}.bin`);
        const { page } = await openPage(file);
        // Without XMLHttpRequest (as in a service worker) the PATCH goes by fetch.
        if (via === "fetch") await page.evaluate(() => { window.XMLHttpRequest = undefined; });
        await startUpload(page, { endpoint: short.endpoint, resume: false });
        const done = await outcome(page);
        assert.ok(done.result, `${via}: ${JSON.stringify(done.error)}`);
        assert.equal((await short.stats()).shortened, 1, via);
        assert.equal(await sha256File(short.file(done.result.location)), file.sha256, `${via}: the stored file is whole`);
        assert.equal(short.requests("HEAD").length, 1, `${via}: one HEAD after the short answer`);
        const patches = short.requests("PATCH");
        assert.deepEqual(patches.map((p) => p.offset), [0, Math.floor(file.size / 2)], `${via}: the rest from where the server stopped`);
        await page.close();
      } finally {
        short.stop();
      }
    }
  });

  test("an upload the app's backend created (as Vimeo's upload_link) is continued with resumeFrom: no POST", async () => {
    const file = randomFile(5 * MIB + 11, "created.bin");
    const created = await fetch(tus.endpoint, {
      method: "POST", headers: { "Tus-Resumable": "1.0.0", "Upload-Length": String(file.size) },
    });
    assert.equal(created.status, 201);
    const location = new URL(created.headers.get("location"), tus.endpoint).href;
    const { page } = await openPage(file);
    const from = tus.proxy.state.requests.length;
    await startUpload(page, { resumeFrom: location, resume: false, chunkSize: 2 * MIB });
    const done = await outcome(page);
    await assertStored(done, file);
    assert.equal(done.result.location, location);
    assert.equal(tus.requests("POST", from).length, 0);
    assert.equal(tus.requests("HEAD", from).length, 1);
    assert.equal(patchedBytes(from), file.size);
    await page.close();
  });

  test("a tus server whose CORS rules refuse the page: a network error that says so, at once", async () => {
    const closed = await startTus({ TUS_ALLOWED_ORIGIN: "https://app.example" });
    try {
      const { page } = await openPage();
      await startUpload(page, { endpoint: closed.endpoint, resume: false }, `new Blob(["refused"])`);
      const done = await outcome(page);
      assert.equal(done.error?.code, "network");
      assert.match(done.error.message, /CORS/);
      assert.match(done.error.message, /tus server must allow/);
      await page.close();
    } finally {
      closed.stop();
    }
  });

  test("wrong options are refused at once, naming the option", async () => {
    const { page } = await openPage();
    const errors = await page.evaluate(async (endpoint) => {
      const { default: init, Upload } = await import("/pkg/chunkwise.js");
      await init();
      const attempt = (options) => {
        try { new Upload(new Blob(["x"]), { endpoint, ...options }); return null; }
        catch (e) { return `${e.name}: ${e.message}`; }
      };
      return [
        attempt({ protocol: "tux" }),
        attempt({ protocol: 1 }),
        attempt({ protocol: "tus", metadata: { "two words": "x" } }),
        attempt({ protocol: "tus", metadata: { n: 1 } }),
        attempt({ protocol: "tus", maxInFlight: 4 }),
      ];
    }, tus.endpoint);
    assert.match(errors[0], /^RangeError: protocol must be "chunkwise" or "tus"/);
    assert.match(errors[1], /^TypeError: protocol must be/);
    assert.match(errors[2], /^TypeError: metadata key "two words"/);
    assert.match(errors[3], /^TypeError: metadata\.n must be a string/);
    assert.equal(errors[4], null, "maxInFlight is accepted; each tus upload still sends one PATCH at a time");
    await page.close();
  });
});
