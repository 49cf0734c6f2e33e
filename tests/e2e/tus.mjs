// Starts the real tus server of tests/e2e/tus-server.mjs (@tus/server with @tus/file-store)
// in a process of its own, behind the counting proxy (proxy.mjs), for the tests that upload
// with protocol: "tus" (tus.test.mjs, and each engine's in engines.mjs).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROOT } from "./support.mjs";
import { startProxy } from "./proxy.mjs";

/** Starts the tus server on a fresh directory; `env` as tus-server.mjs reads it. */
export async function startTus(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-tus-"));
  const proc = spawn(process.execPath, [join(ROOT, "tests/e2e/tus-server.mjs"), dir], {
    stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, ...env },
  });
  const url = await new Promise((ok, fail) => {
    proc.once("exit", (code) => fail(new Error(`the tus server exited with ${code}`)));
    proc.stdout.on("data", (d) => { const m = String(d).match(/listening on (\S+)/); if (m) ok(m[1]); });
  });
  const proxy = await startProxy(Number(new URL(url).port));
  return {
    dir, proxy, endpoint: `${proxy.url}/files`,
    /** The stored bytes and metadata of the upload at `location`. */
    file: (location) => join(dir, location.split("/").pop()),
    info: (location) => JSON.parse(readFileSync(join(dir, `${location.split("/").pop()}.json`), "utf8")),
    /** The requests counted since `from` (an index into the proxy's list). */
    requests: (method, from = 0) => proxy.state.requests.slice(from).filter((r) => r.method === method),
    /** With TUS_CHECKSUM: the PATCHes whose checksum it checked, and those that failed. */
    stats: async () => (await fetch(new URL("/stats", url))).json(),
    /** The server's Upload-Offset for `location`, asked straight (not through the proxy,
     * so nothing is counted). A HEAD takes the upload's lock, so it answers once a PATCH
     * still writing has stopped: what it says is settled. */
    async offset(location) {
      const head = await fetch(new URL(new URL(location).pathname, url), { method: "HEAD", headers: { "Tus-Resumable": "1.0.0" } });
      assert.equal(head.status, 200, `HEAD ${location}`);
      return Number(head.headers.get("upload-offset"));
    },
    stop() { proxy.close(); proc.kill("SIGTERM"); },
  };
}
