// What a web app downloads for chunkwise, and what loading it costs: a page-only Vite 8.3.8
// app (tests/npm-app's pinned Vite) importing `init`, `Upload` and `UploadQueue` from a
// built package, built for production. Prints the JS and wasm it ships, raw and gzip -9;
// then, in headless Chromium (a fresh browser context per load, so nothing is cached),
// what the page pays before its own code runs (fetching, parsing and evaluating the
// bundle) and what `await init()` costs (fetching and compiling the wasm), at full CPU
// speed and at 4x CPU throttling (a mid-range phone), median of RUNS loads.
//   node bench/size.mjs [PKG_DIR] [--runs 9]   (default pkg/, as scripts/build makes it)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { launchChromium, serveStatic } from "../tests/e2e/support.mjs";
import { median } from "./support.mjs";

const ROOT = resolve(import.meta.dirname, "..");
const { values: args, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: "string", default: "9" } } });
const pkg = resolve(positionals[0] ?? join(ROOT, "pkg"));
const app = join(ROOT, "target/size-app");
mkdirSync(join(app, "src"), { recursive: true });
for (const name of ["package.json", "package-lock.json"]) copyFileSync(join(ROOT, "tests/npm-app", name), join(app, name));
if (!existsSync(join(app, "node_modules/.bin/vite"))) {
  execFileSync("npm", ["ci", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: app, stdio: "inherit" });
}
rmSync(join(app, "node_modules/chunkwise"), { recursive: true, force: true });
symlinkSync(pkg, join(app, "node_modules/chunkwise"));
writeFileSync(join(app, "index.html"), `<!doctype html><meta charset="utf-8"><input id="files" type="file"><script type="module" src="/src/main.js"></script>`);
writeFileSync(join(app, "src/main.js"), `import init, { Upload, UploadQueue } from "chunkwise";
// The first statement after the whole bundle was fetched, parsed and evaluated.
window.__evaluatedAt = performance.now();
window.__init = async () => { const t = performance.now(); await init(); return performance.now() - t; };
document.getElementById("files").onchange = async (e) => {
  await init();
  const queue = new UploadQueue({ endpoint: "/uploads" });
  queue.add(e.target.files);
  console.log(await queue.done(), Upload);
};
`);
rmSync(join(app, "dist"), { recursive: true, force: true });
execFileSync(join(app, "node_modules/.bin/vite"), ["build", "--logLevel", "error"], { cwd: app, stdio: "inherit" });

const rows = [];
const assets = join(app, "dist/assets");
for (const name of readdirSync(assets).filter((n) => /\.(js|wasm)$/.test(n)).sort()) {
  const bytes = readFileSync(join(assets, name));
  rows.push({ name: name.replace(/-[\w-]{8}\./, "."), raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length });
}
const sum = (kind, key) => rows.filter((r) => kind === "all" || r.name.endsWith(kind)).reduce((a, r) => a + r[key], 0);
const kb = (n) => `${(n / 1000).toFixed(1)} KB`;
console.log(`page-only app (${pkg}):`);
for (const r of rows) console.log(`  ${r.name.padEnd(24)} ${String(r.raw).padStart(8)} B raw  ${kb(r.gzip).padStart(9)} gzip`);
console.log(`  total: ${kb(sum("all", "gzip"))} gzip (wasm ${kb(sum(".wasm", "gzip"))}, JS ${kb(sum(".js", "gzip"))}); wasm ${sum(".wasm", "raw")} B raw`);

// ---- what loading costs ----
const site = await serveStatic(join(app, "dist"));
const url = `${site.url}/`;
const browser = await launchChromium();
console.log(`\nloading it in Chromium, median of ${args.runs} loads with an empty cache each:`);
for (const throttle of [1, 4]) {
  const page = [], initMs = [];
  for (let i = 0; i < Number(args.runs); i++) {
    const context = await browser.newContext();
    const tab = await context.newPage();
    const cdp = await context.newCDPSession(tab);
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: throttle });
    await tab.goto(url);
    await tab.waitForFunction(() => window.__evaluatedAt !== undefined);
    // From the bundle's last byte to its first statement: parsing, compiling, evaluating.
    page.push(await tab.evaluate(() => {
      const script = performance.getEntriesByType("resource").find((e) => /\.js$/.test(e.name));
      return window.__evaluatedAt - script.responseEnd;
    }));
    initMs.push(await tab.evaluate(() => window.__init()));
    await context.close();
  }
  console.log(`  CPU ${throttle}x: the bundle's JS before the page's code runs ${median(page).toFixed(1)} ms; await init() (fetch, compile, instantiate the wasm) ${median(initMs).toFixed(1)} ms`);
}
await browser.close();
site.close();
