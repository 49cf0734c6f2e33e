// The npm package's entry: the wasm module's exports, and the queue built on them.
export { default, initSync, Upload, UploadGroup } from "./chunkwise.js";
export { UploadQueue } from "./queue.js";
