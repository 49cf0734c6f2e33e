// Straight to S3 through the app's own backend, with no chunkwise-server anywhere: the
// recipe in examples/s3-backend (server.mjs, the AWS SDK for JavaScript) runs as it is
// against a real Garage bucket and serves the page; Chromium uploads with the `s3` option
// and examples/s3-backend/client.mjs; what the bucket holds is read back and compared with
// the file by SHA-256.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startGarage } from "./garage.mjs";
import { startProxy } from "./proxy.mjs";
import { ROOT, launchChromium, randomFile, watchErrors } from "./support.mjs";

const MIB = 1024 * 1024;

/** The app's page: the package and the recipe's client side, nothing else. */
function appFiles() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-s3-app-"));
  symlinkSync(join(ROOT, "pkg"), join(dir, "pkg"));
  symlinkSync(join(ROOT, "examples/s3-backend/client.mjs"), join(dir, "client.mjs"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><input type="file" id="file" multiple>
<script type="module">
import init, { Upload, UploadQueue } from "/pkg/index.js";
import { s3Callbacks } from "/client.mjs";
await init();
Object.assign(window, { Upload, UploadQueue, s3Callbacks });
document.body.dataset.ready = "true";
</script>`);
  writeFileSync(join(dir, "worker.mjs"), `import init, { Upload } from "/pkg/index.js";
import { s3Callbacks } from "/client.mjs";
onmessage = async ({ data: file }) => {
  await init();
  try { postMessage({ result: await new Upload(file, { s3: s3Callbacks() }).start() }); }
  catch (error) { postMessage({ error: { code: error.code, message: error.message } }); }
};`);
  return dir;
}

const NODE_RECIPE = [process.execPath, join(ROOT, "examples/s3-backend/server.mjs")];
const PYTHON_RECIPE = [join(ROOT, "target/py/bin/python"), join(ROOT, "examples/s3-backend-python/server.py")];

/** Runs a recipe's server (examples/s3-backend/server.mjs by default) as it is, its store at
 * `storeUrl`. */
async function startBackend(garage, storeUrl, staticDir, env = {}, [command, ...args] = NODE_RECIPE) {
  const proc = spawn(command, args, {
    env: {
      ...process.env, S3_ENDPOINT: storeUrl, S3_REGION: "garage", S3_BUCKET: garage.bucket,
      AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey,
      PORT: "0", STATIC_DIR: staticDir, ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const reap = () => proc.kill("SIGKILL");
  process.once("exit", reap);
  let log = "";
  proc.stderr.on("data", (d) => { log = (log + d).slice(-4000); });
  const url = await new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      const found = /listening on (http:\/\/\S+)/.exec(String(d));
      if (found) resolve(found[1]);
    });
    proc.once("exit", (code) => reject(new Error(`the backend exited (${code}): ${log}`)));
  });
  return {
    url,
    log: () => log,
    async stop() {
      proc.kill("SIGKILL");
      process.off("exit", reap);
      if (proc.exitCode === null && proc.signalCode === null) await new Promise((ok) => proc.once("exit", ok));
    },
  };
}

/** Part PUTs that reached the store through `proxy`, by part number. */
function partPuts(proxy, from = 0) {
  const counts = new Map();
  for (const { method, path } of proxy.state.requests.slice(from)) {
    const number = method === "PUT" && /[?&]partNumber=(\d+)/.exec(path)?.[1];
    if (number) counts.set(Number(number), (counts.get(Number(number)) ?? 0) + 1);
  }
  return counts;
}

describe("the s3 option through the app's own backend (no chunkwise-server)", () => {
  let garage, proxy, backend, browser, staticDir;

  before(async () => {
    garage = await startGarage();
    proxy = await startProxy(garage.port);
    staticDir = appFiles();
    backend = await startBackend(garage, proxy.url, staticDir);
    await garage.allowOrigin(backend.url);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await backend?.stop();
    proxy?.close();
    await garage?.stop();
    if (staticDir) rmSync(staticDir, { recursive: true, force: true });
  });

  /** Runs `run(other)` with a second backend (`command`, `env`) that the bucket's CORS rule
   * also allows, and stops it after. */
  async function withBackend(env, command, run) {
    const other = await startBackend(garage, proxy.url, staticDir, env, command);
    try {
      await garage.allowOrigin(`${backend.url},${other.url}`);
      await run(other);
    } finally {
      await other.stop();
      await garage.allowOrigin(backend.url);
    }
  }

  async function pageWith(file, at = backend.url) {
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(`${at}/index.html`);
    await page.waitForSelector("body[data-ready=true]");
    if (file) await page.setInputFiles("#file", file.path);
    return { page, errors };
  }

  /** Uploads the chosen file with `options` (and the recipe's callbacks, unless `s3` is
   * given as the source of a function body); resolves with `{ result | error }`. */
  function upload(page, options = {}, s3 = "s3Callbacks()") {
    return page.evaluate(async ({ options, s3 }) => {
      const file = document.getElementById("file").files[0];
      const calls = new Function("s3Callbacks", `return ${s3}`)(window.s3Callbacks);
      window.__upload = new window.Upload(file, { ...options, s3: calls, onProgress: (p) => { window.__progress = p; } });
      try {
        return { result: await window.__upload.start() };
      } catch (error) {
        return { error: { name: error.name, code: error.code, status: error.status, message: error.message } };
      }
    }, { options, s3 });
  }

  test("64 MiB + 1 byte lands in the bucket byte-identical, every part checked by the store", async () => {
    const file = randomFile(64 * MIB + 1, "big.bin");
    const { page, errors } = await pageWith(file);
    const from = proxy.state.requests.length;
    const { result, error } = await upload(page, { chunkSize: 8 * MIB });
    assert.equal(error, undefined, JSON.stringify(error));
    assert.equal(result.size, 64 * MIB + 1);
    assert.equal(result.slices, 9);
    assert.equal(result.verified, true, "every part's checksum was signed, so the store checked it");
    assert.equal(result.sha256, null);
    assert.ok(result.location.endsWith(result.id), result.location);
    const stored = await garage.object(result.id);
    assert.deepEqual(stored, { sha256: file.sha256, size: 64 * MIB + 1 });
    assert.equal(await garage.multipartUploads(), 0, "no multipart upload left open");
    assert.deepEqual([...partPuts(proxy, from).values()], Array(9).fill(1), "each part sent once");
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("parts go in parallel: the store sees maxInFlight part PUTs at once", async () => {
    // Each connection to the store at 4 MiB/s, independently: an 8 MiB part is on the wire
    // for 2 s, time enough (on a loaded machine too) to read and hash the next slices. (A
    // shared link's queue would serialize the parts' heads and hide the parallelism.)
    const file = randomFile(48 * MIB, "parallel.bin");
    const { page } = await pageWith(file);
    proxy.state.maxPutsInFlight = 0;
    proxy.state.connectionBytesPerSecond = 4 * MIB;
    try {
      const { result, error } = await upload(page, { chunkSize: 8 * MIB, maxInFlight: 4 });
      assert.equal(error, undefined, JSON.stringify(error));
      assert.equal(proxy.state.maxPutsInFlight, 4, `four part PUTs at once, never more; saw ${proxy.state.maxPutsInFlight}`);
      assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 48 * MIB });
    } finally {
      proxy.state.connectionBytesPerSecond = 0;
    }
    await page.close();
  });

  test("a part corrupted on the way is refused by the store and only it is sent again", async () => {
    const file = randomFile(24 * MIB, "flip.bin");
    const { page } = await pageWith(file);
    const from = proxy.state.requests.length;
    // Inside the second part's body: past the first part's 8 MiB and the calls before it.
    proxy.state.flipAfterBytes = 12 * MIB;
    const flipsBefore = proxy.state.flips;
    const { result, error } = await upload(page, { chunkSize: 8 * MIB, maxInFlight: 1 });
    assert.equal(error, undefined, JSON.stringify(error));
    assert.equal(proxy.state.flips, flipsBefore + 1, "one byte was flipped");
    const puts = [...partPuts(proxy, from).entries()].sort((a, b) => a[0] - b[0]);
    assert.deepEqual(puts, [[1, 1], [2, 2], [3, 1]], "the corrupted part, and only it, twice");
    assert.equal(result.verified, true);
    assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 24 * MIB });
    await page.close();
  });

  test("a reload mid-upload resumes through listParts and sends only the missing parts", async () => {
    const file = randomFile(40 * MIB + 3, "reload.bin");
    const { page } = await pageWith(file);
    const first = upload(page, { chunkSize: 5 * MIB, maxInFlight: 1 }).catch(() => null);
    await page.waitForFunction(() => (window.__progress?.slicesDone ?? 0) >= 3, null, { timeout: 60_000 });
    await page.reload();
    await first;
    await page.waitForSelector("body[data-ready=true]");
    await page.setInputFiles("#file", file.path);
    const from = proxy.state.requests.length;
    const { result, error } = await upload(page, { chunkSize: 5 * MIB, maxInFlight: 1 });
    assert.equal(error, undefined, JSON.stringify(error));
    assert.ok(result.resumedSlices >= 3, `resumed ${result.resumedSlices}`);
    const sent = [...partPuts(proxy, from).keys()];
    assert.equal(sent.length, result.slices - result.resumedSlices, `sent again: ${sent}`);
    assert.ok(sent.every((n) => n > result.resumedSlices), `only missing parts: ${sent}`);
    assert.equal(result.verified, true);
    assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 40 * MIB + 3 });
    assert.equal(await garage.multipartUploads(), 0);
    await page.close();
  });

  test("cancel runs abortMultipartUpload and the store holds nothing of the upload", async () => {
    const file = randomFile(32 * MIB, "cancel.bin");
    const { page } = await pageWith(file);
    const keysBefore = await garage.keys();
    const outcome = await page.evaluate(async () => {
      const controller = new AbortController();
      let key;
      const calls = window.s3Callbacks();
      const upload = new window.Upload(document.getElementById("file").files[0], {
        s3: { ...calls, createMultipartUpload: async (args) => { const made = await calls.createMultipartUpload(args); key = made.key; return made; } },
        chunkSize: 5 * 1024 * 1024, maxInFlight: 1, signal: controller.signal,
        onProgress: (p) => { if (p.slicesDone >= 1) controller.abort(); },
      });
      try { await upload.start(); return { code: "finished", key }; } catch (error) { return { code: error.code, name: error.name, key }; }
    });
    assert.equal(outcome.name, "AbortError");
    assert.equal(outcome.code, "aborted");
    // The abort runs after the rejection: give it a moment.
    for (let i = 0; i < 50 && (await garage.multipartUploads()) > 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await garage.multipartUploads(), 0, "the multipart upload was aborted");
    assert.deepEqual(await garage.keys(), keysBefore, `no object ${outcome.key}`);
    await page.close();
  });

  test("a queue of 20 files, under one limit counted at the store, each stored byte-identical", async () => {
    const { page } = await pageWith(null);
    const from = proxy.state.requests.length;
    // Each connection to the store at 1 MiB/s, so parts stay on the wire long enough
    // (0.25 to 1 s each) for the store to see how many are in flight at once.
    proxy.state.maxPutsInFlight = 0;
    proxy.state.connectionBytesPerSecond = MIB;
    const results = await page.evaluate(async () => {
      const files = [];
      for (let i = 0; i < 20; i++) {
        const bytes = new Uint8Array(256 * 1024 + i * 37_111);
        for (let at = 0; at < bytes.length; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
        files.push(new File([bytes], `f${i}.bin`));
      }
      // One part each: S3 takes parts under 5 MiB only as the last.
      const queue = new window.UploadQueue({ s3: window.s3Callbacks(), maxInFlight: 6 });
      const items = queue.add(files);
      await queue.done();
      const hex = async (file) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", await file.arrayBuffer()))]
        .map((b) => b.toString(16).padStart(2, "0")).join("");
      return {
        items: await Promise.all(items.map(async (item, i) => ({
          state: item.state, error: item.error?.message, id: item.result?.id, verified: item.result?.verified,
          sha256: await hex(files[i]), size: files[i].size,
        }))),
      };
    }).finally(() => { proxy.state.connectionBytesPerSecond = 0; });
    // Counted on the wire: never more than the limit, and more than one at once (files
    // really share it, none waits for the one before to finish).
    const most = proxy.state.maxPutsInFlight;
    assert.ok(most <= 6, `at most 6 part PUTs at the store at once; saw ${most}`);
    assert.ok(most >= 4, `the files' parts went in parallel; the store saw at most ${most} at once`);
    const parts = proxy.state.requests.slice(from).filter((r) => r.method === "PUT" && /[?&]partNumber=/.test(r.path));
    assert.equal(parts.length, 20, "one part PUT per file");
    console.log(`# s3 queue of 20: at most ${most} part PUTs at the store at once`);
    for (const item of results.items) {
      assert.equal(item.state, "done", item.error);
      assert.equal(item.verified, true);
      assert.deepEqual(await garage.object(item.id), { sha256: item.sha256, size: item.size });
    }
    await page.close();
  });

  test("in a module worker too", async () => {
    const file = randomFile(6 * MIB + 7, "worker.bin");
    const { page } = await pageWith(file);
    const { result, error } = await page.evaluate(() => new Promise((resolve) => {
      const worker = new Worker("/worker.mjs", { type: "module" });
      worker.onmessage = ({ data }) => { worker.terminate(); resolve(data); };
      worker.onerror = (e) => resolve({ error: { message: e.message } });
      worker.postMessage(document.getElementById("file").files[0]);
    }));
    assert.equal(error, undefined, JSON.stringify(error));
    assert.equal(result.verified, true);
    assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 6 * MIB + 7 });
    await page.close();
  });

  test("a callback that rejects or answers in the wrong shape ends the upload with s3_callback, naming it", async () => {
    const file = randomFile(MIB, "bad.bin");
    const { page } = await pageWith(file);
    // resume: false, or each attempt would resume the upload the one before it created.
    const rejects = await upload(page, { resume: false }, `({ ...s3Callbacks(), signPart: async () => { throw new Error("the signer is down") } })`);
    assert.equal(rejects.error?.name, "UploadError");
    assert.equal(rejects.error.code, "s3_callback");
    assert.equal(rejects.error.status, undefined);
    assert.match(rejects.error.message, /s3\.signPart failed: the signer is down/);
    const garbage = await upload(page, { resume: false }, `({ ...s3Callbacks(), createMultipartUpload: () => ({ uploadId: 42, key: "k" }) })`);
    assert.equal(garbage.error?.code, "s3_callback");
    assert.match(garbage.error.message, /s3\.createMultipartUpload answered in the wrong shape: uploadId/);
    const badUrl = await upload(page, { resume: false }, `({ ...s3Callbacks(), signPart: () => ({ url: "/relative" }) })`);
    assert.equal(badUrl.error?.code, "s3_callback");
    assert.match(badUrl.error.message, /s3\.signPart answered in the wrong shape: url/);
    const thrown = await page.evaluate(() => {
      const file = document.getElementById("file").files[0];
      const attempt = (options) => { try { new window.Upload(file, options); return null; } catch (e) { return `${e.name}: ${e.message}`; } };
      const calls = window.s3Callbacks();
      return {
        endpoint: attempt({ s3: calls, endpoint: "/uploads" }),
        headers: attempt({ s3: calls, headers: { a: "b" } }),
        missing: attempt({ s3: { ...calls, listParts: undefined } }),
        digest: attempt({ s3: calls, digest: "none" }),
      };
    });
    assert.match(thrown.endpoint, /^TypeError: endpoint cannot be used with s3/);
    assert.match(thrown.headers, /^TypeError: headers cannot be used with s3/);
    assert.match(thrown.missing, /^TypeError: s3\.listParts must be a function; got undefined/);
    assert.match(thrown.digest, /^RangeError: digest "none" cannot be used with s3/);
    await page.close();
  });

  test("parts kept from before the file changed are never completed into an object", async () => {
    const file = randomFile(15 * MIB, "changed.bin");
    const { page } = await pageWith(file);
    // Parts 1 and 2 reach the store; signing part 3 fails.
    const first = await upload(page, { chunkSize: 5 * MIB, maxInFlight: 1 },
      `({ ...s3Callbacks(), signPart: (a) => a.partNumber === 3 ? Promise.reject(new Error("later")) : s3Callbacks().signPart(a) })`);
    assert.equal(first.error?.code, "s3_callback");
    // The file changes inside part 2, its name, size, date and first MiB the same: the
    // resume record still matches it.
    const { atimeNs, mtimeNs } = statSync(file.path, { bigint: true });
    const fd = openSync(file.path, "r+");
    writeSync(fd, Buffer.from([1, 2, 3]), 0, 3, 7 * MIB);
    closeSync(fd);
    // To the microsecond: a Date would round the millisecond the fingerprint keeps.
    utimesSync(file.path, Number(atimeNs / 1000n) / 1e6, Number(mtimeNs / 1000n) / 1e6);
    await page.setInputFiles("#file", file.path);
    const keysBefore = await garage.keys();
    const second = await upload(page, { chunkSize: 5 * MIB, maxInFlight: 1 });
    assert.equal(second.error?.code, "digest_mismatch", JSON.stringify(second));
    assert.match(second.error.message, /changed since the upload began; not completed/);
    assert.deepEqual(await garage.keys(), keysBefore, "no object of neither file");
    await page.close();
  });

  test("a bucket without the CORS rule fails at once, naming the rule", async () => {
    const file = randomFile(6 * MIB, "cors.bin");
    const { page } = await pageWith(file);
    await garage.allowOrigin("https://elsewhere.example");
    try {
      const started = Date.now();
      const { error } = await upload(page, { resume: false });
      assert.equal(error?.code, "network", JSON.stringify(error));
      assert.match(error.message, /bucket needs a CORS rule allowing PUT from http:\/\/127\.0\.0\.1:\d+/);
      assert.ok(Date.now() - started < 30_000, "no retrying what cannot work");
    } finally {
      await garage.allowOrigin(backend.url);
    }
    await page.close();
  });

  test("a signer that leaves the checksum out still uploads, with verified: false", async () => {
    await withBackend({ SIGN_CHECKSUMS: "0" }, NODE_RECIPE, async (unsigned) => {
      const file = randomFile(12 * MIB + 5, "unsigned.bin");
      const { page } = await pageWith(file, unsigned.url);
      const { result, error } = await upload(page, { chunkSize: 5 * MIB });
      assert.equal(error, undefined, JSON.stringify(error));
      assert.equal(result.verified, false, "the store checked no part's SHA-256");
      assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 12 * MIB + 5 });
      await page.close();
    });
  });

  test("the Python (boto3) recipe too", async () => {
    await withBackend({}, PYTHON_RECIPE, async (python) => {
      const file = randomFile(16 * MIB + 1, "python.bin");
      const { page } = await pageWith(file, python.url);
      const from = proxy.state.requests.length;
      proxy.state.flipAfterBytes = 2 * MIB;
      const { result, error } = await upload(page, { chunkSize: 8 * MIB, maxInFlight: 1 });
      assert.equal(error, undefined, `${JSON.stringify(error)} ${python.log()}`);
      assert.equal(result.verified, true, "every part's checksum was signed");
      const puts = [...partPuts(proxy, from).entries()].sort((a, b) => a[0] - b[0]);
      assert.deepEqual(puts, [[1, 2], [2, 1], [3, 1]], "the corrupted part was refused and sent again");
      assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 16 * MIB + 1 });
      await page.close();
    });
  });

  test("an empty file becomes an empty object", async () => {
    const file = randomFile(0, "empty.bin");
    const { page } = await pageWith(file);
    // The failed uploads above stay resumable: their multipart uploads are still open.
    const open = await garage.multipartUploads();
    const from = proxy.state.requests.length;
    const { result, error } = await upload(page);
    assert.equal(error, undefined, JSON.stringify(error));
    assert.equal(result.size, 0);
    assert.deepEqual(await garage.object(result.id), { sha256: file.sha256, size: 0 });
    // What the recipe did at the store for this key: opened a multipart upload, sent no
    // part, aborted it (S3 completes none without a part) and put an empty object.
    const calls = proxy.state.requests.slice(from)
      .filter((r) => new URL(r.path, "http://x").pathname.endsWith(`/${result.id}`))
      .map(({ method, path }) => {
        const query = new URL(path, "http://x").searchParams;
        return `${method} ${query.has("uploads") ? "create" : query.has("partNumber") ? "part" : query.has("uploadId") ? "upload" : "object"}`;
      });
    assert.deepEqual(calls.filter((c) => c !== "GET upload"), ["POST create", "DELETE upload", "PUT object"], calls.join(", "));
    assert.equal(await garage.multipartUploads(), open, "its own multipart upload was closed");
    await page.close();
  });
});
