// The npm path as a web developer meets it: `scripts/pack`'s tarball installed into a Vite
// app (tests/npm-app) next to pinned Vite and TypeScript, type-checked strictly, built for
// production, served from its own origin, and uploading in Chromium from the page and from
// a module worker to chunkwise-server on another origin. Bytes are compared on disk.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { ROOT, launchChromium, randomFile, serveStatic, sha256File, startServer, watchErrors } from "./support.mjs";

const run = promisify(execFile);
const APP = join(ROOT, "target/npm-app");

describe("the npm package in a Vite app", () => {
  let tarball, api, site, browser, page, errors;

  before(async () => {
    const packed = await run("scripts/pack", { cwd: ROOT, maxBuffer: 1 << 26 });
    tarball = packed.stdout.trim().split("\n").at(-1);
    assert.match(tarball, /chunkwise-\d+\.\d+\.\d+\.tgz$/, "scripts/pack prints the tarball's path last");
    rmSync(APP, { recursive: true, force: true });
    cpSync(join(ROOT, "tests/npm-app"), APP, { recursive: true, filter: (p) => !p.includes("node_modules") });
    const npm = (...args) => run("npm", [...args, "--no-audit", "--no-fund"], { cwd: APP, maxBuffer: 1 << 26 });
    await npm("ci");
    await npm("install", "--no-save", tarball);
    await run("npx", ["vite", "build"], { cwd: APP, maxBuffer: 1 << 26 });
    site = await serveStatic(join(APP, "dist"));
    api = await startServer(["--allowed-origin", site.url]);
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await api?.stop();
    site?.close();
  });

  test("the tarball is a complete package", async () => {
    const { stdout } = await run("tar", ["-xOzf", tarball, "package/package.json"]);
    const manifest = JSON.parse(stdout);
    for (const field of ["name", "version", "description", "license", "repository", "keywords", "exports", "files", "sideEffects"]) {
      assert.ok(manifest[field], `package.json has ${field}`);
    }
    assert.equal(manifest.type, "module");
    assert.equal(manifest.exports["."].types, "./index.d.ts");
    const { stdout: listing } = await run("tar", ["-tzf", tarball]);
    for (const file of ["package/index.js", "package/index.d.ts", "package/chunkwise_bg.wasm", "package/README.md",
                        "package/CHANGELOG.md", "package/LICENSE-MIT", "package/LICENSE-APACHE"]) {
      assert.ok(listing.split("\n").includes(file), `the tarball holds ${file}`);
    }
    // The license files are the repository's own, byte for byte.
    for (const name of ["CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"]) {
      const { stdout: shipped } = await run("tar", ["-xOzf", tarball, `package/${name}`]);
      assert.equal(shipped, readFileSync(join(ROOT, name), "utf8"), `${name} is shipped as is`);
    }
    assert.equal(manifest.license, "MIT OR Apache-2.0");
    // The version the changelog's newest release names is the package's.
    const released = /^## \[(\d+\.\d+\.\d+)\]/m.exec(readFileSync(join(ROOT, "CHANGELOG.md"), "utf8"))?.[1];
    assert.equal(manifest.version, released, "package.json's version is CHANGELOG.md's newest release");
  });

  test("a strict TypeScript app type-checks against the shipped .d.ts, and wrong options do not", async () => {
    await run("npx", ["tsc", "-p", "tsconfig.json"], { cwd: APP });
    const wrong = await run("npx", ["tsc", "-p", "tsconfig.wrong.json"], { cwd: APP }).then(
      () => assert.fail("wrong options compiled"),
      (error) => error.stdout,
    );
    const lines = readFileSync(join(APP, "src/wrong.ts"), "utf8").split("\n");
    lines.forEach((line, i) => {
      if (line.includes("// WRONG")) assert.match(wrong, new RegExp(`src/wrong\\.ts\\(${i + 1},`), `line ${i + 1} is refused: ${line}`);
    });
  });

  test("the built app uploads from the page and from a module worker, byte-identical", async () => {
    const source = randomFile(5 * 1024 * 1024 + 1, "page.bin");
    page = await browser.newPage();
    errors = watchErrors(page);
    await page.goto(site.url);
    await page.setInputFiles("#files", source.path);
    const endpoint = `${api.url}/uploads`;
    for (const where of ["uploadInPage", "uploadInWorker"]) {
      const outcome = await page.evaluate(([where, endpoint]) => window.app[where](endpoint), [where, endpoint]);
      assert.ok(outcome.result, `${where}: ${JSON.stringify(outcome.error)}`);
      assert.equal(outcome.result.verified, true, where);
      assert.equal(outcome.result.sha256, source.sha256, where);
      assert.equal(await sha256File(join(api.dataDir, "files", outcome.result.id)), source.sha256, `${where}: the stored file`);
    }
    const sizes = shippedSizes(join(APP, "dist/assets"));
    console.log(`# npm app: ${sizes.summary}`);
    assert.deepEqual(errors, []);
  });

  test("the built app's UploadQueue uploads several files, an empty one too", async () => {
    const files = [randomFile(0, "empty.bin"), randomFile(1, "one.bin"), randomFile(300 * 1024, "small.bin"), randomFile(9 * 1024 * 1024 + 3, "big.bin")];
    await page.setInputFiles("#files", files.map((f) => f.path));
    const items = await page.evaluate((endpoint) => window.app.uploadAll(endpoint), `${api.url}/uploads`);
    assert.equal(items.length, files.length);
    for (const [i, item] of items.entries()) {
      assert.equal(item.state, "done", `${item.path}: ${JSON.stringify(item.error)}`);
      assert.equal(await sha256File(join(api.dataDir, "files", item.id)), files[i].sha256, item.path);
    }
    assert.deepEqual(errors, []);
  });
});

/** The JavaScript and wasm a production build ships, raw and gzipped. */
function shippedSizes(dir) {
  let raw = 0, gzip = 0;
  const parts = [];
  for (const name of readdirSync(dir)) {
    if (!/\.(js|wasm)$/.test(name)) continue;
    const bytes = readFileSync(join(dir, name));
    const zipped = gzipSync(bytes, { level: 9 }).length;
    raw += statSync(join(dir, name)).size;
    gzip += zipped;
    parts.push(`${name.replace(/-[\w-]{8}\./, ".")} ${(zipped / 1000).toFixed(1)} KB`);
  }
  return { raw, gzip, summary: `JS + wasm shipped ${(gzip / 1000).toFixed(1)} KB gzip (${(raw / 1000).toFixed(1)} KB raw): ${parts.join(", ")}` };
}
