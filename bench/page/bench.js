// Upload methods measured side by side. Each resolves with { ms, sha256?, bytes }.
import init, { Upload } from "/pkg/chunkwise.js";

const wasm = await init();
const file = () => document.getElementById("file").files[0];

async function wholeFile(useXhr) {
  const f = file();
  const created = await fetch("/uploads", {
    method: "POST",
    body: JSON.stringify({ chunkSize: Math.max(f.size, 1), size: f.size }),
  }).then((r) => r.json());
  const url = `/uploads/${created.id}/slices/0`;
  const t0 = performance.now();
  if (f.size > 0) {
    if (useXhr) {
      await new Promise((ok, fail) => {
        const xhr = new XMLHttpRequest();
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
  const done = await fetch(`/uploads/${created.id}/complete`, { method: "POST", body: "{}" }).then((r) => r.json());
  const ms = performance.now() - t0;
  console.log(`put ${putMs.toFixed(0)} ms, complete ${(ms - putMs).toFixed(0)} ms`);
  return { ms: putMs, completeMs: ms - putMs, sha256: done.sha256, bytes: f.size, id: created.id };
}

async function chunkwise(options) {
  const f = file();
  const t0 = performance.now();
  const result = await new Upload(f, { endpoint: "/uploads", ...options }).start();
  return { ms: performance.now() - t0, sha256: result.sha256, bytes: f.size, id: result.id };
}

// tus-js-client (loaded as a classic script beside this page) against @tus/server.
async function tusUpload({ endpoint, chunkSize }) {
  const f = file();
  const t0 = performance.now();
  const url = await new Promise((ok, fail) => {
    const upload = new window.tus.Upload(f, {
      endpoint,
      chunkSize: chunkSize ?? Infinity,
      retryDelays: [0, 1000, 3000],
      metadata: { filename: f.name },
      storeFingerprintForResuming: false,
      onSuccess: () => ok(upload.url),
      onError: fail,
    });
    upload.start();
  });
  return { ms: performance.now() - t0, url, bytes: f.size };
}

window.bench = {
  run(method, options = {}) {
    if (method === "fetch") return wholeFile(false);
    if (method === "xhr") return wholeFile(true);
    if (method === "chunkwise") return chunkwise(options);
    if (method === "tus") return tusUpload(options);
    throw new Error(`unknown method ${method}`);
  },
  wasmBytes: () => wasm.memory.buffer.byteLength,
};
window.benchReady = true;
