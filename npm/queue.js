// UploadQueue: many files under one limit of slice requests in flight.
//
// Each file is one `Upload` made through one `UploadGroup`, whose slots are granted first
// come, first served across files (in Rust, chunkwise-core's `Slots`). The queue decides
// only which files run: at most `maxActiveFiles` at once, in the order they were added, so
// memory is bounded by the limits, not by the number of files.
import { UploadGroup } from "./chunkwise.js";
import { trapped } from "./trap.js";

const QUEUE_OPTIONS = ["maxInFlight", "maxActiveFiles", "metadata", "onProgress", "onFileChange"];
const NOT_PER_FILE = ["onSlice", "signal", "resumeFrom", "size"];
const REPORT_EVERY_MS = 50;

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return `a ${value.constructor?.name ?? "object"}`;
  return `a ${typeof value}`;
}

function integerOption(options, name, low, high, fallback) {
  const value = options[name];
  if (value === undefined) return fallback;
  if (typeof value !== "number") {
    throw new TypeError(`UploadQueue: ${name} must be a number, an integer from ${low} to ${high}; got ${describe(value)}`);
  }
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new RangeError(`UploadQueue: ${name} must be an integer from ${low} to ${high}; got ${value}`);
  }
  return value;
}

function emptyProgress(size) {
  return {
    bytesSent: 0, bytesAcknowledged: 0, bytesTotal: size, slicesDone: 0, slicesTotal: null,
    inFlight: 0, bytesPerSecond: 0, etaSeconds: null,
  };
}

/** One file of an `UploadQueue`. */
class QueueItem {
  #queue;
  #controller = new AbortController();

  constructor(queue, id, file, path) {
    this.#queue = queue;
    /** Position in the queue, from 0. */
    this.id = id;
    this.file = file;
    /** The path inside a dropped folder (`photos/2024/a.jpg`), else the file's name. */
    this.path = path;
    this.size = file.size;
    /** "queued" | "uploading" | "done" | "failed" | "cancelled" */
    this.state = "queued";
    this.progress = emptyProgress(file.size);
    this.result = null;
    this.error = null;
    /** The upload's URL on the server, once created. */
    this.location = null;
    /** The running `Upload`, while uploading. */
    this.upload = null;
  }

  get signal() {
    return this.#controller.signal;
  }

  /** Cancels this file: a queued file never starts, a running one is aborted and deleted. */
  cancel() {
    if (this.state === "done" || this.state === "failed" || this.state === "cancelled") return;
    this.#controller.abort();
    if (this.state === "queued") this.#queue._settle(this, "cancelled", null);
  }
}

/**
 * Uploads many files with one limit of slice requests in flight across all of them.
 * Files start in the order they were added, at most `maxActiveFiles` at once; slots go to
 * the file that has waited longest, so small files are not starved behind a big one.
 * One file's failure does not stop the others.
 */
export class UploadQueue {
  #group;
  #perFile;
  #metadata;
  #maxActiveFiles;
  #onProgress;
  #onFileChange;
  #items = [];
  #next = 0;
  #active = 0;
  #paused = false;
  #waiters = [];
  #reportTimer = null;
  #rate = { at: 0, sent: 0, bytesPerSecond: 0 };

  constructor(options) {
    if (options === null || typeof options !== "object" || Array.isArray(options)) {
      throw new TypeError(`UploadQueue: options must be an object with at least an endpoint; got ${describe(options)}`);
    }
    for (const name of NOT_PER_FILE) {
      if (options[name] !== undefined) {
        throw new TypeError(`UploadQueue: ${name} is an option of a single Upload, not of a queue`);
      }
    }
    const maxInFlight = integerOption(options, "maxInFlight", 1, 64, 6);
    this.#maxActiveFiles = integerOption(options, "maxActiveFiles", 1, 1000, maxInFlight + 2);
    const { metadata, onProgress, onFileChange } = options;
    if (metadata !== undefined && typeof metadata !== "function" && (metadata === null || typeof metadata !== "object")) {
      throw new TypeError(`UploadQueue: metadata must be an object of strings or a function (file, path) => object; got ${describe(metadata)}`);
    }
    for (const [name, fn] of [["onProgress", onProgress], ["onFileChange", onFileChange]]) {
      if (fn !== undefined && typeof fn !== "function") {
        throw new TypeError(`UploadQueue: ${name} must be a function; got ${describe(fn)}`);
      }
    }
    this.#metadata = metadata;
    this.#onProgress = onProgress;
    this.#onFileChange = onFileChange;
    this.#group = new UploadGroup(maxInFlight);
    const perFile = { maxInFlight: Math.min(4, maxInFlight) };
    for (const [name, value] of Object.entries(options)) {
      if (!QUEUE_OPTIONS.includes(name)) perFile[name] = value;
    }
    this.#perFile = perFile;
    // Every per-file option is checked now, by the Upload that would use it.
    this.#group.upload(new Blob([]), { ...perFile, metadata: typeof metadata === "object" ? metadata : undefined }).free();
  }

