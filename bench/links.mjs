// The benchmark over emulated links, with the page and the endpoints on two origins.
//
//   node --experimental-websocket bench/run.mjs --link slow,wan,lan [--size 40M] [--runs 1]
//
// Links (see tests/e2e/link.mjs and link-proxy.mjs for how each is made):
//   slow  8 Mbit/s up, 60 ms: Chromium's network emulation (paces bodies, so upload
//         progress is what crossed the link);
//   wan   400 Mbit/s, 40 ms, a 512 KiB window per connection (one connection carries at
//         most ~100 Mbit/s): the userspace link proxy;
//   lan   loopback, two origins.
// Every request goes through a link proxy, which counts requests by method (preflights
// included) from the byte stream. For each method: goodput as a fraction of the link
// rate, requests per slice, preflights, when the progress value first moved, and the
// longest time it then stood still (until the upload's end).
// BENCH_PKG=DIR measures another build of the package; --only REGEX picks methods.
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Chromium } from "./cdp.mjs";
import { MIB, OUT, median, parseSize, report, runMethod, sourceFile, startServer, startTus, toTus } from "./support.mjs";
import { LINKS, emulateLink, firstMoveMs, longestStillMs } from "../tests/e2e/link.mjs";
import { startLinkProxy } from "../tests/e2e/link-proxy.mjs";

const BENCH_LINKS = {
  slow: { ...LINKS.slow, how: "chromium", size: 40 * MIB },
  wan: { name: "wan", upBitsPerSecond: 400e6, rttMs: 40, windowBytes: 512 * 1024, how: "proxy", size: 256 * MIB },
  lan: { name: "lan", upBitsPerSecond: null, rttMs: 0, how: "none", size: 256 * MIB },
};

const METHODS = [
  { name: "fetch(File) whole", method: "fetch", chunk: Infinity },
  { name: "XHR.send(File) whole", method: "xhr", chunk: Infinity },
  { name: "chunkwise defaults", method: "chunkwise", options: {}, chunk: 8 * MIB },
  { name: "chunkwise digest none", method: "chunkwise", options: { digest: "none" }, chunk: 8 * MIB },
  { name: "tus-js-client defaults", method: "tus", options: {}, chunk: Infinity },
  { name: "chunkwise tus", method: "chunkwise-tus", options: {}, chunk: 64 * MIB },
  { name: "tus-js-client 8 MiB chunks", method: "tus", options: { chunkSize: 8 * MIB }, chunk: 8 * MIB },
];

async function runLink(browser, link, size, runs, methods) {
  const site = await startServer();
  const api = await startServer(["--allowed-origin", site.url]);
  const tus = await startTus();
  const shape = link.how === "proxy" ? link : {};
  const apiLink = await startLinkProxy(Number(new URL(api.url).port), shape);
  const tusLink = await startLinkProxy(Number(new URL(tus.url).port), shape);
  const page = await browser.open(`${site.url}/`);
  if (link.how === "chromium") {
    await emulateLink({ send: (method, params) => page.send(method, params) }, link);
  }
  const source = await sourceFile(size);
  await page.setFile("#file", source.path);
  const results = [];
  try {
    for (let run = 0; run < runs; run++) {
      for (const m of methods) {
        const proxy = toTus(m.method) ? tusLink : apiLink;
        proxy.reset();
        const options = toTus(m.method) ? { ...m.options, endpoint: `${tusLink.url}/files` } : m.options ?? {};
        const { result, error } = await runMethod(page, m.method, options, apiLink.url, tus.dataDir);
        const ok = !error && result.sha256 === source.sha256;
        const counts = proxy.counts();
        const slices = Number.isFinite(m.chunk) ? Math.ceil(size / m.chunk) : 1;
        const bodies = toTus(m.method) ? counts.PATCH ?? 0 : counts.PUT ?? 0;
        const log = await page.evaluate("bench.progressLog()");
        const row = {
          link: link.name, method: m.name, size, run, ok, error: error ?? (ok ? undefined : "SHA-256 differs"),
          ms: result?.ms, mibPerSecond: ok ? size / MIB / (result.ms / 1000) : null,
          ofLink: ok && link.upBitsPerSecond ? (size * 8) / (result.ms / 1000) / link.upBitsPerSecond : null,
          requestsPerSlice: bodies / slices, preflights: counts.OPTIONS ?? 0,
          stillMs: m.method === "fetch" ? null : longestStillMs(log, size, result?.ms ?? 0),
          firstMoveMs: m.method === "fetch" ? null : firstMoveMs(log),
        };
        results.push(row);
        console.log(`${link.name.padEnd(4)} ${(size / MIB).toFixed(0)} MiB run ${run + 1}/${runs} ${m.name.padEnd(26)} ` +
          (ok ? `${row.mibPerSecond.toFixed(1).padStart(6)} MiB/s${row.ofLink ? ` = ${row.ofLink.toFixed(2)} of the link` : ""}` : `FAILED ${row.error}`) +
          `  ${bodies} body requests for ${slices} slice(s), ${row.preflights} preflights, first progress after ${row.firstMoveMs == null ? "–" : `${row.firstMoveMs.toFixed(0)} ms`}, still at most ${row.stillMs == null ? "–" : `${row.stillMs.toFixed(0)} ms`}`);
        rmSync(join(api.dataDir, "files"), { recursive: true, force: true });
        mkdirSync(join(api.dataDir, "files"));
      }
    }
  } finally {
    await page.send("Target.closeTarget", { targetId: page.targetId }).catch(() => {});
    apiLink.close();
    tusLink.close();
    for (const p of [site.proc, api.proc, tus.proc]) p.kill("SIGTERM");
  }
  return results;
}

