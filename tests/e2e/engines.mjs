// The scenarios every browser engine runs (tests/e2e/firefox.test.mjs, webkit.test.mjs),
// through a small driver each engine's test provides:
//   { goto(url), run(fn, ...args), waitFor(fn), setFiles(css, paths), click(css), reload(),
//     tab() -> id, newTab() -> id (and switches to it), switchTo(id), closeTab(), stop() }
// `run` evaluates an async function's source in the current tab. Against the real server,
// with the page and the API on two origins; every stored file is compared with its source
// by SHA-256.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { installed, randomFile, sha256File, startServer } from "./support.mjs";
import { startLinkProxy } from "./link-proxy.mjs";
import { pageDir } from "./engine-page.mjs";
import { startGarage } from "./garage.mjs";
import { startTus } from "./tus.mjs";

const MIB = 1024 * 1024;

/** Describes the scenarios in the engine `name`; `start()` resolves with its driver, or
 * null when the engine is not here (each test then skips). `expect` notes what the engine
 * lacks: `{ byob: false }` when it has no BYOB readers. */
export function describeEngine(name, start, expect = {}) {
  describe(`in ${name}`, () => {
    let site, api, driver, endpoint;
    before(async () => {
      driver = await start();
      if (!driver) return;
      site = await startServer([], { www: pageDir() });
      api = await startServer(["--allowed-origin", site.url]);
      endpoint = `${api.url}/uploads`;
    });
    after(async () => { await driver?.stop(); await api?.stop(); await site?.stop(); });

    /** Opens the page (or, with `reload`, reloads it), waits for it, and chooses `files`. */
    async function open(files = [], { reload = false } = {}) {
      await (reload ? driver.reload() : driver.goto(`${site.url}/index.html`));
      await driver.waitFor(() => document.body.dataset.ready === "true");
      if (files.length) await driver.setFiles("#file", files.map((f) => f.path));
    }
    const stored = (id) => sha256File(join(api.dataDir, "files", id));
    const begin = (to, options = {}) => driver.run((to, options) => { window.begin(window.files()[0], { endpoint: to, ...options }); }, to, options);
    const outcome = () => driver.run(() => window.__outcome);
    /** Runs `body(linkUrl, link)` with a link proxy of `settings` in front of the API. */
    async function throughLink(settings, body) {
      const link = await startLinkProxy(api.port, settings);
      try { await body(`${link.url}/uploads`, link); } finally { link.close(); }
    }
    const it = (title, body) => test(title, (t) => (driver ? body(t) : t.skip(`no ${name} here`)));

    it("a 40 MiB + 1 file: verified, bytes shown as they leave, stored byte-identical", async () => {
      const file = randomFile(40 * MIB + 1, "engine-large.bin");
      await open([file]);
      const byob = await driver.run(() => typeof ReadableStreamBYOBReader !== "undefined");
      assert.equal(byob, expect.byob ?? true, "BYOB readers (without them, the fallback reader runs)");
      await begin(endpoint, { resume: false });
      const done = await outcome();
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(done.result.verified, true);
      assert.equal(done.result.sha256, file.sha256);
      assert.equal(await stored(done.result.id), file.sha256);
      const log = await driver.run(() => window.__log);
      assert.ok(log.length >= 5, `${log.length} progress reports`);
      assert.ok(log.some(([sent, acked]) => sent > acked), "bytes were shown as they left, before they were stored");
    });

    it("a ReadableStream of unknown length", async () => {
      await open();
      const done = await driver.run(async (to) => {
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
        window.begin(stream, { endpoint: to });
        return window.__outcome;
      }, endpoint);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(done.result.size, 9 * MIB + 7);
      assert.equal(done.result.verified, true);
      assert.equal(await stored(done.result.id), done.result.sha256);
    });

    it("an UploadQueue of four files, an empty one among them", async () => {
      const files = [randomFile(0, "engine-q0.bin"), randomFile(1, "engine-q1.bin"), randomFile(3 * MIB, "engine-q2.bin"), randomFile(9 * MIB + 3, "engine-q3.bin")];
      await open(files);
      const items = await driver.run((to) => window.queue(to), endpoint);
      assert.equal(items.length, 4);
      for (const [i, item] of items.entries()) {
        assert.equal(item.state, "done", JSON.stringify(item.error));
        assert.equal(await stored(item.id), files[i].sha256, item.path);
      }
    });

    it("from a module worker", async () => {
      const file = randomFile(5 * MIB + 1, "engine-worker.bin");
      await open([file]);
      const done = await driver.run((to) => window.inWorker(to), endpoint);
      assert.ok(done.result, JSON.stringify(done.error));
      assert.equal(await stored(done.result.id), file.sha256);
    });

    it("cancel: an AbortError, and the server forgets the upload", async () => {
      await open([randomFile(24 * MIB, "engine-cancel.bin")]);
      const done = await driver.run(async (to) => {
        const controller = new AbortController();
        window.begin(window.files()[0], { endpoint: to, chunkSize: 1024 * 1024, maxInFlight: 1, signal: controller.signal });
        while ((window.__log.at(-1)?.[1] ?? 0) < 2 * 1024 * 1024) await new Promise((r) => setTimeout(r, 5));
        controller.abort();
        return { ...(await window.__outcome), location: window.__upload.location };
      }, endpoint);
      assert.equal(done.error?.name, "AbortError", JSON.stringify(done));
      assert.equal(done.error.code, "aborted");
      assert.equal((await fetch(done.location)).status, 404, "the upload was deleted on the server");
    });

    it("a reload mid-upload resumes from IndexedDB and sends only the rest", async () => {
      const file = randomFile(16 * MIB + 5, "engine-reload.bin");
      const options = { chunkSize: 1024 * 1024, maxInFlight: 2 };
      // A 64 Mbit/s link, so that the reload lands mid-upload.
      await throughLink({ upBitsPerSecond: 64e6, rttMs: 10 }, async (to, link) => {
        await open([file]);
        await begin(to, options);
        await driver.waitFor(() => (window.__log.at(-1)?.[1] ?? 0) >= 4 * 1024 * 1024);
        await open([file], { reload: true });
        link.reset();
        await begin(to, options);
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.ok(done.result.resumedSlices >= 4, `resumed ${done.result.resumedSlices}`);
        assert.equal(await stored(done.result.id), file.sha256);
        assert.equal(link.counts().PUT, 17 - done.result.resumedSlices, `only the missing slices: ${JSON.stringify(link.counts())}`);
        assert.equal(link.counts().POST, 1, "no new upload, one complete");
      });
    });

    it("over an 8 Mbit/s, 60 ms link: progress moves, nothing is sent twice", async () => {
      const file = randomFile(6 * MIB, "engine-slow.bin");
      await throughLink({ upBitsPerSecond: 8e6, rttMs: 60 }, async (to, link) => {
        await open([file]);
        await begin(to, { chunkSize: 1024 * 1024, maxInFlight: 2, resume: false });
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(await stored(done.result.id), file.sha256);
        const steps = new Set((await driver.run(() => window.__log)).map(([sent]) => sent)).size;
        assert.ok(steps >= 6, `progress moved in ${steps} steps`);
        assert.equal(link.counts().PUT, 6, `each 1 MiB slice once: ${JSON.stringify(link.counts())}`);
      });
    });

    it("a server killed with SIGKILL mid-upload and started again: the same upload goes on", async () => {
      const file = randomFile(24 * MIB + 1, "engine-kill.bin");
      let own = await startServer(["--allowed-origin", site.url, "--enable-fault-injection"]);
      const { port, dataDir } = own;
      const link = await startLinkProxy(port, { upBitsPerSecond: 64e6, rttMs: 10 });
      try {
        await open([file]);
        await begin(`${link.url}/uploads`, { chunkSize: MIB, maxInFlight: 4, resume: false });
        await driver.waitFor(() => (window.__log.at(-1)?.[1] ?? 0) >= 6 * 1024 * 1024);
        await own.kill9();
        await new Promise((r) => setTimeout(r, 1500));
        own = await startServer(["--allowed-origin", site.url, "--enable-fault-injection"], { listen: `127.0.0.1:${port}`, dataDir });
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(done.result.verified, true);
        assert.equal(await sha256File(join(dataDir, "files", done.result.id)), file.sha256);
        // The restarted server was sent only what it did not hold: at least 6 of the 25
        // slices were stored before the kill, and at most 4 were in flight then.
        const seen = await (await fetch(`${own.url}/_test/requests`)).json();
        assert.ok(seen.PUT <= 25 - 6 + 4, `the upload went on, not over: ${JSON.stringify(seen)}`);
      } finally {
        link.close();
        await own.stop();
      }
    });

    it("direct to an S3-compatible store (Garage): the bucket holds the file", async (t) => {
      if (!installed(t, "garage")) return;
      const garage = await startGarage();
      const signer = await startServer(["--s3-endpoint", garage.endpoint, "--s3-region", "garage", "--s3-bucket", garage.bucket, "--allowed-origin", site.url], {
        env: { AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey },
      });
      try {
        await garage.allowOrigin(site.url);
        const file = randomFile(20 * MIB + 1, "engine-s3.bin");
        await open([file]);
        await begin(`${signer.url}/uploads`, { resume: false });
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(done.result.verified, true, "every part checked by the store");
        assert.deepEqual(await garage.object(done.result.id.split(".")[0]), { sha256: file.sha256, size: 20 * MIB + 1 });
        assert.equal(await garage.multipartUploads(), 0, "no multipart upload left open");
      } finally {
        await signer.stop();
        await garage.stop();
      }
    });

    it('protocol: "tus" to @tus/server: the file it holds is the source', async () => {
      const tus = await startTus();
      try {
        const file = randomFile(10 * MIB + 3, "engine-tus.bin");
        await open([file]);
        await begin(tus.endpoint, { protocol: "tus", chunkSize: 4 * MIB, resume: false });
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(await sha256File(tus.file(done.result.location)), file.sha256);
        assert.equal(tus.requests("PATCH").length, 3, "three 4 MiB PATCHes, each once");
      } finally {
        tus.stop();
      }
    });

    // Web Locks: one upload of a resume record at a time, counted at the link in front of
    // the server.
    it("the same file in a second tab is refused with code busy and sends nothing", async () => {
      const file = randomFile(12 * MIB, "engine-tabs.bin");
      await throughLink({ upBitsPerSecond: 32e6, rttMs: 10 }, async (to, link) => {
        await open([file]);
        const first = await driver.tab();
        await begin(to);
        await driver.waitFor(() => (window.__log.at(-1)?.[0] ?? 0) > 0);
        await driver.newTab();
        await open([file]);
        const listed = await driver.run(() => window.previous());
        assert.equal(listed.length, 1, JSON.stringify(listed));
        assert.equal(listed[0].uploading, true, "findPrevious shows the upload the other tab runs");
        await begin(to);
        assert.equal((await outcome()).error?.code, "busy");
        await driver.closeTab();
        await driver.switchTo(first);
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(await stored(done.result.id), file.sha256);
        assert.equal(link.counts().PUT, 2, "two 8 MiB slices, each once: the second tab sent none");
      });
    });

    it("a reload of the uploading tab releases its lock: the other tab resumes the same upload", async () => {
      const file = randomFile(12 * MIB + 1, "engine-tab-reload.bin");
      const options = { chunkSize: MIB, maxInFlight: 2 };
      await throughLink({ upBitsPerSecond: 16e6, rttMs: 20 }, async (to, link) => {
        await open([file]);
        const first = await driver.tab();
        await begin(to, options);
        await driver.waitFor(() => (window.__log.at(-1)?.[1] ?? 0) >= 2 * 1024 * 1024);
        const location = await driver.run(() => window.__upload.location);
        const second = await driver.newTab();
        await open([file]);
        await begin(to, options);
        assert.equal((await outcome()).error?.code, "busy");
        await driver.switchTo(first);
        await open([], { reload: true });
        await driver.switchTo(second);
        link.reset();
        await begin(to, options);
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(done.result.location, location, "the same upload went on");
        assert.ok(done.result.resumedSlices >= 2, `resumed ${done.result.resumedSlices} slices`);
        assert.equal(await stored(done.result.id), file.sha256);
        assert.equal(link.counts().POST, 1, `no new upload, one complete: ${JSON.stringify(link.counts())}`);
        assert.ok(link.counts().PUT <= 13 - done.result.resumedSlices + 2, `only the missing slices (and those the reload cut): ${JSON.stringify(link.counts())}`);
        await driver.closeTab();
        await driver.switchTo(first);
      });
    });

    it("a worker beside the uploading tab is refused with code busy", async () => {
      const file = randomFile(6 * MIB, "engine-tab-worker.bin");
      await throughLink({ upBitsPerSecond: 16e6, rttMs: 20 }, async (to, link) => {
        await open([file]);
        await begin(to, { chunkSize: MIB, maxInFlight: 2 });
        await driver.waitFor(() => (window.__log.at(-1)?.[1] ?? 0) >= 1024 * 1024);
        const fromWorker = await driver.run((to) => window.inWorker(to), to);
        assert.equal(fromWorker.error?.code, "busy", JSON.stringify(fromWorker));
        const done = await outcome();
        assert.ok(done.result, JSON.stringify(done.error));
        assert.equal(await stored(done.result.id), file.sha256);
        assert.equal(link.counts().PUT, 6, `each 1 MiB slice once: ${JSON.stringify(link.counts())}`);
      });
    });

    it("the demo page loads and uploads", async () => {
      const demo = await startServer([]);
      try {
        const file = randomFile(3 * MIB + 1, "engine-demo.bin");
        await driver.goto(demo.url);
        await driver.waitFor(() => document.body.dataset.ready === "true");
        await driver.setFiles("#file", [file.path]);
        await driver.waitFor(() => !document.getElementById("start").disabled);
        await driver.click("#start");
        await driver.waitFor(() => document.body.dataset.state === "done");
        // files/ holds each upload's bytes ({id}) beside its record ({id}.json).
        const ids = readdirSync(join(demo.dataDir, "files")).filter((n) => !n.endsWith(".json"));
        assert.equal(ids.length, 1, ids.join(", "));
        assert.equal(await sha256File(join(demo.dataDir, "files", ids[0])), file.sha256);
      } finally {
        await demo.stop();
      }
    });
  });
}
