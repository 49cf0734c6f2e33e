// Upload methods measured side by side. Each resolves with { ms, sha256?, bytes }.
import init, { Upload } from "/pkg/chunkwise.js";

const wasm = await init();
const file = () => document.getElementById("file").files[0];

// Progress as [ms since start, bytes], for the link benchmark's "longest still".
let progressLog = [];
let t0 = 0;
const logProgress = (bytes) => progressLog.push([performance.now() - t0, bytes]);

async function wholeFile(useXhr, base) {
  const f = file();
  const created = await fetch(`${base}/uploads`, {
    method: "POST",
    body: JSON.stringify({ chunkSize: Math.max(f.size, 1), size: f.size }),
  }).then((r) => r.json());
  const url = `${base}/uploads/${created.id}/slices/0`;
  t0 = performance.now();
  if (f.size > 0) {
    if (useXhr) {
      await new Promise((ok, fail) => {
        const xhr = new XMLHttpRequest();
        xhr.upload.onprogress = (e) => logProgress(e.loaded);
        xhr.open("PUT", url);
        xhr.onload = () => (xhr.status === 204 ? ok() : fail(new Error(`status ${xhr.status}`)));
        xhr.onerror = () => fail(new Error("xhr failed"));
        xhr.send(f);
      });
    } else {
      const r = await fetch(url, { method: "PUT", body: f });
      if (r.status !== 204) throw new Error(`status ${r.status}`);
    }
  }
  const putMs = performance.now() - t0;
  const done = await fetch(`${base}/uploads/${created.id}/complete`, { method: "POST", body: "{}" }).then((r) => r.json());
  const ms = performance.now() - t0;
  console.log(`put ${putMs.toFixed(0)} ms, complete ${(ms - putMs).toFixed(0)} ms`);
  return { ms: putMs, completeMs: ms - putMs, sha256: done.sha256, bytes: f.size, id: created.id };
}

async function chunkwise(options, base) {
  const f = file();
  t0 = performance.now();
  const onProgress = (p) => logProgress(p.bytesSent);
  const result = await new Upload(f, { endpoint: `${base}/uploads`, onProgress, ...options }).start();
  return { ms: performance.now() - t0, sha256: result.sha256, bytes: f.size, id: result.id, verified: result.verified };
}

// chunkwise speaking tus to a tus server (options.endpoint).
async function chunkwiseTus(options) {
  const f = file();
  t0 = performance.now();
  const onProgress = (p) => logProgress(p.bytesSent);
  const result = await new Upload(f, { protocol: "tus", resume: false, onProgress, ...options }).start();
  return { ms: performance.now() - t0, url: result.location, bytes: f.size };
}

// chunkwise straight to S3 through the app's own backend (examples/s3-backend at `base`).
async function chunkwiseS3(options, base) {
  const { s3Callbacks } = await import("./s3-client.mjs");
  const f = file();
  t0 = performance.now();
  const onProgress = (p) => logProgress(p.bytesSent);
  const result = await new Upload(f, { s3: s3Callbacks(`${base}/s3`), resume: false, onProgress, ...options }).start();
  return { ms: performance.now() - t0, bytes: f.size, id: result.id, verified: result.verified };
}

// @uppy/aws-s3 6.3.1 (bundled beside this page as uppy.mjs), its signRequest asking the
// signer at `base` for each request's presigned URL.
async function uppyS3({ chunkSize = 8 * 1024 * 1024 }, base) {
  const { Uppy, AwsS3 } = await import("./uppy.mjs");
  const f = file();
  const key = `uppy/${crypto.randomUUID()}`;
  const uppy = new Uppy().use(AwsS3, {
    shouldUseMultipart: true,
    getChunkSize: () => chunkSize,
    generateObjectKey: () => key,
    signRequest: async (request) => {
      const r = await fetch(`${base}/presign`, { method: "POST", body: JSON.stringify(request) });
      if (!r.ok) throw new Error(`presign: ${r.status} ${await r.text()}`);
      return r.json();
    },
  });
  uppy.addFile({ name: f.name, type: f.type || "application/octet-stream", data: f });
  uppy.on("upload-progress", (_, p) => logProgress(p.bytesUploaded));
  t0 = performance.now();
  const result = await uppy.upload();
  const ms = performance.now() - t0;
  if (!result || result.failed?.length) throw new Error(`uppy: ${result?.failed?.[0]?.error ?? "no result"}`);
  uppy.destroy();
  return { ms, bytes: f.size, id: key };
}

// One fetch(File) PUT to a presigned object-store URL: the store's ceiling.
async function presigned({ url }) {
  const f = file();
  t0 = performance.now();
  const r = await fetch(url, { method: "PUT", body: f });
  if (!r.ok) throw new Error(`status ${r.status}: ${await r.text()}`);
  return { ms: performance.now() - t0, bytes: f.size };
}

// tus-js-client (loaded as a classic script beside this page) against @tus/server.
async function tusUpload({ endpoint, chunkSize }) {
  const f = file();
  t0 = performance.now();
  const url = await new Promise((ok, fail) => {
    const upload = new window.tus.Upload(f, {
      endpoint,
      chunkSize: chunkSize ?? Infinity,
      retryDelays: [0, 1000, 3000],
      metadata: { filename: f.name },
      storeFingerprintForResuming: false,
      onProgress: (sent) => logProgress(sent),
      onSuccess: () => ok(upload.url),
      onError: fail,
    });
    upload.start();
  });
  return { ms: performance.now() - t0, url, bytes: f.size };
}

window.bench = {
  /** Runs one upload; `base` is the API's origin ("" for this page's own). */
  run(method, options = {}, base = "") {
    progressLog = [];
    if (method === "fetch") return wholeFile(false, base);
    if (method === "xhr") return wholeFile(true, base);
    if (method === "chunkwise") return chunkwise(options, base);
    if (method === "chunkwise-s3") return chunkwiseS3(options, base);
    if (method === "uppy-s3") return uppyS3(options, base);
    if (method === "tus") return tusUpload(options);
    if (method === "chunkwise-tus") return chunkwiseTus(options);
    if (method === "presigned") return presigned(options);
    throw new Error(`unknown method ${method}`);
  },
  wasmBytes: () => wasm.memory.buffer.byteLength,
  progressLog: () => progressLog,
};
window.benchReady = true;
