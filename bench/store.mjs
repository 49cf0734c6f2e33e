// The benchmark against object storage: the same file uploaded by one fetch(File) PUT to a
// presigned Garage URL (the store's ceiling), by chunkwise in direct mode (slices straight
// to Garage, chunkwise-server only signing), by chunkwise with the `s3` option through the
// app's own backend (examples/s3-backend, no chunkwise-server), by @uppy/aws-s3 6.3.1 with
// its `signRequest` asking a backend with the same SDK (bench/uppy-signer.mjs), through
// chunkwise-server in scale-out mode (--store s3://), and by chunkwise to chunkwise-server
// on disk.
//
//   node --experimental-websocket bench/run.mjs --store [--over slow|100m|wan] [--size 256M] [--runs 3]
//
// On loopback the four share this machine's two cores with Chromium and Garage, and the
// ratios measure CPU: integrity (a SHA-256 of every slice by the browser, checked again by
// the store) costs CPU a bare PUT does not spend. `--over` puts an emulated link
// (tests/e2e/link-proxy.mjs) between the browser and both the store and the servers:
// `slow` is 1 Mbit/s with a 150 ms round trip, `100m` 100 Mbit/s with 40 ms, `wan` the link benchmark's 400 Mbit/s,
// 40 ms, 512 KiB window per connection. There the link is the limit, and the ratios
// measure what the protocol costs: a sign request and a CORS preflight per part (Garage
// sends no Access-Control-Max-Age), and the tail.
//
// Every upload is read back (GetObject through s3tool, or the server's own SHA-256) and
// compared by SHA-256. CPU seconds per GiB are Chromium's, the signer's, the app backend's or
// disk server's, and Garage's; server RSS is the peak of the server involved.
import { readFileSync, writeFileSync } from "node:fs";
import { Chromium } from "./cdp.mjs";
import { MIB, median, parseSize, report, runMethod, sourceFile, startS3Backend, startServer } from "./support.mjs";
import { startGarage } from "../tests/e2e/garage.mjs";
import { startLinkProxy } from "../tests/e2e/link-proxy.mjs";

const OVER = {
  slow: { upBitsPerSecond: 1e6, rttMs: 150 },
  "100m": { upBitsPerSecond: 100e6, rttMs: 40 },
  wan: { upBitsPerSecond: 400e6, rttMs: 40, windowBytes: 512 * 1024 },
};

const cpu = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const peakRss = (pid) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmHWM:\s+(\d+)/)[1]) * 1024;
const resetPeak = (pid) => { try { writeFileSync(`/proc/${pid}/clear_refs`, "5"); } catch { /* not allowed */ } };