function table(link, size, rows, methods) {
  const describe = {
    slow: "8 Mbit/s up, 60 ms round trip (Chromium's network emulation)",
    wan: "400 Mbit/s, 40 ms round trip, 512 KiB window per connection (link proxy)",
    lan: "loopback",
  }[link];
  const ceiling = median(rows.filter((r) => r.method === METHODS[0].name && r.ok).map((r) => r.mibPerSecond));
  const lines = [
    `**${link}**: ${describe}; ${(size / MIB).toFixed(0)} MiB, page and endpoint on two origins.`,
    "",
    "| method | MiB/s | of the link | × fetch(File) | body requests per slice | preflights | first progress | longest still |",
    "|---|--:|--:|--:|--:|--:|--:|--:|",
  ];
  for (const m of methods) {
    const rs = rows.filter((r) => r.method === m.name);
    const good = rs.filter((r) => r.ok);
    const speed = good.length ? median(good.map((r) => r.mibPerSecond)) : null;
    const ofLink = good.length && good[0].ofLink != null ? median(good.map((r) => r.ofLink)) : null;
    const still = rs.map((r) => r.stillMs).filter((v) => v != null);
    const first = rs.map((r) => r.firstMoveMs).filter((v) => v != null);
    const seconds = (xs) => (xs.length ? `${(median(xs) / 1000).toFixed(1)} s` : "–");
    lines.push(`| ${m.name} | ${speed == null ? "failed" : speed.toFixed(1)} | ${ofLink == null ? "–" : ofLink.toFixed(2)} | ` +
      `${speed == null ? "–" : (speed / ceiling).toFixed(2)} | ${median(rs.map((r) => r.requestsPerSlice)).toFixed(2)} | ` +
      `${median(rs.map((r) => r.preflights))} | ${seconds(first)} | ${seconds(still)} |`);
  }
  return lines.join("\n");
}

export async function main(names, args) {
  mkdirSync(OUT, { recursive: true });
  const runs = Number(args.runs ?? 1);
  // --only keeps the first method too: it is the ceiling the others are compared with.
  const keep = args.only ? new RegExp(args.only, "i") : null;
  const methods = METHODS.filter((m, i) => !keep || i === 0 || keep.test(m.name));
  const browser = await Chromium.launch();
  const all = [];
  const tables = [];
  try {
    for (const name of names) {
      const link = BENCH_LINKS[name];
      if (!link) throw new Error(`unknown link ${name}; known: ${Object.keys(BENCH_LINKS).join(", ")}`);
      const size = args.size ? parseSize(args.size) : link.size;
      const rows = await runLink(browser, link, size, args.quick ? 1 : runs, methods);
      all.push(...rows);
      tables.push(table(name, size, rows, methods));
    }
  } finally {
    await browser.close();
  }
  report("links", tables.join("\n\n"), all);
}