  /**
   * Adds files (a File, a Blob, a FileList or any iterable of them, or of `{ file, path }`
   * as `UploadQueue.filesIn` finds them) and starts them in turn. Returns their items.
   * Throws a TypeError naming the first item that is not a File or Blob, and then adds none.
   */
  add(files) {
    const list = files instanceof Blob ? [files] : files;
    if (list == null || typeof list[Symbol.iterator] !== "function" || typeof list === "string") {
      throw new TypeError(`UploadQueue.add takes a File, a Blob, a FileList or an array of them; got ${describe(files)}`);
    }
    const entries = [];
    let index = 0;
    for (const entry of list) {
      const withPath = entry !== null && typeof entry === "object" && !(entry instanceof Blob) && "file" in entry;
      const [file, path] = withPath ? [entry.file, entry.path] : [entry, undefined];
      if (path !== undefined && typeof path !== "string") {
        throw new TypeError(`UploadQueue.add: item ${index}'s path must be a string; got ${describe(path)}`);
      }
      if (!(file instanceof Blob)) {
        throw new TypeError(`UploadQueue.add: item ${index} is ${describe(file)}, not a File or Blob`);
      }
      entries.push([file, path ?? (file.webkitRelativePath || file.name || `blob-${this.#items.length + index}`)]);
      index += 1;
    }
    const first = this.#items.length;
    const added = entries.map(([file, path], i) => new QueueItem(this, first + i, file, path));
    for (const item of added) this.#items.push(item);
    this.#pump();
    this.#report();
    return added;
  }

  /**
   * Adds what was dropped (`event.dataTransfer`), folders walked to every file inside, with
   * its path. An empty folder adds nothing.
   */
  async addDropped(dataTransfer) {
    return this.add(await UploadQueue.filesIn(dataTransfer));
  }

  /**
   * Every file in what was dropped (`event.dataTransfer`), folders walked, as
   * `{ file, path }`. Call it in the drop handler itself: the browser empties the
   * DataTransfer once the handler returns, though walking may finish later.
   */
  static filesIn(dataTransfer) {
    if (!(dataTransfer instanceof DataTransfer)) {
      throw new TypeError(`UploadQueue.filesIn takes a DataTransfer (event.dataTransfer); got ${describe(dataTransfer)}`);
    }
    // Entries must be taken synchronously, while the drop event runs.
    const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
    if (entries.length === 0) {
      return Promise.resolve([...dataTransfer.files].map((file) => ({ file, path: file.name })));
    }
    return (async () => {
      const found = [];
      for (const entry of entries) await walk(entry, found);
      return found;
    })();
  }

  /** Every item, in the order added. */
  get items() {
    return this.#items.slice();
  }

  /** Totals over every item that is not cancelled. */
  get progress() {
    const total = {
      files: 0, filesDone: 0, filesFailed: 0, filesCancelled: 0,
      bytesTotal: 0, bytesSent: 0, bytesAcknowledged: 0,
      inFlight: trapped() ? 0 : this.#group.inFlight, bytesPerSecond: 0, etaSeconds: null,
    };
    for (const item of this.#items) {
      total.files += 1;
      if (item.state === "cancelled") { total.filesCancelled += 1; continue; }
      if (item.state === "done") total.filesDone += 1;
      if (item.state === "failed") total.filesFailed += 1;
      total.bytesTotal += item.size;
      total.bytesSent += item.progress.bytesSent;
      total.bytesAcknowledged += item.progress.bytesAcknowledged;
    }
    const now = performance.now();
    const rate = this.#rate;
    if (now - rate.at >= 1000 || rate.at === 0) {
      if (rate.at !== 0) {
        const instant = Math.max(0, total.bytesSent - rate.sent) / ((now - rate.at) / 1000);
        rate.bytesPerSecond = rate.bytesPerSecond === 0 ? instant : 0.7 * rate.bytesPerSecond + 0.3 * instant;
      }
      rate.at = now;
      rate.sent = total.bytesSent;
    }
    total.bytesPerSecond = rate.bytesPerSecond;
    if (rate.bytesPerSecond > 0) total.etaSeconds = (total.bytesTotal - total.bytesSent) / rate.bytesPerSecond;
    return total;
  }

