// Hooks with a real receiver that verifies signatures with docs/hooks.md's own snippet: a
// refused pre-create reaches the page as an UploadError with the hook's status and words;
// an allowed upload's post-finish arrives, signed, and a tampered event fails the check.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT, launchChromium, randomFile, sha256File, startServer } from "./support.mjs";

const SECRET = "whsec_e2e";
const MIB = 1024 * 1024;

/** docs/hooks.md's verification snippet, as a module. */
async function readmeVerifier() {
  const readme = readFileSync(join(ROOT, "docs/hooks.md"), "utf8");
  const code = readme.match(/```js\n(import \{ createHmac[\s\S]*?)```/)?.[1];
  assert.ok(code, "docs/hooks.md has the verification snippet");
  const path = join(mkdtempSync(join(tmpdir(), "chunkwise-snippet-")), "verify.mjs");
  writeFileSync(path, code);
  return (await import(pathToFileURL(path).href)).verifyChunkwiseSignature;
}

let verify;
let browser;
let receiver;
let hookUrl;
let server;
const state = { refuse: null, events: [], unverified: 0, raw: [] };

before(async () => {
  verify = await readmeVerifier();
  browser = await launchChromium();
  receiver = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      if (!verify(SECRET, req.headers["chunkwise-signature"], body)) {
        state.unverified++;
        res.writeHead(401).end();
        return;
      }
      const event = JSON.parse(body);
      state.events.push(event);
      state.raw.push({ header: req.headers["chunkwise-signature"], body });
      if (event.type === "pre-create" && state.refuse) {
        res.writeHead(state.refuse.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: state.refuse.message } }));
        return;
      }
      res.writeHead(204).end();
    });
  });
  await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
  hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
  server = await startServer(["--hook-url", hookUrl, "--hook-secret", SECRET]);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  receiver?.close();
});

async function uploadInPage(file) {
  const page = await browser.newPage();
  await page.goto(server.url + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  await page.setInputFiles("#file", file.path);
  const outcome = await page.evaluate(async () => {
    const { default: init, Upload } = await import("/pkg/chunkwise.js");
    await init();
    const file = document.getElementById("file").files[0];
    try {
      return { result: await new Upload(file, { endpoint: "/uploads", resume: false, metadata: { name: file.name } }).start() };
    } catch (e) {
      return { error: { name: e.name, code: e.code, status: e.status, message: e.message } };
    }
  });
  await page.close();
  return outcome;
}

describe("hooks", () => {
  test("a refused pre-create reaches the page as an UploadError with the hook's status and message", async () => {
    state.refuse = { status: 403, message: "uploads are closed for this account" };
    try {
      const outcome = await uploadInPage(randomFile(MIB, "refused.bin"));
      assert.equal(outcome.error?.name, "UploadError", JSON.stringify(outcome));
      assert.equal(outcome.error.code, "http_status");
      assert.equal(outcome.error.status, 403);
      assert.match(outcome.error.message, /uploads are closed for this account/);
    } finally {
      state.refuse = null;
    }
  });

  test("post-finish arrives signed for an allowed upload; a tampered event fails the docs' check", async () => {
    const file = randomFile(3 * MIB + 1, "finished.bin");
    const outcome = await uploadInPage(file);
    assert.ok(outcome.result, JSON.stringify(outcome));
    assert.equal(await sha256File(join(server.dataDir, "files", outcome.result.id)), file.sha256);
    let finished;
    for (let i = 0; i < 100 && !finished; i++) {
      finished = state.events.find((e) => e.type === "post-finish" && e.upload.id === outcome.result.id);
      if (!finished) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(finished, "post-finish arrived");
    assert.equal(finished.upload.sha256, file.sha256);
    assert.equal(finished.upload.metadata.name, "finished.bin");
    assert.equal(state.unverified, 0);

    const { header, body } = state.raw.find((r) => JSON.parse(r.body).eventId === finished.eventId);
    assert.equal(verify(SECRET, header, body), true);
    assert.equal(verify(SECRET, header, body.replace(file.sha256, "0".repeat(64))), false, "tampered body");
    assert.equal(verify("another secret", header, body), false, "wrong secret");
    const t = Number(header.match(/t=(\d+)/)[1]);
    assert.equal(verify(SECRET, header, body, t + 3600), false, "a replay an hour later");
    const flipped = header.replace(/v1=(.)/, (_, c) => `v1=${c === "0" ? "1" : "0"}`);
    assert.equal(verify(SECRET, flipped, body), false, "tampered signature");
  });
});
