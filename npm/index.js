// The npm package's entry: the wasm module's exports, and the queue built on them.
import { Upload } from "./chunkwise.js";
import { untilTrap } from "./trap.js";

// A pending upload rejects with code "crashed" if the module traps (npm/trap.js), and a
// call on a dead module rejects at once, instead of throwing synchronously from start().
const { start } = Upload.prototype;
Upload.prototype.start = function () {
  return untilTrap(new Promise((resolve) => resolve(start.call(this))));
};
const { findPrevious } = Upload;
Upload.findPrevious = (source) => untilTrap(new Promise((resolve) => resolve(findPrevious(source))));

export { default, initSync, Upload, UploadGroup } from "./chunkwise.js";
export { UploadQueue } from "./queue.js";
