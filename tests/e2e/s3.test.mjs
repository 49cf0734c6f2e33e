// Direct mode against a real store: chunkwise-server signs, Chromium sends every slice
// straight to a real Garage bucket, and what the bucket holds is read back with GetObject
// (server/examples/s3tool, aws-sdk-s3) and compared with the file by SHA-256.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { startGarage } from "./garage.mjs";
import { startProxy } from "./proxy.mjs";
import { startRoundRobin } from "./round-robin.mjs";
import { launchChromium, randomFile, startServer, watchErrors } from "./support.mjs";

const MIB = 1024 * 1024;

/** A chunkwise-server on `garage` (at `storeUrl`: the store itself, or a proxy in front of
 * it) with its credentials, and `args` that choose the mode. */
function startS3Server(garage, args, storeUrl = garage.endpoint) {
  return startServer(["--s3-endpoint", storeUrl, "--s3-region", "garage", ...args], {
    env: { AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey },
  });
}

/** A direct-mode chunkwise-server in front of `garage`, its presigned URLs pointing at
 * `storeUrl`. */
function startSigner(garage, storeUrl = garage.endpoint, extra = []) {
  return startS3Server(garage, ["--s3-bucket", garage.bucket, ...extra], storeUrl);
}

/** A page of `browser` at `url` (a server's demo) with `file` chosen; `errors` collects
 * what it logs as errors. */
async function pageAt(browser, url, file) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  await page.setInputFiles("#file", file.path);
  return { page, errors };
}

/** Starts an upload of the page's chosen file and cancels it once a slice is stored;
 * resolves with the rejection's code ("finished" if it was not cancelled). */
function cancelAfterFirstSlice(page, options = {}) {
  return page.evaluate(async (options) => {
    const { default: init, Upload } = await import("/pkg/index.js");
    await init();
    const controller = new AbortController();
    const upload = new Upload(document.getElementById("file").files[0], {
      endpoint: "/uploads", maxInFlight: 1, signal: controller.signal, ...options,
      onProgress: (p) => { if (p.slicesDone >= 1) controller.abort(); },
    });
    try { await upload.start(); return "finished"; } catch (error) { return error.code; }
  }, options);
}

/** Uploads the page's chosen file with the library; resolves with `{ result | error, sends }`. */
function upload(page, options = {}) {
  return page.evaluate(async (options) => {
    const { default: init, Upload } = await import("/pkg/index.js");
    await init();
    const file = document.getElementById("file").files[0];
    const sends = {};
    window.__upload = new Upload(file, {
      endpoint: "/uploads",
      ...options,
      onSlice: (e) => { if (e.state === "sending") sends[e.index] = (sends[e.index] ?? 0) + 1; },
      onProgress: (p) => { window.__progress = p; },
    });
    try {
      return { result: await window.__upload.start(), sends };
    } catch (error) {
      return { error: { name: error.name, code: error.code, status: error.status, message: error.message }, sends };
    }
  }, options);
}

/** Uploads a 64 MiB (+ `extra`) file through `balancer`, kills `victim` with kill -9 once
 * two slices are done, and checks that the other instance finished it: both instances
 * served, and the object at `keyOf(id)` equals the file. */
async function killOneMidUpload(browser, balancer, victim, garage, keyOf, extra = 0) {
  const file = randomFile(64 * MIB + extra, "scale.bin");
  const { page } = await pageAt(browser, balancer.url, file);
  const outcome = upload(page, { maxInFlight: 2 });
  await page.waitForFunction(() => window.__progress?.slicesDone >= 2, null, { timeout: 60_000 });
  await victim.kill9();
  const { result, error } = await outcome;
  assert.ok(result, JSON.stringify(error));
  assert.equal(result.verified, true);
  assert.ok(balancer.state.connections.every((n) => n > 0), `both instances served: ${balancer.state.connections}`);
  assert.deepEqual(await garage.object(keyOf(result.id)), { sha256: file.sha256, size: 64 * MIB + extra });
  assert.equal(await garage.multipartUploads(), 0, "no multipart upload left open");
  await page.close();
}

/** 32 uploads at once from one page through `balancer`, each read back from `keyOf(id)`;
 * both instances served. */
