// `bench/run --load`: many clients at once against the real chunkwise-server on loopback,
// speaking its protocol from Node (the load is the server's; no browser copies bodies):
// small uploads (one slice), large ones (several slices in parallel), and slow
// connections held open the whole time (idle ones, and slice bodies trickling a byte at a
// time). Reports throughput, request latency (p50, p99), errors, how long a new client
// waited for /healthz and for a whole small upload while the slow connections were open,
// and the server's peak RSS and open files. Every upload's SHA-256, as the server computed
// it from its disk at `complete`, must equal the source's.
//
//   bench/run --load [--small 1000] [--large 50] [--slow 500]
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { MIB, OUT, report, startServer } from "./support.mjs";

const SMALL_BYTES = 64 * 1024;
const LARGE_BYTES = 16 * MIB;
const LARGE_CHUNK = 4 * MIB;

export async function main(args) {
  mkdirSync(OUT, { recursive: true });
  const small = Number(args.small ?? 1000);
  const large = Number(args.large ?? 50);
  const slow = Number(args.slow ?? 500);
  const server = await startServer();
  const { port } = new URL(server.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 96 });
  const latencies = [];
  const errors = [];
  const peak = { rss: 0, fds: 0 };
  const sampler = setInterval(() => {
    try {
      const text = readFileSync(`/proc/${server.proc.pid}/status`, "utf8");
      peak.rss = Math.max(peak.rss, Number(text.match(/VmHWM:\s+(\d+)/)?.[1] ?? 0) * 1024);
      peak.fds = Math.max(peak.fds, readdirSync(`/proc/${server.proc.pid}/fd`).length);
    } catch { /* gone */ }
  }, 100);

  /** One request; resolves with { status, headers, body } and records its latency. */
  const request = (method, path, body, headers = {}, record = true) => new Promise((ok, fail) => {
    const started = performance.now();
    const req = http.request({ host: "127.0.0.1", port, method, path, agent, headers: { ...headers, ...(body ? { "content-length": body.length } : {}) } }, (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => {
        if (record) latencies.push(performance.now() - started);
        ok({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts).toString() });
      });
    });
    req.on("error", fail);
    req.end(body);
  });

  /** Sends `request` again while the server says to wait (503 with Retry-After), counting
   * each such refusal: "0 errors" must not hide thousands of them. */
  const refusals = { count: 0, byPath: { create: 0, slice: 0, complete: 0 } };
  const patiently = async (...a) => {
    for (;;) {
      const r = await request(...a);
      if (r.status !== 503) return r;
      refusals.count++;
      const [method, path] = a;
      refusals.byPath[method === "PUT" ? "slice" : path === "/uploads" ? "create" : "complete"]++;
      await new Promise((w) => setTimeout(w, Number(r.headers["retry-after"] ?? 1) * 1000));
    }
  };

  const digest = (bytes) => createHash("sha256").update(bytes).digest();
  const upload = async (bytes, chunk, inFlight) => {
    const created = await patiently("POST", "/uploads", Buffer.from(JSON.stringify({ chunkSize: chunk, size: bytes.length })));
    if (created.status !== 201) throw new Error(`create: ${created.status} ${created.body}`);
    const location = `/${created.headers.location}`;
    const count = Math.ceil(bytes.length / chunk);
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(inFlight, count) }, async () => {
      while (next < count) {
        const i = next++;
        const slice = bytes.subarray(i * chunk, Math.min((i + 1) * chunk, bytes.length));
        const r = await patiently("PUT", location, slice, {
          "chunkwise-slice": String(i), "content-digest": `sha-256=:${digest(slice).toString("base64")}:`,
        });
        if (r.status !== 204) throw new Error(`slice ${i}: ${r.status} ${r.body}`);
      }
    }));
    const done = await patiently("POST", location, Buffer.from("{}"));
    if (done.status !== 200) throw new Error(`complete: ${done.status} ${done.body}`);
    const sha = JSON.parse(done.body).sha256;
    if (sha !== digest(bytes).toString("hex")) throw new Error(`stored ${sha}, sent ${digest(bytes).toString("hex")}`);
  };

  // The slow connections: half idle (reconnecting when the server closes them), half
  // trickling a slice body a byte every 500 ms.
  const sockets = new Set();
  let stopping = false;
  const holdIdle = () => {
    const s = net.connect(Number(port), "127.0.0.1");
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => { sockets.delete(s); if (!stopping) holdIdle(); });
  };
  const trickleTo = (location) => {
    const s = net.connect(Number(port), "127.0.0.1", () => {
      s.write(`PUT ${location} HTTP/1.1\r\nHost: x\r\nchunkwise-slice: 0\r\nContent-Length: ${MIB}\r\n\r\n`);
      const timer = setInterval(() => s.write("x"), 500);
      s.on("close", () => clearInterval(timer));
    });
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => { sockets.delete(s); });
  };
  for (let i = 0; i < slow / 2; i++) holdIdle();
  for (let i = 0; i < slow - Math.floor(slow / 2); i++) {
    const r = await patiently("POST", "/uploads", Buffer.from(JSON.stringify({ chunkSize: MIB, size: MIB })), {}, false);
    trickleTo(`/${r.headers.location}`);
  }
  await new Promise((w) => setTimeout(w, 500));
  const slowOpen = sockets.size;

  // A new client's wait, sampled while the load runs: /healthz and a whole small upload,
  // each on a connection of its own.
  const fresh = { healthz: [], upload: [] };
  let loadDone = false;
  const probe = (async () => {
    const own = new http.Agent({ keepAlive: false });
    while (!loadDone) {
      let t = performance.now();
      await new Promise((ok) => http.get({ host: "127.0.0.1", port, path: "/healthz", agent: own }, (res) => { res.resume(); res.on("end", ok); }).on("error", ok));
      fresh.healthz.push(performance.now() - t);
      t = performance.now();
      try { await upload(randomBytes(SMALL_BYTES), SMALL_BYTES, 1); fresh.upload.push(performance.now() - t); } catch (e) { errors.push(`probe: ${e.message}`); }
      await new Promise((w) => setTimeout(w, 200));
    }
  })();

  const started = performance.now();
  const pool = async (n, limit, job) => {
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) {
        next++;
        try { await job(); } catch (e) { errors.push(e.message); }
      }
    }));
  };
  await Promise.all([
    pool(small, 64, () => upload(randomBytes(SMALL_BYTES), SMALL_BYTES, 1)),
    pool(large, 10, () => upload(randomBytes(LARGE_BYTES), LARGE_CHUNK, 4)),
  ]);
  const seconds = (performance.now() - started) / 1000;
  loadDone = true;
  await probe;
  stopping = true;
  for (const s of sockets) s.destroy();
  clearInterval(sampler);
  agent.destroy();
  server.proc.kill("SIGTERM");
  rmSync(server.dataDir, { recursive: true, force: true });

  const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN; };
  const bytes = small * SMALL_BYTES + large * LARGE_BYTES;
  const ms = (x) => `${x.toFixed(0)} ms`;
  const rows = [{
    uploads: `${small} × 64 KiB + ${large} × 16 MiB`,
    slow: `${slowOpen} open (${Math.floor(slow / 2)} idle, ${slow - Math.floor(slow / 2)} trickling)`,
    seconds: seconds.toFixed(1),
    throughput: `${(bytes / MIB / seconds).toFixed(0)} MiB/s`,
    requests: latencies.length,
    p50: ms(pct(latencies, 0.5)),
    p99: ms(pct(latencies, 0.99)),
    errors: errors.length,
    refused: `${refusals.count} (${refusals.byPath.create} create, ${refusals.byPath.slice} slice, ${refusals.byPath.complete} complete)`,
    healthz: `${ms(pct(fresh.healthz, 0.5))} / ${ms(Math.max(...fresh.healthz))}`,
    newUpload: `${ms(pct(fresh.upload, 0.5))} / ${ms(Math.max(...fresh.upload))}`,
    rss: `${(peak.rss / MIB).toFixed(0)} MiB`,
    fds: peak.fds,
    ok: errors.length === 0,
  }];
  for (const e of errors.slice(0, 10)) console.log(`# error: ${e}`);
  const text = [
    "| uploads | slow connections | s | throughput | requests | p50 | p99 | errors | 503s retried | new client /healthz (p50 / max) | new small upload (p50 / max) | peak RSS | peak open files |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.uploads} | ${r.slow} | ${r.seconds} | ${r.throughput} | ${r.requests} | ${r.p50} | ${r.p99} | ${r.errors} | ${r.refused} | ${r.healthz} | ${r.newUpload} | ${r.rss} | ${r.fds} |`),
  ].join("\n");
  report("load", text, rows);
}
