// Uploads that survive faults: injected errors, stalls, connection resets, a server that
// goes away, one killed with SIGKILL, and a page reloaded mid-upload. Every one must end
// byte-identical, re-sending little.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  faultStats, launchChromium, libraryOutcome, randomFile, setFaults, sha256File, startLibraryUpload, startServer,
  waitForProgress, watchErrors,
} from "./support.mjs";
import { startProxy } from "./proxy.mjs";

const MIB = 1024 * 1024;
// The fault runs use 64 MiB in the test command; CHUNKWISE_E2E_FAULT_MIB=1024 is the
// nightly-style opt-in for 1 GiB.
const FAULT_MIB = Number(process.env.CHUNKWISE_E2E_FAULT_MIB ?? 64);
let browser;
let source;
before(async () => {
  browser = await launchChromium();
  source = randomFile(64 * MIB, "resilient.bin");
});
after(async () => { await browser?.close(); });

async function openPage(url, file = source) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.goto(url + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  await page.setInputFiles("#file", file.path);
  return { page, errors };
}

async function assertStored(server, outcome, file = source) {
  assert.ok(outcome.result, `upload failed: ${JSON.stringify(outcome.error)}`);
  assert.equal(outcome.result.sha256, file.sha256);
  assert.equal(outcome.result.verified, true);
  assert.equal(await sha256File(join(server.dataDir, "files", outcome.result.id)), file.sha256);
}

describe("under injected faults", () => {
  let server;
  let proxy;
  before(async () => {
    server = await startServer(["--enable-fault-injection"]);
    proxy = await startProxy(server.port);
  });
  after(async () => { proxy?.close(); await server?.stop(); });

  let faultSource;
  before(() => { faultSource = FAULT_MIB === 64 ? source : randomFile(FAULT_MIB * MIB, "resilient-big.bin"); });

  for (const run of [1, 2]) {
    test(`10% errors, stalls and resets, and 3 s of server down: ${FAULT_MIB} MiB byte-identical (run ${run})`, async () => {
      const key = `faults-${run}-${Date.now()}`;
      const slices = FAULT_MIB / 4;
      const { page } = await openPage(proxy.url, faultSource);
      await setFaults(server.url, key, [
        { status: 500, probability: 0.1, times: 1e6 },
        { status: 503, probability: 0.1, times: 1e6 },
        { delayMs: 4000, probability: 0.1, times: 1e6 },
      ]);
      proxy.state.resetPerMiB = 0.1 / 4;
      const resetsBefore = proxy.state.resets;
      await startLibraryUpload(page, {
        chunkSize: 4 * MIB, maxInFlight: 4, stallTimeoutMs: 1000, resume: false,
        headers: { "x-chunkwise-fault-key": key },
      });
      await waitForProgress(page, 0.3, FAULT_MIB * 1000);
      await proxy.down(3000);
      const outcome = await libraryOutcome(page);
      proxy.state.resetPerMiB = 0;
      await assertStored(server, outcome, faultSource);
      const stats = await faultStats(server.url, key);
      const resent = stats.puts - slices;
      console.log(`# faults run ${run}, ${FAULT_MIB} MiB: ${stats.puts} slice requests for ${slices} slices, ${stats.injected} errors or stalls injected, ` +
        `${proxy.state.resets - resetsBefore} connections reset, ${proxy.state.refused} refused while down; ` +
        `at most ${resent * 4} MiB re-sent`);
      assert.ok(stats.injected + proxy.state.resets - resetsBefore > 0, "faults were injected");
      await page.close();
    });
  }
});

describe("server killed with SIGKILL mid-upload", () => {
  test("the same Upload finishes after the server returns, re-sending at most maxInFlight slices", async () => {
    let server = await startServer(["--enable-fault-injection"]);
    const { port, dataDir } = server;
    const key = `kill-${Date.now()}`;
    await setFaults(server.url, key, [{ delayMs: 30, times: 1e6 }]);
    const { page } = await openPage(server.url);
    await startLibraryUpload(page, { chunkSize: MIB, maxInFlight: 4, resume: false, headers: { "x-chunkwise-fault-key": key } });
    await waitForProgress(page, 0.3);
    const before = await faultStats(server.url, key);
    await server.kill9();
    await new Promise((r) => setTimeout(r, 2000));
    server = await startServer(["--enable-fault-injection"], { listen: `127.0.0.1:${port}`, dataDir });
    try {
      const outcome = await libraryOutcome(page);
      await assertStored(server, outcome);
      const afterRestart = await faultStats(server.url, key);
      const resent = before.puts + afterRestart.puts - 64;
      console.log(`# kill -9: ${before.puts} requests before, ${afterRestart.puts} after, ${resent} slices re-sent`);
      assert.ok(resent <= 4, `${resent} slices re-sent`);
    } finally {
      await page.close();
      await server.stop();
    }
  });
});

describe("page reloaded mid-upload", () => {
  test("choosing the same file again resumes; each slice is received at most maxInFlight extra times", async () => {
    const server = await startServer(["--enable-fault-injection"]);
    const key = `reload-${Date.now()}`;
    await setFaults(server.url, key, [{ delayMs: 20, times: 1e6 }]);
    const options = { chunkSize: MIB, maxInFlight: 3, headers: { "x-chunkwise-fault-key": key } };
    try {
      const { page, errors } = await openPage(server.url);
      await startLibraryUpload(page, options);
      await waitForProgress(page, 0.4);
      await page.reload();
      await page.waitForSelector("body[data-ready=true]");
      await page.setInputFiles("#file", source.path);
      await page.waitForSelector("#previous:not([hidden])", { timeout: 10_000 });
      assert.match(await page.locator("#previous").textContent(), /partly uploaded before/);
      await startLibraryUpload(page, options);
      const outcome = await libraryOutcome(page);
      await assertStored(server, outcome);
      assert.ok(outcome.result.resumedSlices >= 25, `${outcome.result.resumedSlices} slices resumed`);
      const stats = await faultStats(server.url, key);
      console.log(`# reload: resumed ${outcome.result.resumedSlices} of 64 slices; ${stats.puts} slice requests in all`);
      assert.ok(stats.puts - 64 <= 3, `${stats.puts - 64} extra slice requests`);
      assert.deepEqual(errors.filter((e) => !/ERR_ABORTED|Failed to fetch|aborted/i.test(e)), []);
      await page.close();
    } finally {
      await server.stop();
    }
  });
});