async function thirtyTwoAtOnce(browser, balancer, garage, keyOf, name) {
  const sizeOf = (i) => 5 * MIB + 1000 * i;
  const files = Array.from({ length: 32 }, (_, i) => randomFile(sizeOf(i), `${name}-${i}.bin`));
  const page = await browser.newPage();
  await page.goto(balancer.url);
  await page.waitForSelector("body[data-ready=true]");
  await page.setContent(`<input id="files" type="file" multiple>`);
  await page.setInputFiles("#files", files.map((f) => f.path));
  const outcomes = await page.evaluate(async () => {
    const { default: init, Upload } = await import("/pkg/index.js");
    await init();
    return Promise.all([...document.getElementById("files").files].map((file) =>
      new Upload(file, { endpoint: "/uploads", chunkSize: 5 * 1024 * 1024, resume: false }).start().then(
        (result) => ({ id: result.id, verified: result.verified }),
        (error) => ({ error: `${error.code}: ${error.message}` }))));
  });
  for (const [i, outcome] of outcomes.entries()) {
    assert.ok(outcome.id, `upload ${i}: ${outcome.error}`);
    assert.equal(outcome.verified, true);
    assert.deepEqual(await garage.object(keyOf(outcome.id)), { sha256: files[i].sha256, size: sizeOf(i) });
  }
  assert.ok(balancer.state.connections.every((n) => n > 0), `both instances served: ${balancer.state.connections}`);
  await page.close();
}

