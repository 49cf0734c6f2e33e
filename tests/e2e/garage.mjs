// A real S3-compatible store for the tests: a single-node Garage (the `garage`
// crate, 2.5.0, installed by scripts/setup) on loopback, with a key and a bucket, and `s3tool`
// (server/examples) to reach the bucket through aws-sdk-s3 without chunkwise-server.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ROOT, freePort } from "./support.mjs";

const run = promisify(execFile);
export const REGION = "garage";

/** Starts Garage with one bucket; `stop()` kills it and removes its data. */
export async function startGarage(bucket = "uploads") {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-garage-"));
  const [rpc, s3] = [await freePort(), await freePort()];
  const config = join(dir, "garage.toml");
  writeFileSync(config, [
    `metadata_dir = "${dir}/meta"`,
    `data_dir = "${dir}/data"`,
    `db_engine = "sqlite"`,
    `replication_factor = 1`,
    `rpc_bind_addr = "127.0.0.1:${rpc}"`,
    `rpc_public_addr = "127.0.0.1:${rpc}"`,
    `rpc_secret = "${randomBytes(32).toString("hex")}"`,
    `[s3_api]`,
    `s3_region = "${REGION}"`,
    `api_bind_addr = "127.0.0.1:${s3}"`,
    `root_domain = ".s3.garage.localhost"`,
    "",
  ].join("\n"));
  const proc = spawn("garage", ["-c", config, "server"], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn" } });
  // Dies with its starter, even one that crashed before stop().
  const reap = () => proc.kill("SIGKILL");
  process.once("exit", reap);
  proc.once("exit", () => process.off("exit", reap));
  let log = "";
  proc.stderr.on("data", (d) => { log = (log + d).slice(-4000); });
  const garage = (...args) => run("garage", ["-c", config, ...args]).then((r) => r.stdout);
  // `layout assign` needs a node that answers: wait for `status`.
  for (let i = 0; ; i++) {
    try { await garage("status"); break; } catch (error) {
      if (i > 100 || proc.exitCode !== null) throw new Error(`garage did not start: ${log}`);
      await new Promise((ok) => setTimeout(ok, 100));
    }
  }
  const node = (await garage("node", "id", "-q")).trim().split("@")[0];
  await garage("layout", "assign", "-z", "dc1", "-c", "1G", node);
  await garage("layout", "apply", "--version", "1");
  const key = await garage("key", "create", "chunkwise-test");
  const accessKeyId = /Key ID:\s*(\S+)/.exec(key)?.[1];
  const secretAccessKey = /Secret key:\s*(\S+)/.exec(key)?.[1];
  if (!accessKeyId || !secretAccessKey) throw new Error(`no key in: ${key}`);
  await garage("bucket", "create", bucket);
  await garage("bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "chunkwise-test");
  const endpoint = `http://127.0.0.1:${s3}`;
  const env = { ...process.env, AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey, S3_ENDPOINT: endpoint, S3_REGION: REGION };
  const tool = (...args) => run(join(ROOT, "target/release/examples/s3tool"), args, { env }).then((r) => r.stdout.trim());
  return {
    endpoint, port: s3, bucket, accessKeyId, secretAccessKey, env, garage, pid: proc.pid,
    /** A presigned PutObject URL for `key`, at `at` (the store, or a proxy in front of it). */
    presignPut: (key, at = endpoint) =>
      run(join(ROOT, "target/release/examples/s3tool"), ["presign-put", bucket, key], { env: { ...env, S3_ENDPOINT: at } })
        .then((r) => r.stdout.trim()),
    /** The bucket's CORS rule for `origin`, through the S3 API. */
    allowOrigin: (origin) => tool("cors", bucket, origin),
    /** A CORS rule for clients that send every S3 request from the browser and read ETags
     * (@uppy/aws-s3): every method, any header, `ETag` exposed. */
    allowOriginWide: (origin) => tool("cors-wide", bucket, origin),
    /** `{ sha256, size }` of an object, read back with GetObject. */
    async object(key) {
      const [sha256, size] = (await tool("sha256", bucket, key)).split(" ");
      return { sha256, size: Number(size) };
    },
    /** Unfinished multipart uploads in the bucket (ListMultipartUploads). */
    multipartUploads: async () => Number(await tool("uploads", bucket)),
    keys: async () => (await tool("keys", bucket)).split("\n").filter(Boolean),
    async stop() {
      proc.kill("SIGKILL");
      if (proc.exitCode === null && proc.signalCode === null) await new Promise((ok) => proc.once("exit", ok));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
