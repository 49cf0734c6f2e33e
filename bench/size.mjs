// What a web app downloads for chunkwise: a page-only Vite 8.3.8 app (tests/npm-app's pinned
// Vite) importing `init`, `Upload` and `UploadQueue` from a built package, built for
// production; prints the JS and wasm it ships, raw and gzip -9.
//   node bench/size.mjs [PKG_DIR]   (default pkg/, as scripts/build makes it)
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";

const ROOT = resolve(import.meta.dirname, "..");
const pkg = resolve(process.argv[2] ?? join(ROOT, "pkg"));
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