describe("direct mode: slices straight to an S3-compatible store (Garage)", () => {
  let garage, server, browser;
  before(async () => {
    garage = await startGarage();
    server = await startSigner(garage);
    await garage.allowOrigin(server.url);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    await garage?.stop();
  });

  const pageWith = (file) => pageAt(browser, server.url, file);

  test("64 MiB + 1 byte lands in the bucket byte-identical, every part checked by the store", async () => {
    const file = randomFile(64 * MIB + 1, "direct.bin");
    const { page, errors } = await pageWith(file);
    const outcome = await upload(page);
    assert.ok(outcome.result, JSON.stringify(outcome.error));
    assert.equal(outcome.result.verified, true);
    assert.equal(outcome.result.sha256, null, "no whole-file hash in direct mode");
    assert.equal(outcome.result.slices, 9);
    const key = outcome.result.id.split(".")[0];
    assert.deepEqual(await garage.object(key), { sha256: file.sha256, size: 64 * MIB + 1 });
    assert.equal(await garage.multipartUploads(), 0, "no multipart upload left open");
    assert.deepEqual(errors.filter((e) => !e.includes("favicon")), []);
    await page.close();
  });

  test("the demo page uploads straight to the bucket and says who checked the bytes", async () => {
    const file = randomFile(20 * MIB + 9, "demo.bin");
    const { page, errors } = await pageWith(file);
    await page.selectOption("#chunk-size", String(1 * MIB));
    await page.click("#start");
    await page.waitForSelector("body[data-state=error]", { timeout: 60_000 });
    assert.match(await page.locator("#error").textContent(), /chunkSize 1048576 is not one the object store accepts/);
    await page.selectOption("#chunk-size", String(8 * MIB));
    await page.click("#start");
    await page.waitForSelector("body[data-state=done]", { timeout: 120_000 });
    assert.match(await page.locator("#verdict").textContent(), /the bucket holds exactly the bytes/);
    assert.match(await page.locator("#checked").textContent(), /all 3 slices.*by the object store/);
    const id = (await page.locator("#upload-id").textContent()).split(" ")[0];
    assert.deepEqual(await garage.object(id.split(".")[0]), { sha256: file.sha256, size: 20 * MIB + 9 });
    assert.deepEqual(errors.filter((e) => !/favicon|400/.test(e)), []);
    await page.close();
  });

  test("a part corrupted on the way is refused by the store and sent again from the file", async () => {
    const proxy = await startProxy(garage.port);
    const signer = await startSigner(garage, proxy.url);
    try {
      await garage.allowOrigin(`${server.url},${signer.url}`);
      const file = randomFile(20 * MIB, "flipped.bin");
      const { page } = await pageAt(browser, signer.url, file);
      // Somewhere inside the first part's body (past its request headers).
      proxy.state.flipAfterBytes = 3 * MIB;
      const outcome = await upload(page, { maxInFlight: 1 });
      assert.ok(outcome.result, JSON.stringify(outcome.error));
      assert.equal(proxy.state.flips, 1, "one byte was flipped");
      assert.deepEqual(outcome.sends, { 0: 2, 1: 1, 2: 1 }, "slice 0 was sent twice, the rest once");
      const key = outcome.result.id.split(".")[0];
      assert.deepEqual(await garage.object(key), { sha256: file.sha256, size: 20 * MIB });
      await page.close();
    } finally {
      await garage.allowOrigin(server.url);
      await signer.stop();
      proxy.close();
    }
  });

  test("without XMLHttpRequest (as in a service worker) the parts go by fetch, still checked by the store", async () => {
    const file = randomFile(12 * MIB + 5, "fetch.bin");
    const { page } = await pageWith(file);
    await page.evaluate(() => { window.XMLHttpRequest = undefined; });
    const outcome = await upload(page);
    assert.ok(outcome.result, JSON.stringify(outcome.error));
    assert.equal(outcome.result.verified, true);
    assert.deepEqual(outcome.sends, { 0: 1, 1: 1 });
    assert.deepEqual(await garage.object(outcome.result.id.split(".")[0]), { sha256: file.sha256, size: 12 * MIB + 5 });
    await page.close();
  });

  test("a ReadableStream of unknown length goes straight to the bucket; so does an empty one", async () => {
    for (const size of [11 * MIB + 7, 0]) {
      const file = randomFile(size, `stream-${size}.bin`);
      const { page } = await pageWith(file);
      const outcome = await page.evaluate(async () => {
        const { default: init, Upload } = await import("/pkg/index.js");
        await init();
        const stream = document.getElementById("file").files[0].stream();
        try {
          return { result: await new Upload(stream, { endpoint: "/uploads", chunkSize: 5 * 1024 * 1024 }).start() };
        } catch (error) {
          return { error: `${error.code}: ${error.message}` };
        }
      });
      assert.ok(outcome.result, outcome.error);
      assert.equal(outcome.result.size, size);
      assert.equal(outcome.result.verified, true);
      assert.deepEqual(await garage.object(outcome.result.id.split(".")[0]), { sha256: file.sha256, size });
      await page.close();
    }
  });

  test("hooks with a bucket: pre-create decides, post-finish names the object, an abort is post-terminate", async () => {
    const events = [];
    let refuse = false;
    const receiver = http.createServer((req, res) => {
      let body = "";
      req.on("data", (d) => { body += d; });
      req.on("end", () => {
        const event = JSON.parse(body);
        events.push(event);
        if (event.type !== "pre-create") return res.writeHead(204).end();
        if (refuse) {
          res.writeHead(403, { "content-type": "application/json" });
          return res.end(JSON.stringify({ error: { message: "this user's quota is used up" } }));
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ metadata: { ...event.upload.metadata, owner: "user-7" } }));
      });
    });
    await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
    const hooked = await startSigner(garage, garage.endpoint, ["--hook-url", `http://127.0.0.1:${receiver.address().port}/hook`]);
    const until = async (predicate) => {
      for (let i = 0; i < 200 && !events.some(predicate); i++) await new Promise((ok) => setTimeout(ok, 50));
      return events.find(predicate);
    };
    try {
      await garage.allowOrigin(`${server.url},${hooked.url}`);
      const file = randomFile(6 * MIB + 3, "hooked.bin");
      const { page } = await pageAt(browser, hooked.url, file);
      const outcome = await upload(page, { metadata: { name: "hooked.bin" } });
      assert.ok(outcome.result, JSON.stringify(outcome.error));
      const key = outcome.result.id.split(".")[0];
      assert.deepEqual(await garage.object(key), { sha256: file.sha256, size: 6 * MIB + 3 });
      const finished = await until((e) => e.type === "post-finish");
      assert.ok(finished, `post-finish arrived: ${JSON.stringify(events)}`);
      assert.equal(finished.upload.id, outcome.result.id);
      assert.equal(finished.upload.object, `s3://${garage.bucket}/${key}`);
      assert.equal(finished.upload.size, 6 * MIB + 3);
      assert.equal(finished.upload.sha256, null);
      assert.match(finished.upload.slicesSha256, /^[0-9a-f]{64}$/);
      assert.deepEqual(finished.upload.metadata, { name: "hooked.bin", owner: "user-7" }, "the hook's metadata, read back from the object");

      // An empty file keeps its metadata too (it is stored whole at create).
      const emptyFile = randomFile(0, "empty.bin");
      await page.setInputFiles("#file", emptyFile.path);
      const empty = await upload(page, { metadata: { name: "empty.bin" }, resume: false });
      assert.ok(empty.result, JSON.stringify(empty.error));
      assert.deepEqual(await garage.object(empty.result.id.split(".")[0]), { sha256: emptyFile.sha256, size: 0 });
      const emptyFinished = await until((e) => e.type === "post-finish" && e.upload.id === empty.result.id);
      assert.deepEqual(emptyFinished?.upload.metadata, { name: "empty.bin", owner: "user-7" });
      assert.equal(emptyFinished.upload.size, 0);
      await page.setInputFiles("#file", file.path);

      // DELETE removes a completed upload too: the object goes, and the event says so.
      const status = await page.evaluate((id) => fetch(`/uploads/${id}`, { method: "DELETE" }).then((r) => r.status), outcome.result.id);
      assert.equal(status, 204);
      assert.ok(!(await garage.keys()).includes(key), "the object is gone");
      const deleted = await until((e) => e.type === "post-terminate" && e.upload.id === outcome.result.id);
      assert.equal(deleted?.reason, "deleted");
      assert.deepEqual(deleted.upload.metadata, { name: "hooked.bin", owner: "user-7" });
      events.length = 0;

      refuse = true;
      const refused = await upload(page);
      assert.equal(refused.error?.code, "http_status");
      assert.equal(refused.error.status, 403);
      assert.match(refused.error.message, /quota is used up/);
      refuse = false;

      await page.setInputFiles("#file", randomFile(40 * MIB, "hooked-cancelled.bin").path);
      assert.equal(await cancelAfterFirstSlice(page, { resume: false }), "aborted");
      const terminated = await until((e) => e.type === "post-terminate");
      assert.ok(terminated, `post-terminate arrived: ${JSON.stringify(events.map((e) => e.type))}`);
      assert.equal(terminated.reason, "deleted");
      assert.match(terminated.upload.object, new RegExp(`^s3://${garage.bucket}/`));
      assert.equal(await garage.multipartUploads(), 0);
      await page.close();
    } finally {
      await garage.allowOrigin(server.url);
      await hooked.stop();
      receiver.close();
    }
  });

  test("a reload mid-upload resumes through ListParts and sends only the missing slices", async () => {
    const file = randomFile(48 * MIB, "reload.bin");
    const { page } = await pageWith(file);
    await page.evaluate(() => { window.__done = null; });
    const first = upload(page, { maxInFlight: 2 }).catch(() => null);
    await page.waitForFunction(() => window.__progress?.slicesDone >= 2, null, { timeout: 60_000 });
    await page.reload();
    await first;
    await page.waitForSelector("body[data-ready=true]");
    await page.setInputFiles("#file", file.path);
    const outcome = await upload(page, { maxInFlight: 2 });
    assert.ok(outcome.result, JSON.stringify(outcome.error));
    assert.ok(outcome.result.resumedSlices >= 2, `resumed ${outcome.result.resumedSlices} slices`);
    const sent = Object.keys(outcome.sends).map(Number);
    assert.equal(sent.length, 6 - outcome.result.resumedSlices, `sent again: ${sent}`);
    const key = outcome.result.id.split(".")[0];
    assert.deepEqual(await garage.object(key), { sha256: file.sha256, size: 48 * MIB });
    await page.close();
  });

  test("an abort leaves no multipart upload in the store", async () => {
    const file = randomFile(40 * MIB, "abort.bin");
    const { page } = await pageWith(file);
    assert.equal(await cancelAfterFirstSlice(page), "aborted");
    assert.equal(await garage.multipartUploads(), 0, "ListMultipartUploads is empty");
    await page.close();
  });

  test("bad input: a chunk size the store refuses, a bucket without the CORS rule, a missing bucket", async () => {
    const file = randomFile(6 * MIB, "bad.bin");
    const { page } = await pageWith(file);
    const small = await upload(page, { chunkSize: 1 * MIB });
    assert.equal(small.error?.code, "http_status");
    assert.equal(small.error.status, 400);
    assert.match(small.error.message, /chunkSize 1048576 is not one the object store accepts.*5 MiB/);
    await page.close();

    // The bucket's CORS rule allows another origin only.
    await garage.allowOrigin("http://example.invalid");
    try {
      const { page } = await pageWith(file);
      const started = Date.now();
      const refused = await upload(page);
      assert.equal(refused.error?.code, "network");
      assert.match(refused.error.message, /bucket needs a CORS rule allowing PUT from http:\/\/127\.0\.0\.1:\d+/);
      assert.ok(Date.now() - started < 30_000, "it fails fast, not after offlineTimeoutMs");
      await page.close();
    } finally {
      await garage.allowOrigin(server.url);
    }

    // A file too big for 10,000 slices of its chunkSize gets larger slices; one too big for
    // 10,000 of the client's largest (1 GiB) is refused.
    const big = await startSigner(garage, garage.endpoint, ["--max-upload-size", String(2 ** 44)]);
    try {
      const create = (size) => fetch(`${big.url}/uploads`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ chunkSize: 8 * MIB, size }),
      });
      const created = await create(10_000 * 8 * MIB + 1);
      assert.equal(created.status, 201);
      const body = await created.json();
      assert.equal(body.chunkSize, 9 * MIB);
      assert.equal(body.transfer, "direct");
      assert.equal((await fetch(`${big.url}/uploads/${body.id}`, { method: "DELETE" })).status, 204);
      assert.equal((await fetch(`${big.url}/uploads/${body.id}`)).status, 404, "aborted");
      const refused = await create(10_000 * 1024 * MIB + 1);
      assert.equal(refused.status, 413);
      assert.equal((await refused.json()).error.code, "upload_too_large");
    } finally {
      await big.stop();
    }

    // A server that cannot use its store does not start (it says why on stderr).
    const starts = (args, env) => startServer(args, { env }).then((s) => { s.stop(); return "started"; }, (error) => error.message);
    const creds = { AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey };
    assert.match(await starts(["--s3-endpoint", garage.endpoint, "--s3-bucket", "no-such-bucket", "--s3-region", "garage"], creds), /exited with 1/, "a missing bucket");
    assert.match(await starts(["--s3-endpoint", garage.endpoint, "--s3-bucket", garage.bucket, "--s3-region", "garage"],
      { ...creds, AWS_SECRET_ACCESS_KEY: "0".repeat(64) }), /exited with 1/, "wrong credentials");
    assert.match(await starts(["--s3-endpoint", "http://127.0.0.1:9", "--store", `s3://${garage.bucket}`, "--s3-region", "garage"], creds), /exited with 1/, "an unreachable store");
    assert.match(await starts(["--s3-endpoint", garage.endpoint, "--s3-bucket", garage.bucket, "--s3-region", "us-east-1"], creds), /exited with 1/, "the wrong region");
  });
});

