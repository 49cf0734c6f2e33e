// chunkwise benchmark: throughput and memory of upload methods, side by side, in one
// headless Chromium, on the same disk-backed files, interleaved runs, medians with min-max.
//
//   node --experimental-websocket bench/run.mjs [--sizes 256M,1G] [--runs 3] [--sweep] [--quick]
//   node bench/run.mjs --from a.json,b.json   (one table and chart from saved results files)
//   node --experimental-websocket bench/run.mjs --link slow,wan,lan [--size 40M] [--runs 1]
//     (over emulated links, page and endpoint on two origins; see bench/links.mjs)
//   node --experimental-websocket bench/run.mjs --store [--over slow|100m|wan] [--size 256M] [--runs 3]
//     (object storage: direct to Garage against fetch(File) to Garage, on loopback or over
//     an emulated link; see bench/store.mjs)
//   node --experimental-websocket bench/run.mjs --tus-faults [--size 64M] [--limit 90]
//     (tus under a cut and a frozen connection: chunkwise's and tus-js-client's; see
//     bench/tus-faults.mjs)
//   node bench/run.mjs --load [--small 1000] [--large 50] [--slow 500]
//     (many clients at once against the server, with slow connections held open; see
//     bench/load.mjs)
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Chromium } from "./cdp.mjs";
import { MIB, OUT, median, parseSize, runMethod, sourceFile, startServer, startTus, tally } from "./support.mjs";

const { values: args } = parseArgs({
  options: {
    sizes: { type: "string", default: "256M,1G" },
    runs: { type: "string", default: "3" },
    sweep: { type: "boolean", default: false },
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    from: { type: "string" },
    link: { type: "string" },
    store: { type: "boolean", default: false },
    over: { type: "string" },
    size: { type: "string" },
    load: { type: "boolean", default: false },
    small: { type: "string" },
    large: { type: "string" },
    slow: { type: "string" },
    "tus-faults": { type: "boolean", default: false },
    limit: { type: "string" },
  },
});
const sizes = args.quick ? [32 * MIB] : args.sizes.split(",").map(parseSize);
const runs = args.quick ? 1 : Number(args.runs);
/** The file every method uploads once, unmeasured, before the measured runs. */
const WARM_UP_BYTES = 32 * MIB;

const methods = [
  { name: "fetch(File) whole", method: "fetch" },
  { name: "XHR.send(File) whole", method: "xhr" },
  { name: "chunkwise defaults", method: "chunkwise", options: {} },
  { name: "chunkwise digest none", method: "chunkwise", options: { digest: "none" } },
  { name: "tus-js-client defaults", method: "tus", options: {} },
  { name: "tus-js-client 8 MiB chunks", method: "tus", options: { chunkSize: 8 * MIB } },
];
if (args.sweep && !args.quick) {
  for (const mib of [1, 4, 8, 32]) {
    for (const n of [1, 2, 4, 8]) {
      methods.push({ name: `chunkwise ${mib} MiB x ${n}`, method: "chunkwise", options: { chunkSize: mib * MIB, maxInFlight: n } });
    }
  }
}

if (args.only) {
  const keep = new RegExp(args.only, "i");
  methods.splice(0, methods.length, ...methods.filter((m, i) => i === 0 || keep.test(m.name)));
}

function status(pid) {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key) => Number(text.match(new RegExp(`${key}:\\s+(\\d+)`))?.[1] ?? 0) * 1024;
  return { rss: kib("VmRSS"), hwm: kib("VmHWM") };
}
/** CPU seconds (user + system) a process has used. */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
}
function resetPeak(pid) {
  try { writeFileSync(`/proc/${pid}/clear_refs`, "5"); } catch { /* not allowed here */ }
}

