// Deployments as teams run them: chunkwise-server behind Debian's nginx and Caddy with TLS
// and HTTP/2, the API mounted under /api/ (the prefix stripped), the page on the same
// origin, and deploy/'s files used as they are (only ports, certificate paths and the
// upstream's port changed). Also: metrics and JSON logs after an upload through a proxy,
// nginx's default body limit explained, SIGTERM mid-upload, and the systemd unit.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  ROOT, freePort, installed, launchChromium, libraryOutcome, randomFile, sha256File, startLibraryUpload, startServer,
  waitForProgress, watchErrors,
} from "./support.mjs";
import { emulateLink } from "./link.mjs";

const run = promisify(execFile);
const MIB = 1024 * 1024;
const TOKEN = "deploy-test-token-4f1c9a";

/** A self-signed certificate for localhost, made for this run. */
async function certificate() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-tls-"));
  const [cert, key] = [join(dir, "cert.pem"), join(dir, "key.pem")];
  await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]);
  return { cert, key };
}

/** `text` with `from` replaced by `to`, which must be there: a deploy file that changed
 * shape fails the test instead of being tested half-applied. */
function change(text, from, to) {
  assert.ok(text.includes(from), `the deploy file no longer has ${JSON.stringify(from)}`);
  return text.replaceAll(from, to);
}

async function waitForPort(port, proc, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${proc.spawnfile} exited with ${proc.exitCode}`);
    const open = await new Promise((ok) => {
      const socket = net.connect(port, "127.0.0.1", () => { socket.destroy(); ok(true); });
      socket.on("error", () => ok(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port} after ${timeoutMs} ms`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

function stopper(proc) {
  return async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    await new Promise((ok) => proc.once("exit", ok));
  };
}

/** Debian's nginx with deploy/nginx.conf in its http block; `bodyLimit: false` drops our
 * client_max_body_size, leaving nginx's default (1 MiB). */
async function startNginx({ upstreamPort, tls, bodyLimit = true }) {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-nginx-"));
  const port = await freePort();
  let site = readFileSync(join(ROOT, "deploy/nginx.conf"), "utf8");
  site = change(site, "listen 443 ssl http2;", `listen 127.0.0.1:${port} ssl http2;`);
  site = change(site, "server 127.0.0.1:8080;", `server 127.0.0.1:${upstreamPort};`);
  site = change(site, "/etc/ssl/chunkwise/cert.pem", tls.cert);
  site = change(site, "/etc/ssl/chunkwise/key.pem", tls.key);
  if (!bodyLimit) site = change(site, "client_max_body_size 300m;", "");
  writeFileSync(join(dir, "chunkwise.conf"), site);
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((name) => `${name}_temp_path ${join(dir, name)};`).join("\n  ");
  writeFileSync(join(dir, "nginx.conf"), `
${process.getuid() === 0 ? "user root root;" : ""}
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} warn;
events {}
http {
  access_log ${join(dir, "access.log")};
  ${temp}
  include ${join(dir, "chunkwise.conf")};
}
`);
  const proc = spawn("nginx", ["-p", dir, "-e", join(dir, "error.log"), "-c", join(dir, "nginx.conf"), "-g", "daemon off;"],
    { stdio: ["ignore", "inherit", "inherit"] });
  await waitForPort(port, proc);
  return {
    url: `https://localhost:${port}`,
    /** Requests nginx answered, as [method, path, status]. */
    requests: () => readFileSync(join(dir, "access.log"), "utf8").split("\n").filter(Boolean).map((line) => {
      const m = line.match(/"(\w+) (\S+) [^"]*" (\d+)/);
      return m ? [m[1], m[2], Number(m[3])] : [];
    }),
    stop: stopper(proc),
  };
}

/** Debian's Caddy running deploy/Caddyfile as is, told its ports and files through the
 * environment variables the file reads. */