/** For the tests of one describe block: a fresh Garage, two instances made by
 * `start(garage)` behind a round-robin proxy that the bucket's CORS rule allows, and a
 * browser. `replaceFirst()` starts a new first instance (after a test killed it) and a new
 * proxy in front of both. */
function onTwoInstances(start) {
  const ctx = {};
  const balance = async () => {
    ctx.balancer = await startRoundRobin(ctx.servers.map((s) => s.port));
    await ctx.garage.allowOrigin(ctx.balancer.url);
  };
  ctx.replaceFirst = async () => {
    ctx.servers[0] = await start(ctx.garage);
    ctx.balancer.close();
    await balance();
  };
  before(async () => {
    ctx.garage = await startGarage();
    ctx.servers = [await start(ctx.garage), await start(ctx.garage)];
    await balance();
    ctx.browser = await launchChromium();
  });
  after(async () => {
    await ctx.browser?.close();
    ctx.balancer?.close();
    for (const server of ctx.servers ?? []) await server.stop();
    await ctx.garage?.stop();
  });
  return ctx;
}

describe("direct mode scales out: stateless signers on one bucket", () => {
  const ctx = onTwoInstances((garage) => startSigner(garage));
  const keyOf = (id) => id.split(".")[0];

  test("one of two instances is killed with kill -9 mid-upload; the other finishes it, bytes intact", async () => {
    await killOneMidUpload(ctx.browser, ctx.balancer, ctx.servers[0], ctx.garage, keyOf);
  });

  test("32 uploads at once through the surviving instance and a fresh one, all intact", async () => {
    await ctx.replaceFirst();
    await thirtyTwoAtOnce(ctx.browser, ctx.balancer, ctx.garage, keyOf, "load");
  });
});

