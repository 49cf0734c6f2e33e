// The page of a Vite app that uses chunkwise from npm, as its README shows.
import init, { Upload, UploadQueue } from "chunkwise";

const ready = init();
const files = () => [...document.getElementById("files").files];
const plain = (error) => ({ name: error.name, code: error.code, message: error.message });

window.app = {
  async uploadInPage(endpoint) {
    await ready;
    try {
      return { result: await new Upload(files()[0], { endpoint }).start() };
    } catch (error) {
      return { error: plain(error) };
    }
  },
  uploadInWorker(endpoint) {
    const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
    worker.postMessage({ endpoint, file: files()[0] });
    return new Promise((resolve) => {
      worker.onmessage = (event) => { resolve(event.data); worker.terminate(); };
      worker.onerror = (event) => resolve({ error: { name: "WorkerError", message: event.message } });
    });
  },
  async uploadAll(endpoint) {
    await ready;
    const queue = new UploadQueue({ endpoint, maxInFlight: 3 });
    queue.add(files());
    const items = await queue.done();
    return items.map((item) => ({ path: item.path, state: item.state, id: item.result?.id, error: item.error && plain(item.error) }));
  },
};
