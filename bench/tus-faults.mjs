// tus under faults: chunkwise's tus and tus-js-client 4.3.1 to the same @tus/server, through
// the fault proxy (tests/e2e/proxy.mjs), with the page on another origin.
//
//   node --experimental-websocket bench/run.mjs --tus-faults [--size 64M] [--runs 1]
//
// Faults, each once per upload after 40% of the file went towards the server:
//   none    nothing happens;
//   cut     the connection carrying the PATCH is reset mid-body;
//   frozen  the connection goes silent both ways, and the server side stays open (a phone
//           that changed networks: no FIN or RST ever arrives).
// Both clients run at their defaults (tus-js-client's retryDelays [0, 1000, 3000, 5000];
// chunkwise's stallTimeoutMs 30 s). An upload still running after `--limit` seconds (default
// 90) counts as not finished. For each: time, bytes that reached the server / the file (1.00:
// each byte sent once; request heads are a few hundred bytes), and HEADs.
import { Chromium } from "./cdp.mjs";
import { MIB, parseSize, report, runMethod, sourceFile, startServer, startTus } from "./support.mjs";
import { startProxy } from "../tests/e2e/proxy.mjs";

// `mustFinish`: the run fails when it does not (tus-js-client's rows are observations).
const METHODS = [
  { name: "tus-js-client defaults", method: "tus", options: {} },
  { name: "chunkwise tus", method: "chunkwise-tus", options: {}, mustFinish: true },
];
const FAULTS = ["none", "cut", "frozen"];

export async function main(args) {
  const size = args.size ? parseSize(args.size) : 64 * MIB;
  const runs = Number(args.runs ?? 1);
  const limitMs = Number(args.limit ?? 90) * 1000;
  const browser = await Chromium.launch();
  const site = await startServer();
  const tus = await startTus();
  const proxy = await startProxy(Number(new URL(tus.url).port));
  const source = await sourceFile(size);
  const rows = [];
  try {
    for (let run = 0; run < runs; run++) {
      for (const fault of FAULTS) {
        for (const m of METHODS) {
          // A fresh page each time: one that did not finish is closed with its upload.
          const page = await browser.open(`${site.url}/`);
          await page.setFile("#file", source.path);
          const from = proxy.state.requests.length;
          const upBefore = proxy.state.bytesUp;
          const at = Math.round(size * 0.4);
          proxy.state.cutAfterBytes = fault === "cut" ? at : 0;
          proxy.state.silenceAfterBytes = fault === "frozen" ? at : 0;
          const options = { ...m.options, endpoint: `${proxy.url}/files` };
          const timeout = new Promise((ok) => setTimeout(() => ok({ error: "not finished" }), limitMs));
          const started = Date.now();
          const { result, error } = await Promise.race([runMethod(page, m.method, options, undefined, tus.dataDir), timeout]);
          const ms = Date.now() - started;
          await page.send("Target.closeTarget", { targetId: page.targetId }).catch(() => {});
          proxy.state.cutAfterBytes = 0;
          proxy.state.silenceAfterBytes = 0;
          const sent = proxy.state.requests.slice(from);
          const patched = proxy.state.bytesUp - upBefore;
          const heads = sent.filter((r) => r.method === "HEAD").length;
          const finished = !error && result.sha256 === source.sha256;
          const row = {
            fault, method: m.name, run, finished, ok: finished || !m.mustFinish, ms: finished ? ms : null,
            error: error ?? (finished ? undefined : "SHA-256 differs"), sentOfFile: patched / size, heads,
          };
          rows.push(row);
          console.log(`${fault.padEnd(6)} ${m.name.padEnd(24)} ${finished ? `done in ${(ms / 1000).toFixed(1)} s` : `${row.error} (${(ms / 1000).toFixed(0)} s)`}` +
            `, ${row.sentOfFile.toFixed(2)} of the file reached the server, ${heads} HEAD`);
        }
      }
    }
  } finally {
    proxy.close();
    for (const p of [site.proc, tus.proc]) p.kill("SIGTERM");
    await browser.close();
  }
  const lines = [
    `tus under faults: ${(size / MIB).toFixed(0)} MiB to @tus/server 2.4.5 on loopback, page on another origin; one fault after 40% of the file; not finished after ${limitMs / 1000} s counts as such.`,
    "",
    "| fault | method | finished | time | bytes to the server / file | HEADs |",
    "|---|---|---|--:|--:|--:|",
  ];
  for (const r of rows) {
    lines.push(`| ${r.fault} | ${r.method} | ${r.finished ? "yes" : `no: ${r.error}`} | ${r.ms == null ? "–" : `${(r.ms / 1000).toFixed(1)} s`} | ${r.sentOfFile.toFixed(2)} | ${r.heads} |`);
  }
  report("tus-faults", lines.join("\n"), rows);
}