describe("scale-out mode: slices through stateless servers into one bucket", () => {
  const ctx = onTwoInstances((garage) => startS3Server(garage, ["--store", `s3://${garage.bucket}/through/`]));
  const keyOf = (id) => `through/${id.split(".")[0]}`;

  test("one of two instances is killed with kill -9 mid-upload; the other finishes it, bytes intact in the bucket", async () => {
    await killOneMidUpload(ctx.browser, ctx.balancer, ctx.servers[0], ctx.garage, keyOf, 1);
  });

  test("a slice corrupted on the way to the server is refused by the store and sent again", async () => {
    const proxy = await startProxy(ctx.servers[1].port);
    try {
      const file = randomFile(20 * MIB, "through-flip.bin");
      const { page } = await pageAt(ctx.browser, proxy.url, file);
      proxy.state.flipAfterBytes = 3 * MIB;
      const outcome = await upload(page, { maxInFlight: 1 });
      assert.ok(outcome.result, JSON.stringify(outcome.error));
      assert.equal(proxy.state.flips, 1);
      assert.deepEqual(outcome.sends, { 0: 2, 1: 1, 2: 1 }, "slice 0 was sent twice, the rest once");
      assert.deepEqual(await ctx.garage.object(keyOf(outcome.result.id)), { sha256: file.sha256, size: 20 * MIB });
      await page.close();
    } finally {
      proxy.close();
    }
  });

  test("the server's limits hold in the bucket modes, and a repeated complete never echoes a forged digest", async () => {
    const limited = await startS3Server(ctx.garage, ["--store", `s3://${ctx.garage.bucket}/limited/`,
      "--max-upload-size", String(10 * MIB), "--max-chunk-size", String(8 * MIB)]);
    try {
      const api = (path, init = {}) => fetch(`${limited.url}${path}`, init);
      const create = (body) => api("/uploads", { method: "POST", body: JSON.stringify(body) });
      const sha256 = async (bytes) => Buffer.from(await crypto.subtle.digest("SHA-256", bytes));
      const put = async (location, index, bytes) => api(`/${location}`, {
        method: "PUT", body: bytes,
        headers: { "chunkwise-slice": String(index), "content-digest": `sha-256=:${(await sha256(bytes)).toString("base64")}:` },
      });
      const complete = (location, body) => api(`/${location}`, { method: "POST", body: JSON.stringify(body) });
      const code = async (response) => (await response.json()).error?.code;

      const tooLarge = await create({ chunkSize: 64 * MIB });
      assert.equal(tooLarge.status, 413);
      assert.equal(await code(tooLarge), "chunk_size_too_large");

      // A stream of unknown length may not grow past --max-upload-size.
      const slice = Buffer.alloc(5 * MIB, 7);
      const deferred = (await create({ chunkSize: 5 * MIB })).headers.get("location");
      assert.equal((await put(deferred, 0, slice)).status, 204);
      assert.equal((await put(deferred, 1, slice)).status, 204);
      // One byte is enough to reach past it (and is all sent before the early answer).
      const past = await put(deferred, 2, Buffer.alloc(1, 7));
      assert.equal(past.status, 413);
      assert.equal(await code(past), "upload_too_large");
      const big = await complete(deferred, { size: 20 * MIB });
      assert.equal(big.status, 413);

      // Completed once, truly; then again with a forged digest.
      const bytes = Buffer.concat([slice, Buffer.alloc(MIB, 9)]);
      const location = (await create({ chunkSize: 5 * MIB, size: bytes.length })).headers.get("location");
      assert.equal((await put(location, 0, bytes.subarray(0, 5 * MIB))).status, 204);
      assert.equal((await put(location, 1, bytes.subarray(5 * MIB))).status, 204);
      const digests = Buffer.concat([await sha256(bytes.subarray(0, 5 * MIB)), await sha256(bytes.subarray(5 * MIB))]);
      const truth = (await sha256(digests)).toString("hex");
      const first = await complete(location, { slicesSha256: truth });
      assert.equal(first.status, 200);
      assert.equal((await first.json()).slicesSha256, truth);
      const forged = await complete(location, { slicesSha256: "ab".repeat(32) });
      assert.ok([400, 409].includes(forged.status), `a forged digest was answered ${forged.status}`);
      const again = await complete(location, { slicesSha256: truth });
      assert.equal(again.status, 200);
      assert.equal((await again.json()).slicesSha256, truth);
      const bare = await complete(location, {});
      assert.equal(bare.status, 200);
      // The store's own composite SHA-256 of the parts (HeadObject with checksum mode on),
      // never the request's: this one sent none.
      const stored = (await bare.json()).slicesSha256;
      assert.equal(stored, truth, "a bare repeated complete answers the store's composite SHA-256");
      console.log(`# repeated complete: a forged slicesSha256 is answered ${forged.status} (${await code(forged)}); without one, the store's is ${stored}`);
    } finally {
      await limited.stop();
    }
  });

  test("32 uploads at once through two instances, all intact", async () => {
    await ctx.replaceFirst();
    await thirtyTwoAtOnce(ctx.browser, ctx.balancer, ctx.garage, keyOf, "through-load");
  });
});
