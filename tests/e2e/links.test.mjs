// Uploads over emulated links, with the page and the endpoint on two origins: a slow
// uplink, a very slow one, a connection cut mid-slice, a server that takes every byte but
// never answers, and an endpoint whose CORS rules refuse the page. Every upload that must
// succeed ends byte-identical, compared by SHA-256.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launchChromium, randomFile, setFaults, sha256File, startServer, watchErrors } from "./support.mjs";
import { emulateLink, LINKS, progressProbe, summarizeProgress } from "./link.mjs";
import { startProxy } from "./proxy.mjs";

const MIB = 1024 * 1024;
let browser;
let site;
let api;
before(async () => {
  browser = await launchChromium();
  // The page's origin serves only the page; the API is another origin that allows it.
  site = await startServer();
  api = await startServer(["--allowed-origin", site.url, "--enable-fault-injection"]);
});
after(async () => {
  await browser?.close();
  await site?.stop();
  await api?.stop();
});

/** A fresh page of the site with `file` chosen and `link` emulated. */
async function openPage(file, link) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.goto(site.url + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  await page.setInputFiles("#file", file.path);
  if (link) await emulateLink(await page.context().newCDPSession(page), link);
  return { page, errors };
}

/** Uploads the chosen file to `endpoint` with the library; resolves with what happened. */
function upload(page, endpoint, options = {}) {
  return page.evaluate(async ({ endpoint, options, probe }) => {
    const { default: init, Upload } = await import("/pkg/chunkwise.js");
    await init();
    const { onProgress, onSlice } = new Function(`return (${probe})()`)();
    const file = document.getElementById("file").files[0];
    const started = performance.now();
    try {
      const result = await new Upload(file, { endpoint, resume: false, ...options, onProgress, onSlice }).start();
      return { result, log: window.__log, sends: window.__sends, ms: performance.now() - started };
    } catch (e) {
      return { error: { name: e.name, code: e.code, message: e.message }, sends: window.__sends, ms: performance.now() - started };
    }
  }, { endpoint, options, probe: progressProbe.toString() });
}

async function requestCounts(base) {
  return (await fetch(`${base}/_test/requests`)).json();
}

async function resetRequestCounts(base) {
  await fetch(`${base}/_test/requests`, { method: "DELETE" });
}

async function assertStored(outcome, file) {
  assert.ok(outcome.result, `upload failed: ${JSON.stringify(outcome.error)}`);
  assert.equal(outcome.result.sha256, file.sha256);
  assert.equal(outcome.result.verified, true);
  assert.equal(await sha256File(join(api.dataDir, "files", outcome.result.id)), file.sha256);
}

function sendsPerSlice(outcome, slices) {
  return Array.from({ length: slices }, (_, i) => outcome.sends[i] ?? 0);
}

