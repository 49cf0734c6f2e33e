// The page the other engines' tests drive (tests/e2e/firefox.test.mjs, webkit.test.mjs):
// the package as users load it, and a few globals the tests call.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A directory with the page (index.html) and a module worker (worker.mjs). */
export function pageDir() {
  const dir = mkdtempSync(join(tmpdir(), "chunkwise-engine-"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<input type="file" id="file" multiple>
<script type="module">
import init, { Upload, UploadQueue } from "/pkg/index.js";
await init();
const plain = (error) => ({ name: error.name, code: error.code, status: error.status, message: error.message });
window.files = () => [...document.getElementById("file").files];
window.begin = (source, options) => {
  window.__log = [];
  window.__upload = new Upload(source, { ...options, onProgress: (p) => { window.__log.push([p.bytesSent, p.bytesAcknowledged]); } });
  window.__outcome = window.__upload.start().then((result) => ({ result }), (error) => ({ error: plain(error) }));
};
window.previous = () => Upload.findPrevious(window.files()[0]);
window.queue = async (endpoint) => {
  const queue = new UploadQueue({ endpoint, maxInFlight: 3 });
  queue.add(window.files());
  return (await queue.done()).map((i) => ({ path: i.path, state: i.state, id: i.result?.id, error: i.error && plain(i.error) }));
};
window.inWorker = (endpoint) => new Promise((resolve) => {
  const worker = new Worker("/worker.mjs", { type: "module" });
  worker.onmessage = ({ data }) => { worker.terminate(); resolve(data); };
  worker.onerror = (e) => resolve({ error: { message: e.message } });
  worker.postMessage({ file: window.files()[0], endpoint });
});
document.body.dataset.ready = "true";
</script>`);
  writeFileSync(join(dir, "worker.mjs"), `import init, { Upload } from "/pkg/index.js";
onmessage = async ({ data: { file, endpoint } }) => {
  await init();
  try { postMessage({ result: await new Upload(file, { endpoint }).start() }); }
  catch (error) { postMessage({ error: { name: error.name, code: error.code, message: error.message } }); }
};`);
  return dir;
}