export async function main(args) {
  const size = args.size ? parseSize(args.size) : 256 * MIB;
  const runs = args.quick ? 1 : Number(args.runs ?? 3);
  const over = args.over ? OVER[args.over] : null;
  if (args.over && !over) throw new Error(`--over must be one of ${Object.keys(OVER).join(", ")}`);
  const garage = await startGarage("bench");
  const creds = { AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey };
  // Over a link, the browser reaches the store through it: presigned URLs name the link.
  const garageLink = over ? await startLinkProxy(garage.port, over) : null;
  const storeUrl = garageLink?.url ?? garage.endpoint;
  const site = await startServer([]);
  const signer = await startServer(["--s3-endpoint", storeUrl, "--s3-bucket", garage.bucket, "--s3-region", "garage", "--allowed-origin", site.url], creds);
  const through = await startServer(["--s3-endpoint", garage.endpoint, "--store", `s3://${garage.bucket}/through/`, "--s3-region", "garage", "--allowed-origin", site.url], creds);
  const disk = await startServer(["--allowed-origin", site.url]);
  const backend = await startS3Backend(garage, storeUrl, site.url);
  const uppySigner = await startS3Backend(garage, storeUrl, site.url, "bench/uppy-signer.mjs");
  const servers = [signer, through, disk, backend, uppySigner];
  const links = over ? await Promise.all(servers.map((s) => startLinkProxy(Number(new URL(s.url).port), over))) : [];
  const [signerUrl, throughUrl, diskUrl, backendUrl, uppyUrl] = over ? links.map((l) => l.url) : servers.map((s) => s.url);
  // @uppy/aws-s3 sends every S3 request from the browser, and reads each part's ETag.
  await garage.allowOriginWide(site.url);
  const browser = await Chromium.launch();
  const rows = [];
  try {
    const page = await browser.open(`${site.url}/`);
    const source = await sourceFile(size);
    await page.setFile("#file", source.path);
    const methods = [
      { name: "fetch(File) PUT to Garage (presigned)", server: null, run: async (run) => {
        const key = `ceiling-${run}`;
        const { result, error } = await runMethod(page, "presigned", { url: await garage.presignPut(key, storeUrl) });
        return { result, error, sha256: result && (await garage.object(key)).sha256 };
      } },
      { name: "chunkwise direct to Garage", server: signer, run: async () => {
        const { result, error } = await runMethod(page, "chunkwise", {}, signerUrl);
        return { result, error, sha256: result && (await garage.object(result.id.split(".")[0])).sha256 };
      } },
      { name: "chunkwise via the app's backend to Garage (s3 option)", server: backend, run: async () => {
        const { result, error } = await runMethod(page, "chunkwise-s3", {}, backendUrl);
        return { result, error, sha256: result && (await garage.object(result.id)).sha256 };
      } },
      { name: "@uppy/aws-s3 6.3.1 via the app's backend to Garage (signRequest)", server: uppySigner, run: async () => {
        const { result, error } = await runMethod(page, "uppy-s3", {}, uppyUrl);
        return { result, error, sha256: result && (await garage.object(result.id)).sha256 };
      } },
      { name: "chunkwise through chunkwise-server to Garage", server: through, run: async () => {
        const { result, error } = await runMethod(page, "chunkwise", {}, throughUrl);
        return { result, error, sha256: result && (await garage.object(`through/${result.id.split(".")[0]}`)).sha256 };
      } },
      { name: "chunkwise to chunkwise-server on disk", server: disk, run: async () => {
        const { result, error } = await runMethod(page, "chunkwise", {}, diskUrl);
        return { result, error, sha256: result?.sha256 };
      } },
    ];
    // One unmeasured upload each: compiling the wasm, starting WebCrypto's thread.
    for (const m of methods) await m.run("warm");
    for (let run = 0; run < runs; run++) {
      for (const m of methods) {
        const pids = { server: m.server?.proc.pid, garage: garage.pid };
        if (pids.server) resetPeak(pids.server);
        const before = { chromium: (await browser.cpuSeconds()).all, server: pids.server ? cpu(pids.server) : 0, garage: cpu(pids.garage) };
        const { result, error, sha256 } = await m.run(run);
        const perGiB = (s) => s / (size / (1024 * MIB));
        const ok = !error && sha256 === source.sha256;
        rows.push({
          method: m.name, size, ok, error: error ?? (ok ? undefined : `SHA-256 ${sha256} != ${source.sha256}`),
          mibPerSecond: ok ? size / MIB / (result.ms / 1000) : null,
          cpu: {
            chromium: perGiB((await browser.cpuSeconds()).all - before.chromium),
            server: pids.server ? perGiB(cpu(pids.server) - before.server) : null,
            garage: perGiB(cpu(pids.garage) - before.garage),
          },
          serverPeakRss: pids.server ? peakRss(pids.server) : null,
        });
        const last = rows.at(-1);
        console.log(`${m.name}: ${last.ok ? `${last.mibPerSecond.toFixed(0)} MiB/s` : `FAILED ${last.error}`}`);
      }
    }
  } finally {
    await browser.close();
    for (const l of [garageLink, ...links]) l?.close();
    for (const s of [site, ...servers]) s.proc.kill();
    await garage.stop();
  }
  const ceiling = median(rows.filter((r) => r.method.startsWith("fetch") && r.ok).map((r) => r.mibPerSecond));
  const lines = [
    `${(size / MIB).toFixed(0)} MiB, ${over ? `over ${args.over} (${over.upBitsPerSecond / 1e6} Mbit/s, ${over.rttMs} ms${over.windowBytes ? `, ${over.windowBytes / 1024} KiB window` : ""})` : "loopback"}, ` +
      `page and endpoints on two origins, median of ${runs} interleaved run(s) (min–max), ${new Date().toISOString().slice(0, 10)}:`,
    "",
    "| method | MiB/s | × fetch(File) PUT to Garage | CPU s/GiB: Chromium / server / Garage | server peak RSS |",
    "|---|--:|--:|--:|--:|",
  ];
  for (const name of [...new Set(rows.map((r) => r.method))]) {
    const rs = rows.filter((r) => r.method === name && r.ok);
    if (rs.length === 0) { lines.push(`| ${name} | failed | | | |`); continue; }
    const speeds = rs.map((r) => r.mibPerSecond);
    const m = (f) => median(rs.map(f));
    const server = rs[0].cpu.server == null ? "–" : m((r) => r.cpu.server).toFixed(1);
    const rss = rs[0].serverPeakRss == null ? "–" : `${(Math.max(...rs.map((r) => r.serverPeakRss)) / MIB).toFixed(1)} MiB`;
    const f = (v) => v.toFixed(median(speeds) < 1 ? 3 : median(speeds) < 100 ? 1 : 0);
    lines.push(`| ${name} | ${f(median(speeds))} (${f(Math.min(...speeds))}–${f(Math.max(...speeds))}) | ` +
      `${(median(speeds) / ceiling).toFixed(2)} | ${m((r) => r.cpu.chromium).toFixed(1)} / ${server} / ${m((r) => r.cpu.garage).toFixed(1)} | ${rss} |`);
  }
  report("store", lines.join("\n"), rows);
}
