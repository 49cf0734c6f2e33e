// Shared by the end-to-end tests: the real server binary, real Chromium, real files.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdtempSync, openSync, readFileSync, writeSync, closeSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { createServer } from "node:http";
import net from "node:net";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const ROOT = resolve(import.meta.dirname, "../..");
export const ARTIFACTS = join(ROOT, "target/e2e");
mkdirSync(ARTIFACTS, { recursive: true });

/** Whether `command` runs here (`command args` exits 0; with `args` null, it is on PATH);
 * when it does not, `t` is skipped, counted as skipped by
 * scripts/test. scripts/setup installs every such command, so under `CI=true` (a fresh
 * machine after setup) a missing one fails the test instead of skipping it unseen. */
export function installed(t, command, args = ["--version"]) {
  const found = args === null
    ? spawnSync("sh", ["-c", 'command -v "$0"', command], { stdio: "ignore" }).status === 0
    : spawnSync(command, args, { stdio: "ignore" }).status === 0;
  if (found) return true;
  const why = `${command} is not installed here (scripts/setup installs it)`;
  if (process.env.CI === "true") assert.fail(`${why}; under CI=true a missing tool fails`);
  // In a suite's hook there is nothing to skip: its tests skip themselves.
  t?.skip?.(why);
  return false;
}

/** Starts target/release/chunkwise-server on a free loopback port (or `listen`) with a
 * fresh data dir (or `dataDir`), serving the demo (or the pages in `www`) and the package
 * at /pkg/ (pkg/, or `pkg`). */
export async function startServer(extraArgs = [], { listen = "127.0.0.1:0", dataDir = mkdtempSync(join(tmpdir(), "chunkwise-e2e-")), env = {}, logs = null, www = join(ROOT, "www"), pkg = join(ROOT, "pkg") } = {}) {
  const proc = spawn(join(ROOT, "target/release/chunkwise-server"), [
    "--listen", listen, "--data-dir", dataDir,
    "--www", www, "--pkg", pkg, ...extraArgs,
  ], { stdio: ["ignore", "pipe", logs ? "pipe" : "inherit"], env: { ...process.env, RUST_LOG: "warn", ...env } });
  // `logs`: an array that collects the server's log lines (stderr).
  if (logs) createInterface({ input: proc.stderr }).on("line", (line) => logs.push(line));
  const lines = createInterface({ input: proc.stdout });
  let metricsUrl = null;
  const url = await new Promise((ok, fail) => {
    proc.once("exit", (code) => fail(new Error(`chunkwise-server exited with ${code}`)));
    lines.on("line", (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) ok(match[1]);
      // With --metrics-listen, printed before the line above.
      metricsUrl = line.match(/^metrics: (http:\/\/\S+)/)?.[1] ?? metricsUrl;
    });
  });
  return {
    url,
    metricsUrl,
    dataDir,
    process: proc,
    port: Number(new URL(url).port),
    /** SIGKILL: no chance to flush or clean up. */
    async kill9() {
      proc.kill("SIGKILL");
      if (proc.exitCode === null && proc.signalCode === null) await new Promise((ok) => proc.once("exit", ok));
    },
    async stop() {
      // A process killed by a signal has exitCode null and signalCode set.
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      await new Promise((ok) => proc.once("exit", ok));
    },
  };
}

/** A loopback TCP port free a moment ago. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };

/** Serves `dir` statically on a free loopback port: the app's own origin. */
export async function serveStatic(dir) {
  const server = createServer((req, res) => {
    const path = join(dir, new URL(req.url, "http://x").pathname.replace(/\/$/, "/index.html"));
    if (!path.startsWith(dir)) return res.writeHead(403).end();
    try {
      const body = readFileSync(path);
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** Debian's Chromium, headless, with the flags this closed network needs. */
export function launchChromium(extraArgs = []) {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", ...extraArgs],
  });
}

/** Writes `size` random bytes to a new file and returns its path and SHA-256. */
export function randomFile(size, name = "random.bin") {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-src-"));
  const path = join(dir, name);
  const hash = createHash("sha256");
  const fd = openSync(path, "w");
  for (let left = size; left > 0;) {
    const part = randomBytes(Math.min(left, 4 << 20));
    hash.update(part);
    writeSync(fd, part);
    left -= part.length;
  }
  closeSync(fd);
  return { path, size, sha256: hash.digest("hex") };
}

/** SHA-256 of a file on disk, streamed. */
export function sha256File(path) {
  return new Promise((ok, fail) => {
    const hash = createHash("sha256");
    createReadStream(path).on("data", (d) => hash.update(d)).on("error", fail).on("end", () => ok(hash.digest("hex")));
  });
}

/** Records console errors and uncaught exceptions of a page. */
export function watchErrors(page) {
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  return errors;
}

/** The fault-injection rules and statistics of a test server (`--enable-fault-injection`). */
export async function setFaults(base, key, rules) {
  const r = await fetch(`${base}/_test/faults/${key}`, { method: "POST", body: JSON.stringify(rules) });
  if (r.status !== 204) throw new Error(`setting faults: ${r.status}`);
}
export async function faultStats(base, key) {
  return (await fetch(`${base}/_test/faults/${key}`)).json();
}

/** Starts an upload of the page's chosen file with the library itself; returns at once. */
export async function startLibraryUpload(page, options) {
  await page.evaluate(async (options) => {
    const { default: init, Upload } = await import("/pkg/chunkwise.js");
    await init();
    const file = document.getElementById("file").files[0];
    window.__sends = {};
    window.__upload = new Upload(file, {
      endpoint: "/uploads",
      ...options,
      onProgress: (p) => { window.__progress = p; },
      onSlice: (e) => { if (e.state === "sending") window.__sends[e.index] = (window.__sends[e.index] ?? 0) + 1; },
    });
    window.__outcome = window.__upload.start().then(
      (result) => ({ result }),
      (error) => ({ error: { name: error.name, code: error.code, status: error.status, message: error.message } }),
    );
  }, options);
}

export async function waitForProgress(page, fraction, timeout = 60_000) {
  await page.waitForFunction((f) => window.__progress && window.__progress.bytesSent >= f * window.__progress.bytesTotal, fraction, { timeout });
}

export function libraryOutcome(page) {
  return page.evaluate(() => window.__outcome);
}