async function measure(browser, page, servers, source, m) {
  const server = m.method === "tus" ? servers.tus : servers.chunkwise;
  const options = m.method === "tus" ? { ...m.options, endpoint: servers.tus.url } : m.options ?? {};
  await page.collectGarbage();
  const heap0 = await page.heapBytes();
  const renderers = await browser.rendererPids();
  const rss0 = new Map(renderers.map((pid) => [pid, status(pid).rss]));
  renderers.forEach(resetPeak);
  resetPeak(server.proc.pid);
  const serverRss0 = status(server.proc.pid).rss;
  let heapPeak = heap0.used + heap0.backing;
  const browserCpu0 = await browser.cpuSeconds();
  const serverCpu0 = cpuSeconds(server.proc.pid);
  let polling = true;
  const poll = (async () => {
    while (polling) {
      const h = await page.heapBytes().catch(() => heap0);
      heapPeak = Math.max(heapPeak, h.used + h.backing);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const { result, error } = await runMethod(page, m.method, options, undefined, servers.tus.dataDir);
  polling = false;
  await poll;
  const browserCpu1 = await browser.cpuSeconds();
  const perGiB = (seconds) => seconds / (source.size / (1024 * MIB));
  const cpu = {
    chromium: perGiB(browserCpu1.all - browserCpu0.all),
    renderer: perGiB(browserCpu1.renderer - browserCpu0.renderer),
    server: perGiB(cpuSeconds(server.proc.pid) - serverCpu0),
  };
  const rendererGrowth = Math.max(0, ...renderers.map((pid) => { try { return status(pid).hwm - rss0.get(pid); } catch { return 0; } }));
  const serverPeak = status(server.proc.pid).hwm;
  const wasmBytes = await page.evaluate("bench.wasmBytes()");
  const ok = !error && result.sha256 === source.sha256;
  return {
    method: m.name, size: source.size, ok, error: error ?? (ok ? undefined : `SHA-256 ${result.sha256} != ${source.sha256}`),
    ms: result?.ms, completeMs: result?.completeMs, mibPerSecond: ok ? source.size / MIB / (result.ms / 1000) : null,
    heapGrowth: heapPeak - (heap0.used + heap0.backing), rendererGrowth, wasmBytes, cpu,
    serverPeakRss: serverPeak, serverRssBefore: serverRss0,
  };
}

const fmtMiB = (b) => `${(b / MIB).toFixed(1)}`;

/** Two panels: median throughput per method and size, and renderer peak growth. */
function chart(rows, meta) {
  const sizeList = [...new Set(rows.map((r) => r.size))];
  const names = [...new Set(rows.map((r) => r.method))];
  const colors = ["#2457d6", "#e5533d", "#2ea868", "#f2a93b", "#8e59c7"];
  const bar = 10, gap = 6, label = 230, width = 920, plot = (width - label - 60) / 2;
  const rowHeight = sizeList.length * bar + gap;
  const height = 70 + names.length * rowHeight + 30;
  const maxSpeed = Math.max(...rows.map((r) => r.mibPerSecond ?? 0), 1);
  const maxMem = Math.max(...rows.map((r) => r.rendererGrowth), 1);
  const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="18" font-size="13" font-weight="bold">chunkwise benchmark, ${esc(meta.date)}: ${esc(meta.browser)}, ${esc(meta.machine)}</text>`,
    `<text x="${label}" y="42" font-weight="bold">throughput, MiB/s (median)</text>`,
    `<text x="${label + plot + 40}" y="42" font-weight="bold">renderer peak growth, MiB</text>`];
  sizeList.forEach((size, i) => {
    out.push(`<rect x="${10 + i * 110}" y="${height - 20}" width="10" height="10" fill="${colors[i % colors.length]}"/>`,
      `<text x="${24 + i * 110}" y="${height - 11}">${esc(fmtMiB(size))} MiB file</text>`);
  });
  names.forEach((name, n) => {
    const y0 = 55 + n * rowHeight;
    out.push(`<text x="${label - 8}" y="${y0 + rowHeight / 2}" text-anchor="end">${esc(name)}</text>`);
    sizeList.forEach((size, i) => {
      const r = rows.find((x) => x.method === name && x.size === size);
      const y = y0 + i * bar;
      const speed = r?.mibPerSecond ?? 0;
      const w1 = (speed / maxSpeed) * plot, w2 = ((r?.rendererGrowth ?? 0) / maxMem) * plot;
      out.push(`<rect x="${label}" y="${y}" width="${w1.toFixed(1)}" height="${bar - 1}" fill="${colors[i % colors.length]}"/>`,
        `<text x="${label + w1 + 3}" y="${y + bar - 2}" font-size="9">${speed ? speed.toFixed(0) : "failed"}</text>`,
        `<rect x="${label + plot + 40}" y="${y}" width="${w2.toFixed(1)}" height="${bar - 1}" fill="${colors[i % colors.length]}"/>`,
        `<text x="${label + plot + 43 + w2}" y="${y + bar - 2}" font-size="9">${fmtMiB(r?.rendererGrowth ?? 0)}</text>`);
    });
  });
  out.push("</svg>");
  return out.join("\n");
}

/** Writes the markdown table and the chart of `rows`, and prints the table. */
function report(rows, meta) {
  const lines = [
    `Measured ${meta.date} on ${meta.machine}, ${meta.browser}, median of ${meta.runs} interleaved run(s) (min–max).`,
    "",
    "| file | method | MiB/s | × fetch(File) | JS heap + ArrayBuffers growth | renderer peak growth | wasm memory | server peak RSS | CPU s/GiB: Chromium / server |",
    "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ...rows.map((r) => `| ${fmtMiB(r.size)} MiB | ${r.method} | ${r.mibPerSecond == null ? `failed` : `${r.mibPerSecond.toFixed(0)} (${r.min.toFixed(0)}–${r.max.toFixed(0)})`} | ${r.ratio == null ? "–" : r.ratio.toFixed(2)} | ${fmtMiB(r.heapGrowth)} MiB | ${fmtMiB(r.rendererGrowth)} MiB | ${fmtMiB(r.wasmBytes)} MiB | ${fmtMiB(r.serverPeakRss)} MiB | ${r.chromiumCpu.toFixed(1)} / ${r.serverCpu.toFixed(1)} |`),
  ];
  writeFileSync(join(OUT, "results.md"), lines.join("\n") + "\n");
  writeFileSync(join(OUT, "chart.svg"), chart(rows, meta));
  console.log("\n" + lines.join("\n"));
}

/** One table and chart from saved results files (rows in file order; meta of the first). */
function merge(paths) {
  const saved = paths.map((p) => JSON.parse(readFileSync(p, "utf8")));
  const runs = saved
    .map((s) => `${s.meta.runs} (${[...new Set(s.rows.map((r) => fmtMiB(r.size)))].join(" and ")} MiB)`)
    .join(" or ");
  mkdirSync(OUT, { recursive: true });
  report(saved.flatMap((s) => s.rows), { ...saved[0].meta, runs });
  console.log(`\nresults in ${OUT}/results.md and chart.svg`);
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  const server = await startServer();
  const tus = await startTus();
  const servers = { chunkwise: server, tus };
  const browser = await Chromium.launch();
  const version = (await browser.send("Browser.getVersion")).product;
  const page = await browser.open(`${server.url}/`);
  const results = [];
  try {
    if (!args.quick) {
      // One-time costs (compiling and tiering up the wasm module and the page's JS, starting
      // WebCrypto's thread) would otherwise land on whichever run comes first.
      const warm = await sourceFile(WARM_UP_BYTES);
      await page.setFile("#file", warm.path);
      for (const m of methods) {
        const r = await measure(browser, page, servers, warm, m);
        console.log(`warm-up ${fmtMiB(WARM_UP_BYTES)} MiB  ${m.name.padEnd(26)} ${r.ok ? `${r.mibPerSecond.toFixed(0).padStart(5)} MiB/s` : `FAILED ${r.error}`}`);
        rmSync(join(server.dataDir, "files"), { recursive: true, force: true });
        mkdirSync(join(server.dataDir, "files"));
      }
    }
    for (const size of sizes) {
      const source = await sourceFile(size);
      await page.setFile("#file", source.path);
      for (let run = 0; run < runs; run++) {
        for (const m of methods) {
          const r = await measure(browser, page, servers, source, m);
          results.push({ ...r, run });
          console.log(`${fmtMiB(size)} MiB  run ${run + 1}/${runs}  ${m.name.padEnd(26)} ${r.ok ? `${r.mibPerSecond.toFixed(0).padStart(5)} MiB/s` : `FAILED ${r.error}`}  heap +${fmtMiB(r.heapGrowth)} MiB  renderer +${fmtMiB(r.rendererGrowth)} MiB  server ${fmtMiB(r.serverPeakRss)} MiB  CPU s/GiB: chromium ${r.cpu.chromium.toFixed(1)} (renderer ${r.cpu.renderer.toFixed(1)}) server ${r.cpu.server.toFixed(1)}${r.completeMs != null ? `  (then complete ${r.completeMs.toFixed(0)} ms)` : ""}`);
          rmSync(join(server.dataDir, "files"), { recursive: true, force: true });
          mkdirSync(join(server.dataDir, "files"));
        }
      }
    }
  } finally {
    await browser.close();
    server.proc.kill("SIGTERM");
    tus.proc.kill("SIGTERM");
  }

  const rows = [];
  for (const size of sizes) {
    const ceiling = median(results.filter((r) => r.size === size && r.method === methods[0].name && r.ok).map((r) => r.mibPerSecond));
    for (const m of methods) {
      const rs = results.filter((r) => r.size === size && r.method === m.name);
      const good = rs.filter((r) => r.ok);
      const speeds = good.map((r) => r.mibPerSecond);
      rows.push({
        size, method: m.name, runs: rs.length, failed: rs.length - good.length,
        mibPerSecond: good.length ? median(speeds) : null, min: Math.min(...speeds), max: Math.max(...speeds),
        ratio: good.length ? median(speeds) / ceiling : null,
        heapGrowth: median(rs.map((r) => r.heapGrowth)), rendererGrowth: median(rs.map((r) => r.rendererGrowth)),
        wasmBytes: Math.max(...rs.map((r) => r.wasmBytes)), serverPeakRss: Math.max(...rs.map((r) => r.serverPeakRss)),
        chromiumCpu: median(rs.map((r) => r.cpu.chromium)), serverCpu: median(rs.map((r) => r.cpu.server)),
      });
    }
  }
  const machine = `${readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "?"}, ${(await import("node:os")).cpus().length} cores`;
  const meta = { date: new Date().toISOString().slice(0, 10), browser: version, machine, runs };
  writeFileSync(join(OUT, "results.json"), JSON.stringify({ meta, rows, results }, null, 2));
  report(rows, meta);
  console.log(`\nresults in ${OUT}/results.{json,md} and chart.svg`);
  // The smoke mode runs in the test command: one line per run for its summary.
  tally(results);
}

if (args.load) await (await import("./load.mjs")).main(args);
else if (args["tus-faults"]) await (await import("./tus-faults.mjs")).main(args);
else if (args.link) await (await import("./links.mjs")).main(args.link.split(","), args);
else if (args.store) await (await import("./store.mjs")).main(args);
else if (args.from) merge(args.from.split(","));
else await main();