  /** Whether the queue is paused. */
  get paused() {
    return this.#paused;
  }

  /** Stops starting requests in every file; requests in flight finish. */
  pause() {
    this.#paused = true;
    for (const item of this.#items) item.upload?.pause();
  }

  /** Starts requests again, and queued files. */
  resume() {
    this.#paused = false;
    for (const item of this.#items) item.upload?.resume();
    this.#pump();
  }

  /** Cancels every file not finished yet. */
  cancel() {
    for (const item of this.#items) item.cancel();
  }

  /**
   * Resolves with every item once none is queued or uploading. It never rejects: each
   * item's `state`, `result` and `error` say how it ended.
   */
  done() {
    if (this.#settled()) return Promise.resolve(this.items);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #settled() {
    return this.#active === 0 && this.#items.every((item) => item.state !== "queued");
  }

  #pump() {
    while (!this.#paused && this.#active < this.#maxActiveFiles && this.#next < this.#items.length) {
      const item = this.#items[this.#next++];
      if (item.state === "queued") this.#run(item);
    }
    if (this.#settled() && this.#waiters.length > 0) {
      const waiters = this.#waiters.splice(0);
      for (const resolve of waiters) resolve(this.items);
    }
  }

  async #run(item) {
    this.#active += 1;
    item.state = "uploading";
    try {
      const metadata = typeof this.#metadata === "function"
        ? this.#metadata(item.file, item.path)
        : {
          name: item.file.name ?? item.path,
          path: item.path,
          ...(item.file.type ? { type: item.file.type } : {}),
          ...this.#metadata,
        };
      item.upload = this.#group.upload(item.file, {
        ...this.#perFile,
        metadata,
        signal: item.signal,
        onProgress: (progress) => {
          item.progress = progress;
          this.#changed(item);
        },
      });
      if (this.#paused) item.upload.pause();
      this.#changed(item);
      const result = await item.upload.start();
      item.progress = { ...item.progress, bytesSent: item.size, bytesAcknowledged: item.size, inFlight: 0 };
      this._settle(item, "done", result);
    } catch (error) {
      this._settle(item, item.signal.aborted ? "cancelled" : "failed", error);
    }
  }

  // Ends an item once; called by the queue and by `QueueItem.cancel`.
  _settle(item, state, outcome) {
    if (item.state !== "queued" && item.state !== "uploading") return;
    const wasRunning = item.state === "uploading";
    item.state = state;
    if (state === "done") item.result = outcome;
    else if (state === "failed") item.error = outcome;
    if (state !== "done") item.progress = { ...item.progress, bytesSent: item.progress.bytesAcknowledged, inFlight: 0 };
    // After a trap (npm/trap.js) the upload's getters throw; its location is then unknown.
    if (!trapped()) item.location = item.upload?.location ?? item.location;
    item.upload?.free();
    item.upload = null;
    if (wasRunning) this.#active -= 1;
    this.#changed(item);
    this.#pump();
  }

  #changed(item) {
    if (this.#onFileChange) {
      try { this.#onFileChange(item); } catch (error) { console.error("chunkwise: onFileChange threw", error); }
    }
    this.#report();
  }

  #report() {
    if (!this.#onProgress || this.#reportTimer !== null) return;
    this.#reportTimer = setTimeout(() => {
      this.#reportTimer = null;
      try { this.#onProgress(this.progress); } catch (error) { console.error("chunkwise: onProgress threw", error); }
    }, REPORT_EVERY_MS);
  }
}

// Collects { file, path } for every file under a FileSystemEntry.
async function walk(entry, found) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push({ file, path: entry.fullPath.replace(/^\//, "") });
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  // readEntries answers in batches (100 in Chromium) until an empty one.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return;
    for (const child of batch) await walk(child, found);
  }
}
