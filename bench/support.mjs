// What the benchmark's modes share: source files, the servers, the page's directory.
import { buildSync } from "esbuild";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { reaped } from "./children.mjs";

export const ROOT = resolve(import.meta.dirname, "..");
export const OUT = join(ROOT, "target/bench");
export const MIB = 1024 * 1024;

export async function sha256File(path) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) hash.update(chunk);
  return hash.digest("hex");
}

export async function sourceFile(size) {
  mkdirSync(join(OUT, "files"), { recursive: true });
  const path = join(OUT, "files", `${size}.bin`);
  if (!existsSync(path) || statSync(path).size !== size) {
    const fd = openSync(path, "w");
    for (let left = size; left > 0; left -= 8 * MIB) writeSync(fd, randomBytes(Math.min(left, 8 * MIB)));
    closeSync(fd);
  }
  return { path, size, sha256: await sha256File(path) };
}

/** The page, with tus-js-client's browser build beside it. */
export function pageDir() {
  const dir = join(OUT, "www");
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(join(ROOT, "bench/page"))) copyFileSync(join(ROOT, "bench/page", name), join(dir, name));
  // @uppy/aws-s3 for the store benchmark's peer row, bundled for a plain page.
  buildSync({ entryPoints: [join(ROOT, "bench/page/uppy-entry.mjs")], bundle: true, format: "esm", minify: true, outfile: join(dir, "uppy.mjs"), logLevel: "warning" });
  copyFileSync(join(ROOT, "node_modules/tus-js-client/dist/tus.min.js"), join(dir, "tus.min.js"));
  // The S3 recipe's page side, for "chunkwise via the app's backend".
  copyFileSync(join(ROOT, "examples/s3-backend/client.mjs"), join(dir, "s3-client.mjs"));
  return dir;
}

/** The URL `proc` prints as "listening on URL"; rejects if it exits first. */
function listening(proc, what) {
  return new Promise((ok, fail) => {
    proc.once("exit", (code) => fail(new Error(`${what} exited ${code}`)));
    createInterface({ input: proc.stdout }).on("line", (l) => { const m = l.match(/listening on (\S+)/); if (m) ok(m[1]); });
  });
}

/** The S3 recipe's backend (examples/s3-backend/server.mjs, as it is; or `script`, such as
 * bench/uppy-signer.mjs), its store at `storeUrl`, called by pages of `origin`. */
export async function startS3Backend(garage, storeUrl, origin, script = "examples/s3-backend/server.mjs") {
  const proc = reaped(spawn(process.execPath, [join(ROOT, script)], {
    stdio: ["ignore", "pipe", "inherit"],
    env: {
      ...process.env, S3_ENDPOINT: storeUrl, S3_REGION: "garage", S3_BUCKET: garage.bucket, PORT: "0",
      AWS_ACCESS_KEY_ID: garage.accessKeyId, AWS_SECRET_ACCESS_KEY: garage.secretAccessKey, ALLOWED_ORIGIN: origin,
    },
  }));
  const url = await listening(proc, "the S3 backend");
  return { url, proc };
}

export async function startTus() {
  const dataDir = mkdtempSync(join(tmpdir(), "chunkwise-bench-tus-"));
  const proc = reaped(spawn(process.execPath, [join(ROOT, "tests/e2e/tus-server.mjs"), dataDir], { stdio: ["ignore", "pipe", "inherit"] }));
  const url = await listening(proc, "the tus server");
  return { url, proc, dataDir };
}

export async function startServer(extraArgs = [], env = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "chunkwise-bench-data-"));
  const proc = reaped(spawn(join(ROOT, "target/release/chunkwise-server"), [
    "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--www", pageDir(), "--pkg", process.env.BENCH_PKG ?? join(ROOT, "pkg"),
    "--max-chunk-size", String(64 * 1024 * MIB), ...extraArgs,
  ], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: process.env.BENCH_SERVER_LOG ?? "warn", ...env } }));
  const url = await listening(proc, "chunkwise-server");
  return { url, proc, dataDir };
}

/** "256M", "1G", "40K" as bytes. */
export const parseSize = (s) => Number.parseFloat(s) * { K: 1024, M: MIB, G: 1024 * MIB }[s.at(-1).toUpperCase()];

/** Prints one line per run for the test command's summary; a failed run sets the exit code. */
export function tally(results) {
  const failed = results.filter((r) => !r.ok).length;
  console.log(`# pass ${results.length - failed}`);
  console.log(`# fail ${failed}`);
  process.exitCode = failed ? 1 : 0;
}

/** Writes `target/bench/{name}.md` (the table `text`) and `{name}.json` (`rows`), prints the
 * table, and tallies the runs. */
export function report(name, text, rows) {
  writeFileSync(join(OUT, `${name}.md`), text + "\n");
  writeFileSync(join(OUT, `${name}.json`), JSON.stringify(rows, null, 2));
  console.log("\n" + text + `\n\nresults in ${OUT}/${name}.{md,json}`);
  tally(rows);
}

export const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };


/** Whether a bench method uploads to the tus server. */
export const toTus = (method) => method === "tus" || method === "chunkwise-tus";

/**
 * Runs one upload in the bench page: `bench.run(method, options, base)`. A tus upload's
 * SHA-256 is taken from the tus server's file (in `tusDataDir`), which is then removed.
 * Resolves with `{ result }` or `{ error }`.
 */
export async function runMethod(page, method, options, base, tusDataDir) {
  try {
    const args = [method, options, ...(base === undefined ? [] : [base])].map((a) => JSON.stringify(a)).join(", ");
    const result = await page.evaluate(`bench.run(${args})`);
    if (toTus(method)) {
      const id = new URL(result.url).pathname.split("/").pop();
      result.sha256 = await sha256File(join(tusDataDir, id));
      rmSync(join(tusDataDir, id), { force: true });
      rmSync(join(tusDataDir, `${id}.json`), { force: true });
    }
    return { result };
  } catch (e) {
    return { error: e.message };
  }
}