describe("over emulated links, page and endpoint on two origins", () => {
  test("8 Mbit/s, 60 ms: 40 MiB at defaults, no slice sent twice, bytes shown as they leave", async () => {
    const file = randomFile(40 * MIB, "slow-link.bin");
    const { page, errors } = await openPage(file, LINKS.slow);
    await resetRequestCounts(api.url);
    const outcome = await upload(page, `${api.url}/uploads`);
    await assertStored(outcome, file);
    assert.deepEqual(sendsPerSlice(outcome, 5), [1, 1, 1, 1, 1]);
    const counts = await requestCounts(api.url);
    assert.equal(counts.PUT, 5, JSON.stringify(counts));
    assert.ok(counts.OPTIONS <= 3, `${counts.OPTIONS} preflights for one upload`);
    const p = summarizeProgress(outcome.log, file.size ?? 40 * MIB);
    assert.ok(p.firstMoveMs !== null && p.firstMoveMs < p.firstAckMs, JSON.stringify(p));
    assert.equal(p.backwards, false);
    // The bar follows the bytes (a report at least every 0.2 s here), not the 33 s slices.
    assert.ok(p.longestStillMs < 2_000, `the bar stood still for ${p.longestStillMs} ms`);
    const goodput = (40 * MIB * 8) / (outcome.ms / 1000) / LINKS.slow.upBitsPerSecond;
    console.log(`# slow link, 40 MiB: ${(outcome.ms / 1000).toFixed(1)} s, ${goodput.toFixed(2)} of the link; ` +
      `first bytes shown after ${p.firstMoveMs.toFixed(0)} ms, first acknowledgement after ${p.firstAckMs.toFixed(0)} ms; ` +
      `bar still for at most ${p.longestStillMs.toFixed(0)} ms; ${p.reports} reports; ${counts.OPTIONS} preflights`);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("the demo's bar moves as bytes leave on an 8 Mbit/s link, long before a slice is stored", async () => {
    const file = randomFile(6 * MIB, "demo-slow.bin");
    const page = await browser.newPage();
    await page.goto(api.url + "/");
    await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
    await page.setInputFiles("#file", file.path);
    await emulateLink(await page.context().newCDPSession(page), LINKS.slow);
    // Samples the bar and the slice map every 100 ms from the click on.
    await page.evaluate(() => {
      window.__bar = [];
      const look = () => {
        window.__bar.push([document.getElementById("progress").value, document.querySelectorAll("#slice-map i.done").length]);
        if (document.body.dataset.state !== "done") setTimeout(look, 100);
      };
      setTimeout(look, 0);
    });
    await page.click("#start");
    await page.waitForSelector("body[data-state=done]", { timeout: 60_000 });
    assert.equal(await page.locator("#server-sha").textContent(), file.sha256);
    const samples = await page.evaluate(() => window.__bar);
    const beforeStored = samples.filter(([, done]) => done === 0).map(([value]) => value);
    const distinct = new Set(beforeStored.filter((v) => v > 0)).size;
    // One 4 MiB-ish slice takes seconds here: the bar must have moved many times before it.
    assert.ok(distinct >= 10, `the bar showed ${distinct} values before the first slice was stored`);
    assert.ok(beforeStored.every((v, i) => i === 0 || v >= beforeStored[i - 1]), "the bar went backwards");
    await page.close();
  });

  test("1 Mbit/s, 150 ms: 8 MiB at defaults finishes though its one slice takes over a minute", async () => {
    const file = randomFile(8 * MIB, "mobile-link.bin");
    const { page } = await openPage(file, LINKS.mobile);
    const outcome = await upload(page, `${api.url}/uploads`);
    await assertStored(outcome, file);
    assert.deepEqual(sendsPerSlice(outcome, 1), [1]);
    console.log(`# 1 Mbit/s, 8 MiB: ${(outcome.ms / 1000).toFixed(1)} s, one slice, sent once`);
    await page.close();
  });

  test("two uploads at once: requests waiting for one of six connections are not stalls", async () => {
    // 2 x 4 requests in flight to one host, which gets six connections: two requests wait
    // for one as long as a slice takes (about 12 s here), longer than a request may wait
    // for its first byte on its own (4 x stallTimeoutMs = 8 s).
    const files = [randomFile(8 * MIB, "both-a.bin"), randomFile(8 * MIB, "both-b.bin")];
    const page = await browser.newPage();
    await page.goto(site.url + "/");
    await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
    await page.evaluate(() => {
      const input = document.getElementById("file");
      input.multiple = true;
    });
    await page.setInputFiles("#file", files.map((f) => f.path));
    await emulateLink(await page.context().newCDPSession(page), LINKS.slow);
    const outcomes = await page.evaluate(async (endpoint) => {
      const { default: init, Upload } = await import("/pkg/chunkwise.js");
      await init();
      return Promise.all([...document.getElementById("file").files].map(async (file) => {
        const sends = {};
        const onSlice = (e) => { if (e.state === "sending") sends[e.index] = (sends[e.index] ?? 0) + 1; };
        try {
          const result = await new Upload(file, { endpoint, resume: false, chunkSize: 2 * 1024 * 1024, stallTimeoutMs: 2_000, onSlice }).start();
          return { result, sends };
        } catch (e) {
          return { error: { code: e.code, message: e.message }, sends };
        }
      }));
    }, `${api.url}/uploads`);
    for (const [i, outcome] of outcomes.entries()) {
      await assertStored(outcome, files[i]);
      assert.deepEqual(sendsPerSlice(outcome, 4), [1, 1, 1, 1], `file ${i}`);
    }
    await page.close();
  });

  test("a connection cut mid-slice: only that slice is sent again", async () => {
    const proxy = await startProxy(api.port);
    try {
      const file = randomFile(24 * MIB + 1, "cut.bin");
      const { page } = await openPage(file, { upBitsPerSecond: 200e6, rttMs: 40 });
      proxy.state.cutAfterBytes = 10 * MIB;
      const outcome = await upload(page, `${proxy.url}/uploads`, { chunkSize: 4 * MIB });
      await assertStored(outcome, file);
      assert.equal(proxy.state.cuts, 1);
      // Counted on the wire, at the proxy: what the page reports could miss a send.
      const sends = Array.from({ length: 7 }, (_, i) => proxy.sends(i));
      assert.equal(sends.filter((n) => n === 2).length, 1, `sends per slice: ${sends}`);
      assert.equal(sends.filter((n) => n === 1).length, 6, `sends per slice: ${sends}`);
      await page.close();
    } finally {
      proxy.close();
    }
  });

  for (const [name, link] of [["loopback", null], ["1 Mbit/s, 150 ms", LINKS.mobile]]) {
    test(`a slice whose connection goes silent mid-body (${name}): its retry takes over, the upload finishes intact`, async () => {
      const proxy = await startProxy(api.port);
      try {
        const size = link ? 2 * MIB + 1 : 16 * MIB;
        const chunkSize = link ? 512 * 1024 : 4 * MIB;
        const file = randomFile(size, "silent.bin");
        const { page } = await openPage(file, link);
        // Into the second slice's body (or wherever that byte goes): from there, nothing more
        // reaches the server on that connection, and the server is never told.
        proxy.state.silenceAfterBytes = Math.floor(chunkSize * 1.25);
        const outcome = await upload(page, `${proxy.url}/uploads`, { chunkSize, stallTimeoutMs: 5_000 });
        await assertStored(outcome, file);
        assert.equal(proxy.state.silenced, 1);
        const slices = Math.ceil(size / chunkSize);
        const sends = Array.from({ length: slices }, (_, i) => proxy.sends(i));
        console.log(`# silent connection (${name}): finished in ${(outcome.ms / 1000).toFixed(1)} s; sends per slice ${sends}`);
        assert.ok(sends.every((n) => n >= 1 && n <= 3), `sends per slice: ${sends}`);
        // Before, every retry waited behind the dead request and the upload failed after 128 s.
        assert.ok(outcome.ms < 60_000 + (link ? 60_000 : 0), `took ${outcome.ms} ms`);
        await page.close();
      } finally {
        proxy.close();
      }
    });
  }

  test("a server that took every byte but never answers is a stall; the slice is sent again", async () => {
    const file = randomFile(3 * MIB, "no-answer.bin");
    const { page } = await openPage(file);
    const key = `no-answer-${Date.now()}`;
    await setFaults(api.url, key, [{ slice: 1, answerDelayMs: 60_000, times: 1 }]);
    const outcome = await upload(page, `${api.url}/uploads`, {
      chunkSize: MIB, stallTimeoutMs: 2_000, headers: { "x-chunkwise-fault-key": key },
    });
    await assertStored(outcome, file);
    assert.deepEqual(sendsPerSlice(outcome, 3), [1, 2, 1]);
    await page.close();
  });

  test("an endpoint whose CORS refuses the page fails at once and names CORS", async () => {
    const strict = await startServer(["--allowed-origin", "http://elsewhere.test"]);
    try {
      const file = randomFile(MIB, "refused.bin");
      const { page } = await openPage(file);
      const outcome = await upload(page, `${strict.url}/uploads`, { offlineTimeoutMs: 600_000 });
      assert.equal(outcome.error?.code, "network", JSON.stringify(outcome));
      assert.match(outcome.error.message, /CORS/);
      assert.match(outcome.error.message, new RegExp(site.url.replace(/[.:/]/g, "\\$&")));
      // Seconds, not the ten minutes network errors are otherwise waited out.
      assert.ok(outcome.ms < 30_000, `failed after ${outcome.ms} ms`);
      console.log(`# CORS refusal reported after ${outcome.ms.toFixed(0)} ms: ${outcome.error.message}`);
      await page.close();
    } finally {
      await strict.stop();
    }
  });
});