async function startCaddy({ upstreamPort, tls }) {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-caddy-"));
  const [port, httpPort] = [await freePort(), await freePort()];
  const proc = spawn("caddy", ["run", "--config", join(ROOT, "deploy/Caddyfile"), "--adapter", "caddyfile"], {
    stdio: ["ignore", "ignore", "pipe"],
    env: {
      ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir,
      CHUNKWISE_SITE: `localhost:${port}`, CHUNKWISE_HTTPS_PORT: String(port), CHUNKWISE_HTTP_PORT: String(httpPort),
      CHUNKWISE_CADDY_ADMIN: "off", CHUNKWISE_TLS_CERT: tls.cert, CHUNKWISE_TLS_KEY: tls.key,
      CHUNKWISE_UPSTREAM: `127.0.0.1:${upstreamPort}`,
    },
  });
  const log = [];
  proc.stderr.on("data", (d) => log.push(d.toString()));
  try {
    await waitForPort(port, proc);
  } catch (e) {
    throw new Error(`${e.message}\n${log.join("")}`);
  }
  return { url: `https://localhost:${port}`, stop: stopper(proc) };
}

/** Opens the page at `base` (same origin as the API, under /api/) and starts an upload of
 * `file` with the library; returns the page. */
async function startUpload(browser, base, file, options = {}) {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await page.goto(base + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });
  await page.setInputFiles("#file", file.path);
  await startLibraryUpload(page, { endpoint: "/api/uploads", headers: { Authorization: `Bearer ${TOKEN}` }, ...options });
  return { page, errors };
}

/** The protocol each request to the API went over (`h2`, `http/1.1`). */
function apiProtocols(page) {
  return page.evaluate(() => performance.getEntriesByType("resource")
    .filter((e) => new URL(e.name).pathname.startsWith("/api/")).map((e) => e.nextHopProtocol));
}

async function assertStoredThrough(proxyUrl, server, outcome, file) {
  assert.ok(outcome.result, `upload failed: ${JSON.stringify(outcome.error)}`);
  const { result } = outcome;
  assert.equal(result.size, file.size);
  assert.equal(result.sha256, file.sha256);
  assert.equal(result.verified, true);
  // The public URL the browser used, under the proxy's prefix.
  assert.equal(result.location, `${proxyUrl}/api/uploads/${result.id}`);
  assert.equal(await sha256File(join(server.dataDir, "files", result.id)), file.sha256);
}

/** The value of a metric (no labels) in Prometheus text. */
function metric(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `no ${name} in\n${text}`);
  return Number(line.split(" ")[1]);
}

describe("behind real reverse proxies, TLS and HTTP/2, the API under /api/", () => {
  let browser;
  let tls;
  let server;
  let file;
  const logs = [];
  before(async () => {
    tls = await certificate();
    browser = await launchChromium(["--ignore-certificate-errors"]);
    server = await startServer(["--token", TOKEN, "--metrics-listen", "127.0.0.1:0", "--log-format", "json"],
      { logs, env: { RUST_LOG: "chunkwise_server=info,warn" } });
    const { path, sha256 } = randomFile(48 * MIB + 1, "deploy.bin");
    file = { path, sha256, size: 48 * MIB + 1 };
  });
  after(async () => { await browser?.close(); await server?.stop(); });

  /** Uploads `file` through the proxy at `proxyUrl`; checks the stored bytes, the public
   * URL, that every API request went over HTTP/2, and that the page logged no error. */
  async function uploadOverH2(proxyUrl) {
    const { page, errors } = await startUpload(browser, proxyUrl, file);
    const outcome = await libraryOutcome(page);
    await assertStoredThrough(proxyUrl, server, outcome, file);
    const protocols = await apiProtocols(page);
    assert.ok(protocols.length >= 8, `${protocols.length} API requests seen`);
    assert.deepEqual([...new Set(protocols)], ["h2"]);
    assert.deepEqual(errors, []);
    return { page, outcome };
  }

  test("nginx: 48 MiB + 1 byte intact over HTTP/2, the public URL in the result, metrics and JSON logs", async () => {
    const nginx = await startNginx({ upstreamPort: server.port, tls });
    try {
      const { page, outcome } = await uploadOverH2(nginx.url);

      // What an operator's scraper sees.
      const text = await (await fetch(server.metricsUrl)).text();
      assert.ok(metric(text, "chunkwise_received_bytes_total") >= file.size);
      assert.ok(metric(text, "chunkwise_uploads_completed_total") >= 1);
      assert.ok(metric(text, "chunkwise_uploads_created_total") >= 1);
      assert.ok(metric(text, "chunkwise_data_dir_free_bytes") > 0);
      assert.ok(metric(text, "chunkwise_slice_request_duration_seconds_count") >= 7);

      // Every log line is JSON; the upload's lines carry its id and nginx's request id
      // (`proxy_set_header X-Request-Id $request_id`: 32 hex digits); no secret in any.
      const lines = logs.map((line) => JSON.parse(line));
      const ours = lines.filter((l) => l.span?.upload_id === outcome.result.id);
      assert.ok(ours.length >= 9, `${ours.length} log lines name the upload`);
      for (const line of ours) assert.match(line.span.request_id, /^[0-9a-f]{32}$/);
      assert.equal(logs.filter((l) => l.includes(TOKEN)).length, 0, "the token was logged");
      await page.close();
    } finally {
      await nginx.stop();
    }
  });

  test("Caddy: 48 MiB + 1 byte intact over HTTP/2, the public URL in the result", async () => {
    const caddy = await startCaddy({ upstreamPort: server.port, tls });
    try {
      const { page, outcome } = await uploadOverH2(caddy.url);
      await page.close();
    } finally {
      await caddy.stop();
    }
  });

  test("nginx's default body limit: the upload fails within seconds, each slice sent once, and the message names the fix", async () => {
    const nginx = await startNginx({ upstreamPort: server.port, tls, bodyLimit: false });
    try {
      const started = Date.now();
      const { page } = await startUpload(browser, nginx.url, file);
      const { error } = await libraryOutcome(page);
      const seconds = (Date.now() - started) / 1000;
      assert.ok(error, "the upload should have failed");
      assert.equal(error.code, "http_status");
      assert.equal(error.status, 413);
      assert.match(error.message, /slice of 8388608 bytes was refused as too large by the server or a proxy/);
      assert.match(error.message, /lower chunkSize/);
      assert.match(error.message, /client_max_body_size/);
      assert.ok(seconds < 10, `failed after ${seconds} s`);
      const sends = await page.evaluate(() => window.__sends);
      assert.ok(Object.values(sends).every((n) => n === 1), `slices sent again: ${JSON.stringify(sends)}`);
      const refused = nginx.requests().filter(([method, , status]) => method === "PUT" && status === 413);
      assert.ok(refused.length >= 1 && refused.length <= 4, `${refused.length} PUTs refused`);
      await page.close();
    } finally {
      await nginx.stop();
    }
  });

  test("SIGTERM mid-upload behind nginx: the server exits 0 at once, and the upload goes on, intact, when it is back", async () => {
    const own = await startServer(["--token", TOKEN]);
    const nginx = await startNginx({ upstreamPort: own.port, tls });
    let back;
    try {
      const { page } = await startUpload(browser, nginx.url, file);
      // 48 MiB at 64 Mbit/s takes about 6 s: time to stop the server halfway.
      await emulateLink(await page.context().newCDPSession(page), { upBitsPerSecond: 64e6, rttMs: 2 });
      await waitForProgress(page, 0.3);
      const stopping = Date.now();
      own.process.kill("SIGTERM");
      const code = await new Promise((ok) => own.process.once("exit", (c) => ok(c)));
      const stopMs = Date.now() - stopping;
      assert.equal(code, 0);
      assert.ok(stopMs < 1000, `the server took ${stopMs} ms to stop`);
      await new Promise((ok) => setTimeout(ok, 1000));
      back = await startServer(["--token", TOKEN], { listen: `127.0.0.1:${own.port}`, dataDir: own.dataDir });
      const outcome = await libraryOutcome(page);
      await assertStoredThrough(nginx.url, back, outcome, file);
      await page.close();
    } finally {
      await nginx.stop();
      await back?.stop();
      await own.stop();
    }
  });
});

test("the systemd unit passes systemd-analyze verify", (t) => {
  if (!installed(t, "systemd-analyze")) return;
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-unit-"));
  const unit = join(dir, "chunkwise-server.service");
  // verify checks that ExecStart's binary exists: point it at the one built here.
  writeFileSync(unit, change(readFileSync(join(ROOT, "deploy/chunkwise-server.service"), "utf8"),
    "/usr/local/bin/chunkwise-server", join(ROOT, "target/release/chunkwise-server")));
  const result = spawnSync("systemd-analyze", ["verify", unit], { encoding: "utf8" });
  assert.equal(result.status, 0, result.stderr);
  // Unknown keys and bad values are only warnings: none may be printed.
  assert.equal(result.stderr.trim(), "", result.stderr);
});
