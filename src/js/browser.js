// chunkwise's browser glue, imported by the wasm: reading and hashing slices, remembering
// uploads in IndexedDB, and sending slices with XMLHttpRequest. One module, not three: an
// unbundled page fetches each module the wasm imports as its own request.

// ---- Reading slices -----------------------------------------------------------------
// Reads a Blob slice into a reused buffer and hashes it, for slices whose digest must be
// known before they are sent. The loop lives in JS because it is one await per piece
// (Chromium hands out 64 KiB to 2 MiB at a time), and each crossing into wasm costs.
//
// A BYOB reader fills the caller's buffer, so reading allocates nothing: with the default
// reader Chromium hands out a fresh ArrayBuffer per piece, and the renderer grew by about
// 96 MiB on a 256 MiB upload waiting for the collector. A BYOB read transfers the buffer,
// so the one handed back is a new object over the same memory.
//
// WebCrypto copies its input when called and hashes natively (SHA-NI where the CPU has
// it) on another thread: several times faster than SHA-256 in wasm.
const subtle = globalThis.crypto?.subtle;

// A read of Chromium's blob stream has, rarely, never settled: once in tens of GiB of
// benchmark uploads a slice's read waited for minutes with nothing in flight, while a fresh
// stream over the same bytes read at once. So a read that makes no progress for
// `stallMs` is abandoned and the slice is read again from a fresh stream, a few times,
// before the upload fails with an error that says so.
const STALL_MS = 10_000;
const MAX_STALLS = 3;

class Stalled extends Error {}

/** Rejects with `Stalled` once a whole `ms` passes without `progress()` being called. */
function watchdog(ms) {
  let progressed = false;
  let timer;
  let fire;
  const stalled = new Promise((_, reject) => {
    fire = reject;
  });
  stalled.catch(() => {}); // raced only while a read is pending
  const check = () => {
    if (progressed) {
      progressed = false;
      timer = setTimeout(check, ms);
    } else {
      fire(new Stalled());
    }
  };
  timer = setTimeout(check, ms);
  return {
    /** `promise`, or a `Stalled` rejection if nothing moves for too long. */
    guard: (promise) => Promise.race([promise, stalled]),
    progress: () => {
      progressed = true;
    },
    stop: () => clearTimeout(timer),
  };
}

/** Gives up on `reader` without waiting for it: a stalled stream may never answer. */
function abandon(reader) {
  reader.cancel().catch(() => {});
  try {
    reader.releaseLock();
  } catch {
    // A pending read may keep the lock; the stream is dropped either way.
  }
}

async function fillOnce(blob, buffer, dog) {
  const length = blob.size;
  const stream = blob.stream();
  let reader;
  try {
    reader = stream.getReader({ mode: "byob" });
  } catch {
    reader = undefined;
  }
  let filled = 0;
  if (reader === undefined) {
    // No BYOB support: copy the default reader's pieces in.
    const target = new Uint8Array(buffer);
    const plain = stream.getReader();
    try {
      for (;;) {
        const { value, done } = await dog.guard(plain.read());
        dog.progress();
        if (done) break;
        if (value.byteLength > length - filled) {
          throw new RangeError("a slice gave more bytes than its length");
        }
        target.set(value, filled);
        filled += value.byteLength;
      }
    } catch (error) {
      abandon(plain);
      throw error;
    }
    plain.releaseLock();
    return { buffer, filled };
  }
  try {
    while (filled < length) {
      const { value, done } = await dog.guard(
        reader.read(new Uint8Array(buffer, filled, length - filled)),
      );
      dog.progress();
      if (value === undefined) throw new TypeError("a BYOB read gave no view back");
      buffer = value.buffer;
      if (done) break;
      filled += value.byteLength;
    }
  } catch (error) {
    abandon(reader);
    throw error;
  }
  // Every byte is in; nobody reads the (empty) rest. Not awaited: Chromium may settle it
  // only much later, and a 4 GiB upload once stalled for minutes waiting on it.
  if (filled >= length) reader.cancel().catch(() => {});
  reader.releaseLock();
  return { buffer, filled };
}

/**
 * `attempt(dog)` under a fresh watchdog, until it ends without stalling. After a stall it
 * warns, awaits `beforeRetry()` and tries again; after `MAX_STALLS` it fails, saying what
 * `describe(seconds)` says stalled.
 */
async function retryStalls(stallMs, describe, attempt, beforeRetry) {
  for (let stalls = 1; ; stalls++) {
    const dog = watchdog(stallMs);
    try {
      return await attempt(dog);
    } catch (error) {
      if (!(error instanceof Stalled)) throw error;
      const stalled = describe(stallMs / 1000);
      if (stalls === MAX_STALLS) throw new Error(`${stalled}, ${MAX_STALLS} times in a row`);
      console.warn(`chunkwise: ${stalled}; trying again`);
    } finally {
      dog.stop();
    }
    await beforeRetry();
  }
}

async function fill(blob, buffer, stallMs) {
  const capacity = buffer.byteLength; // a BYOB read detaches the buffer it is given
  return retryStalls(
    stallMs,
    (seconds) => `reading ${blob.size} bytes of the file made no progress for ${seconds} s`,
    (dog) => fillOnce(blob, buffer, dog),
    () => {
      // The abandoned read still holds the buffer it was given.
      buffer = new ArrayBuffer(capacity);
    },
  );
}

/**
 * Reads `blob` (at most `buffer.byteLength` bytes) into the start of `buffer`, reading it
 * again from a fresh stream when a read stalls for `stallMs` (see above). Resolves
 * with `{ buffer, length, digest }`: the buffer to reuse, the bytes read, and, where
 * WebCrypto exists, a promise of their SHA-256 as an ArrayBuffer (else `null`, and the
 * caller hashes `buffer` itself).
 *
 * The digest is left pending on purpose: WebCrypto takes its copy of the bytes when called,
 * so the buffer is free at once and the next slice can be read while this one is hashed.
 */
export async function readSlice(blob, buffer, stallMs = STALL_MS) {
  const capacity = buffer.byteLength;
  const { buffer: filledBuffer, filled } = await fill(blob, buffer, stallMs);
  let digest = null;
  if (subtle !== undefined) {
    digest = hashWithin(blob, new Uint8Array(filledBuffer, 0, filled), capacity, stallMs);
  }
  return { buffer: filledBuffer, length: filled, digest };
}

/**
 * SHA-256 of `bytes` (the content of `blob`) by WebCrypto, asked for at once. A digest
 * that does not answer within `stallMs` is asked for again, from a fresh read of `blob`:
 * by then the caller's buffer holds the next slice.
 */
function hashWithin(blob, bytes, capacity, stallMs) {
  const expected = bytes.byteLength;
  return retryStalls(
    stallMs,
    (seconds) => `hashing ${blob.size} bytes of the file gave no answer for ${seconds} s`,
    (dog) => dog.guard(subtle.digest("SHA-256", bytes)),
    async () => {
      const { buffer, filled } = await fill(blob, new ArrayBuffer(capacity), stallMs);
      if (filled !== expected) {
        throw new Error(`a slice gave ${filled} bytes instead of ${expected}; was the file changed while uploading?`);
      }
      bytes = new Uint8Array(buffer, 0, filled);
    },
  );
}

// ---- Remembering uploads ------------------------------------------------------------
// Where chunkwise remembers unfinished uploads across page reloads: one IndexedDB object
// store, keyed by endpoint and file fingerprint. Every function degrades to "nothing
// remembered" where IndexedDB is missing or refuses (some private modes), so an upload
// never fails because of it.
const DB_NAME = "chunkwise";
const STORE = "uploads";
let opening;

function open() {
  opening ??= new Promise((resolve) => {
    try {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => resolve(null);
      request.onblocked = () => resolve(null);
    } catch {
      resolve(null);
    }
  });
  return opening;
}

async function run(mode, work) {
  const db = await open();
  if (!db) return undefined;
  return new Promise((resolve) => {
    try {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request?.result);
      tx.onerror = () => resolve(undefined);
      tx.onabort = () => resolve(undefined);
    } catch {
      resolve(undefined);
    }
  });
}

export function resumeGet(key) {
  return run("readonly", (store) => store.get(key));
}

export function resumePut(key, value) {
  return run("readwrite", (store) => store.put(value, key));
}

export function resumeDelete(key) {
  return run("readwrite", (store) => store.delete(key));
}

// ---- One upload of a file at a time, across tabs and workers ------------------------
// A Web Lock (https://w3c.github.io/web-locks/) named by the upload's resume key is held
// for as long as the upload runs, so that two tabs or workers of one site that pick the same
// file for the same endpoint never send its slices at once. The browser releases it when
// the upload ends, and when its tab or worker goes away (a reload, a crash).
const lockName = (key) => `chunkwise:${key}`;
const locks = () => globalThis.navigator?.locks;

/** Resolves with a function that releases the lock on `key` once it is held; with null
 * when another context holds it now; with undefined where there are no Web Locks
 * (insecure contexts, old browsers): nothing to coordinate with then. */
export function lockUpload(key) {
  if (!locks()) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    locks()
      .request(lockName(key), { ifAvailable: true }, (lock) => (lock ? new Promise((release) => resolve(release)) : resolve(null)))
      .catch(() => resolve(undefined));
  });
}

export async function resumeEntries() {
  let held = [];
  try { held = (await locks()?.query())?.held ?? []; } catch {}
  const uploading = new Set(held.map((lock) => lock.name));
  return (await storedEntries()).map(({ key, value }) => ({ key, value: { ...value, uploading: uploading.has(lockName(key)) } }));
}

async function storedEntries() {
  const db = await open();
  if (!db) return [];
  return new Promise((resolve) => {
    try {
      const out = [];
      const tx = db.transaction(STORE, "readonly");
      const cursor = tx.objectStore(STORE).openCursor();
      cursor.onsuccess = () => {
        const c = cursor.result;
        if (!c) return;
        out.push({ key: c.key, value: c.value });
        c.continue();
      };
      tx.oncomplete = () => resolve(out);
      tx.onerror = () => resolve([]);
    } catch {
      resolve([]);
    }
  });
}

// ---- Sending slices -----------------------------------------------------------------
// Sends one slice with XMLHttpRequest, because fetch shows no upload progress
// (https://github.com/whatwg/fetch/issues/607): with XHR the bar moves as bytes leave, and
// a request counts as stalled only when its bytes stop moving. Measured on loopback, an
// 8 MiB Blob slice costs the same through XHR as through fetch. XHR exists in windows and
// dedicated workers; where it does not (service workers) the fetch transport is used.

// Requests whose body has not started to leave, each with a heartbeat. The browser opens
// at most six HTTP/1.1 connections per host, so with several uploads at once a request
// may wait for a connection for as long as another slice takes (minutes on a slow
// uplink). While any request here moves bytes, the waiting ones hear a heartbeat at most
// once a second: waiting behind moving uploads is not a stall.
const waiting = new Set();
let lastBeatMs = 0;

function othersMoved() {
  const now = performance.now();
  if (now - lastBeatMs < 1000) return;
  lastBeatMs = now;
  for (const beat of waiting) beat();
}

/** Whether this global scope has XMLHttpRequest. */
export function hasXhr() {
  return typeof XMLHttpRequest === "function";
}

/**
 * `method url` with `headers` ([name, value, ...]) and `body` (a Blob or a BufferSource).
 * Calls `onSent(bytes)` as the body leaves and on any later sign of life (the answer's
 * headers), and `onSent(0)` while it waits for a connection behind other requests that
 * move. Resolves with `{ status, statusText, retryAfter, text }` for any HTTP answer;
 * rejects with a TypeError when there is none (network error, CORS). `signal` aborts it.
 */
// A response header, if the response lets this page read it. getResponseHeader on a
// header CORS does not expose (an object store's answer) returns null but also logs
// "Refused to get unsafe header" to the console; the list of all headers holds only the
// exposed ones, silently.
function exposedHeader(xhr, name) {
  const line = xhr.getAllResponseHeaders().split("\r\n").find((l) => l.toLowerCase().startsWith(`${name}:`));
  return line ? line.slice(name.length + 1).trim() : null;
}

// A tus PATCH's answer says where the upload now ends. A server that took less than was
// sent is answered as its 409 would be: ask where it stands and go on. Gives those words,
// or null where the answer is where the PATCH ended (or it is no tus PATCH's answer).
function shortOfSent(sentOffset, body, answered) {
  if (sentOffset == null || answered == null) return null;
  const end = String(Number(sentOffset) + (body?.size ?? body?.byteLength ?? 0));
  return answered === end ? null : `the server holds ${answered} bytes after this PATCH, not ${end}`;
}

/** `fetch` (without XMLHttpRequest, as in a service worker), checked as `sendXhr` is. */
export async function fetchChecked(url, init) {
  const response = await fetch(url, init);
  const short = response.ok
    ? shortOfSent(init.headers?.get("upload-offset"), init.body, response.headers.get("upload-offset"))
    : null;
  return short ? new Response(short, { status: 409 }) : response;
}

export function sendXhr(method, url, headers, body, onSent, signal) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let live = true;
    let sent = 0;
    const beat = () => onSent(0);
    const finish = (settle, value) => {
      if (!live) return;
      live = false;
      waiting.delete(beat);
      signal.removeEventListener("abort", abort);
      settle(value);
    };
    const abort = () => {
      finish(reject, new DOMException("the request was aborted", "AbortError"));
      xhr.abort();
    };
    const alive = (bytes) => {
      if (!live) return;
      waiting.delete(beat);
      sent = Math.max(sent, bytes);
      onSent(sent);
      othersMoved();
    };
    xhr.open(method, url);
    let offsetHeader;
    for (let i = 0; i < headers.length; i += 2) {
      xhr.setRequestHeader(headers[i], headers[i + 1]);
      if (headers[i].toLowerCase() === "upload-offset") offsetHeader = headers[i + 1];
    }
    xhr.upload.onprogress = (event) => alive(event.loaded);
    xhr.upload.onload = () => alive(body.size ?? body.byteLength ?? sent);
    xhr.onreadystatechange = () => {
      if (xhr.readyState >= XMLHttpRequest.HEADERS_RECEIVED && sent > 0) alive(sent);
    };
    xhr.onload = () => {
      let { status, statusText, responseText: text } = xhr;
      const short = status < 300 ? shortOfSent(offsetHeader, body, exposedHeader(xhr, "upload-offset")) : null;
      if (short) [status, text] = [409, short];
      finish(resolve, { status, statusText, retryAfter: exposedHeader(xhr, "retry-after"), text });
    };
    xhr.onerror = () => finish(reject, new TypeError(`${method} ${url} failed: no answer (network error or CORS)`));
    xhr.ontimeout = xhr.onerror;
    if (signal.aborted) return abort();
    signal.addEventListener("abort", abort);
    waiting.add(beat);
    xhr.send(body);
  });
}

/**
 * Whether `url` answers at all when CORS is not asked for: after a request to another
 * origin failed without an answer, a `no-cors` fetch that succeeds means the server is up
 * and its CORS rules refused this page. Gives up (false) after `ms`.
 */
export async function answersWithoutCors(url, ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    await fetch(url, { mode: "no-cors", cache: "no-store", signal: controller.signal });
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

// ---- S3 through the app's own backend ------------------------------------------------
// The `s3` option's callbacks as a chunkwise server in the page: `S3Session.fetch` answers
// the requests the wasm's HTTP transport makes in direct mode (create, status, sign,
// complete, delete) by calling the app's callbacks, in the protocol's shapes, and the parts
// go to the store as in direct mode. So the engine, the transport, its part PUT, the
// store's XML errors and the retries are the ones chunkwise-server uploads use; what is
// new is only this adapter (the same logic in Rust, as a second transport, cost the wasm
// 13 KB gzip). An upload's location is a token, "s3:" then its chunk size, size, multipart
// upload id and key, so a resume record holds everything resuming needs.
const CHECKSUM = "x-amz-checksum-sha256";

/** A session's refusal, answered to the transport as chunkwise-server's error body. */
class Refusal extends Error {
  constructor(message, code = "s3_callback", status = 400, headers = undefined) {
    super(message);
    Object.assign(this, { code, status, headers });
  }
}

const refused = (error) => {
  if (!(error instanceof Refusal)) throw error;
  return answer({ error: { code: error.code, message: error.message } }, error.status, error.headers);
};

const isCount = (value) => Number.isSafeInteger(value) && value >= 0;

/** Throws, naming the callback and what is wrong, unless `ok`. */
function expect(ok, name, problem) {
  if (!ok) throw new Refusal(`s3.${name} answered in the wrong shape: ${problem}`);
}

const answer = (value, status = 200, headers) =>
  new Response(value && JSON.stringify(value), { status, headers });

class S3Session {
  constructor(calls) {
    this.calls = calls;
    /** Part number → { sha256, checked } as last signed here. */
    this.signed = new Map();
  }

  /** Answers one of the transport's requests: `url` is "s3:" (create) or a location. */
  async fetch(url, { method, body, signal }) {
    body = JSON.parse(body || "{}");
    try {
      if (url === "s3:") {
        const created = await this.create(body, signal);
        return answer(created, 201, { location: created.location });
      }
      const fields = url.slice(3).split("/").map(decodeURIComponent);
      const [chunkSize, size, uploadId, key, sign] = fields;
      if (!(fields.length > 3 && chunkSize > 0)) {
        throw new Refusal(`${url} is not an upload made with the s3 option`, "not_found", 404);
      }
      const upload = { chunkSize: +chunkSize, size: size === "" ? null : +size, uploadId, key };
      // DELETE: the cancel fired the upload's signal; this request has a signal of its own.
      if (method === "DELETE") return answer(await this.call("abortMultipartUpload", upload, {}, signal), 204);
      if (method === "GET") return answer(await this.status(upload, signal));
      return answer(await (sign ? this.sign(upload, body, signal) : this.complete(upload, body, signal)));
    } catch (error) {
      return refused(error);
    }
  }

  async call(name, { uploadId, key }, args, signal) {
    try {
      return await this.calls[name]({ ...(key && { uploadId, key }), ...args, signal });
    } catch (error) {
      throw new Refusal(`s3.${name} failed: ${error?.message ?? error}`);
    }
  }

  async create({ size = null, chunkSize, metadata = {} }, signal) {
    const name = "createMultipartUpload";
    const made = (await this.call(name, {}, { size, chunkSize, metadata }, signal)) ?? {};
    const chosen = made.chunkSize ?? chunkSize;
    expect(made.uploadId && typeof made.uploadId === "string", name, "uploadId must be a non-empty string");
    expect(made.key && typeof made.key === "string", name, "key must be a non-empty string");
    expect(isCount(chosen), name, "chunkSize must be an integer number of bytes");
    this.signed.clear();
    const location = `s3:${[chosen, size ?? "", made.uploadId, made.key].map(encodeURIComponent).join("/")}`;
    return { id: made.key, chunkSize: chosen, size, protocol: 2, transfer: "direct", location };
  }

  async sign(upload, { slice, size, sha256 }, signal) {
    const name = "signPart";
    const partNumber = slice + 1;
    const { url, headers = {} } = (await this.call(name, upload, { partNumber, size, sha256 }, signal)) ?? {};
    expect(URL.canParse(url), name, `url must be an absolute URL; got ${url}`);
    expect(Object.values(headers).every((v) => typeof v === "string"), name, "headers must be an object of strings");
    // The store checks the part's SHA-256 only when the signature covers it.
    const covers = ([n, v]) => n.toLowerCase() === CHECKSUM && v === sha256;
    const checked = Object.entries(headers).some(covers) || [...new URL(url).searchParams].some(covers);
    this.signed.set(partNumber, { sha256, checked });
    return { url, headers };
  }

  /** The parts the store holds (`listParts`) of the length their place gives them. */
  async parts(upload, signal) {
    const name = "listParts";
    const { chunkSize, size } = upload;
    const listed = await this.call(name, upload, {}, signal);
    expect(Array.isArray(listed), name, "it must return an array of parts");
    const held = new Map();
    for (const part of listed) {
      const { partNumber: n, size: length, sha256 } = part ?? {};
      expect(isCount(n) && isCount(length) && typeof (sha256 ?? "") === "string", name, "each part must be { partNumber, size, sha256? }");
      // A part of another length than its place's is sent again.
      if (n > 0 && length > 0 && length === (size === null ? chunkSize : Math.min(chunkSize, size - (n - 1) * chunkSize))) {
        held.set(n, { size: length, sha256 });
      }
    }
    return held;
  }

  async status(upload, signal) {
    const held = await this.parts(upload, signal);
    const received = [];
    let bytesReceived = 0;
    for (const n of [...held.keys()].sort((a, b) => a - b)) {
      const last = received.at(-1);
      if (last?.[1] === n - 1) last[1] = n;
      else received.push([n - 1, n]);
      bytesReceived += held.get(n).size;
    }
    const { key: id, chunkSize, size } = upload;
    return { id, chunkSize, size, received, bytesReceived, complete: false, protocol: 2, transfer: "direct" };
  }

  async complete(upload, { size, slicesSha256 }, signal) {
    const count = Math.ceil(size / upload.chunkSize);
    const held = await this.parts({ ...upload, size }, signal);
    const parts = [];
    let digests = new Uint8Array(32 * count);
    for (let n = 1; n <= count; n++) {
      const part = held.get(n);
      if (!part) throw new Refusal(`part ${n} of ${count} is not in the store`, "s3_callback", 409);
      const signed = this.signed.get(n);
      // The store checked a part's SHA-256 when it reports one, or when it was signed here.
      const checked = part.sha256 ?? (signed?.checked ? signed.sha256 : "");
      const sha256 = part.sha256 ?? signed?.sha256;
      parts.push({ partNumber: n, size: part.size, ...(sha256 && { sha256 }) });
      let bytes = [];
      try { bytes = Uint8Array.from(atob(checked), (c) => c.charCodeAt(0)); } catch {}
      if (bytes.length === 32) digests?.set(bytes, 32 * (n - 1));
      else digests = null;
    }
    // The digest of what the store checked, when it checked every part.
    let stored = null;
    if (digests && subtle) {
      stored = [...new Uint8Array(await subtle.digest("SHA-256", digests))].map((b) => b.toString(16).padStart(2, "0")).join("");
      if (slicesSha256 && stored !== slicesSha256) {
        throw new Refusal(`the store's parts have digest ${stored} but the file read now has ${slicesSha256}: it changed since the upload began; not completed`, "digest_mismatch", 409);
      }
    }
    const name = "completeMultipartUpload";
    const done = await this.call(name, upload, { parts }, signal);
    expect(done == null || typeof (done.location ?? "") === "string", name, "it must return { location } or nothing");
    return { id: upload.key, size, sha256: null, slicesSha256: stored, location: done?.location ?? upload.key };
  }
}

export const s3Session = (calls) => new S3Session(calls);

// ---- tus 1.0 ------------------------------------------------------------------------
// tus (https://tus.io/protocols/resumable-upload) as a chunkwise server in the page, as
// S3Session does for S3: `TusSession.fetch` answers the transport's create, status, sign,
// complete and delete with tus's POST, HEAD, PATCH and DELETE, and each slice is a PATCH
// that the transport sends as it sends a part (XHR, byte progress, stall and retries). The
// engine sends one slice at a time, in order. After a failed PATCH the next attempt asks
// with HEAD where the upload stands, and sends only what the server lacks.
const TUS_TYPE = "application/offset+octet-stream";

/** base64 of `text`'s UTF-8 bytes, as Upload-Metadata wants its values. */
function base64(text) {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** `body` without its first `skip` bytes: a Blob slice, or a view over the same memory. */
export const restOf = (body, skip) =>
  body instanceof Blob
    ? body.slice(skip)
    : ArrayBuffer.isView(body)
      ? new Uint8Array(body.buffer, body.byteOffset + skip, body.byteLength - skip)
      : new Uint8Array(body, skip);

// The slice size when the app gave none and nothing reads the slices (no checksum to
// compute, a File rather than a stream): a slice is then a Blob slice the browser streams
// from disk, so its size costs no memory, while each PATCH costs the server a round of
// work (8 MiB slices ran at 0.85 of one PATCH on loopback; 64 MiB is within 2%). A cut
// PATCH loses nothing either way: the next goes on from the server's offset.
const TUS_LARGE_SLICE = 64 * 1024 * 1024;

class TusSession {
  constructor(endpoint, pairs, chunkSize, given) {
    this.endpoint = endpoint;
    this.headers = { "Tus-Resumable": "1.0.0" };
    for (let i = 0; i < pairs.length; i += 2) this.headers[pairs[i]] = pairs[i + 1];
    Object.assign(this, { chunkSize, given });
    Object.assign(this, { offset: 0, last: -1, checked: true, deferred: false });
  }

  /** Whether the server checks sha256 (OPTIONS: Tus-Extension, Tus-Checksum-Algorithm). */
  discover(ms) {
    this.checksum ??= globalThis.fetch(this.endpoint, { method: "OPTIONS", signal: AbortSignal.timeout(ms) }).then(
      (response) => {
        const list = (name) => (response.headers.get(name) ?? "").toLowerCase().split(",").map((v) => v.trim());
        return response.ok && list("tus-extension").includes("checksum") && list("tus-checksum-algorithm").includes("sha256");
      },
      () => false,
    );
    return this.checksum;
  }

  async fetch(url, { method, body, signal }) {
    body = JSON.parse(body || "{}");
    try {
      if (method === "POST" && url === this.endpoint) return await this.create(body, signal);
      if (method === "GET") return answer(await this.status(url, signal));
      if (method === "DELETE") {
        await this.request(url, "DELETE", {}, signal, [404, 410]);
        return answer(null, 204);
      }
      if (url.endsWith("/sign")) return answer(await this.sign(url.slice(0, -5), body, signal));
      return answer(await this.complete(url, body, signal));
    } catch (error) {
      return refused(error);
    }
  }

  /** A tus request; an answer that is not 2xx (or in `fine`) is refused in the server's words. */
  async request(url, method, headers, signal, fine = []) {
    const response = await globalThis.fetch(url, { method, headers: { ...this.headers, ...headers }, signal, cache: "no-store" });
    if (response.ok || fine.includes(response.status)) return response;
    const said = (await response.text().catch(() => "")).trim().slice(0, 300);
    const retryAfter = response.headers.get("retry-after");
    throw new Refusal(`${method} ${url} answered ${response.status}${said && `: ${said}`}`, "tus", response.status, retryAfter ? { "retry-after": retryAfter } : undefined);
  }

  /** Where the upload at `url` stands (HEAD): its offset, its length (null if deferred). */
  async head(url, signal) {
    const response = await this.request(url, "HEAD", {}, signal, [404, 410]);
    if (!response.ok) throw new Refusal(`the tus server no longer has ${url} (HEAD answered ${response.status})`, "not_found", 404);
    const number = (name) => {
      const value = response.headers.get(name)?.trim() ?? "";
      return /^\d+$/.test(value) ? Number(value) : null;
    };
    const offset = number("upload-offset");
    if (offset === null) {
      throw new Refusal(`HEAD ${url} gave no Upload-Offset that the page can read: the tus server must send it and expose it (Access-Control-Expose-Headers)`, "protocol", 502);
    }
    this.deferred ||= response.headers.get("upload-defer-length") === "1";
    return { offset, length: number("upload-length") };
  }

  async create({ size = null, metadata = {} }, signal) {
    const headers = size === null ? { "Upload-Defer-Length": "1" } : { "Upload-Length": String(size) };
    const pairs = Object.entries(metadata).map(([key, value]) => (value ? `${key} ${base64(value)}` : key));
    if (pairs.length > 0) headers["Upload-Metadata"] = pairs.join(",");
    const response = await this.request(this.endpoint, "POST", headers, signal);
    const header = response.headers.get("location");
    if (!header) {
      throw new Refusal(`POST ${this.endpoint} gave no Location that the page can read: the tus server must send it and expose it (Access-Control-Expose-Headers)`, "protocol", 502);
    }
    const location = new URL(header, this.endpoint).href;
    Object.assign(this, { offset: 0, last: -1, checked: true, deferred: size === null, completing: false });
    await this.slicing(size);
    return answer({ id: location, chunkSize: this.chunkSize, size, protocol: 2, transfer: "direct" }, 201, { location });
  }

  /** Chooses the slice size for an upload of `size` bytes (null: a stream). */
  async slicing(size) {
    if (!this.given && size !== null && !(await this.checksum)) this.chunkSize = TUS_LARGE_SLICE;
  }

  async status(url, signal) {
    const { offset, length } = await this.head(url, signal);
    await this.slicing(length);
    const { chunkSize } = this;
    const whole = Math.floor(offset / chunkSize);
    // The PATCHes of an earlier page may have gone without checksums (a slice's rest).
    Object.assign(this, { offset, last: -1, checked: offset === 0 });
    const received = whole > 0 ? [[0, whole]] : [];
    const complete = length !== null && offset === length;
    return { id: url, chunkSize, size: length, received, bytesReceived: offset, complete, protocol: 2, transfer: "direct" };
  }

  async sign(url, { slice, size, sha256 }, signal) {
    const start = slice * this.chunkSize;
    if (slice === this.last) {
      // A retry: the attempt before may have left any part of its bytes on the server.
      this.offset = (await this.head(url, signal)).offset;
    } else if (this.last >= 0) {
      this.offset = start; // the slice before went through
    }
    this.last = slice;
    const { offset } = this;
    if (offset < start) {
      throw new Refusal(`the tus server holds ${offset} bytes of ${url}, fewer than the ${start} it had acknowledged: it lost bytes that cannot be read again here`, "protocol", 409);
    }
    const skip = Math.min(offset - start, size);
    const headers = { ...this.headers, "Upload-Offset": String(offset), "Content-Type": TUS_TYPE };
    if (sha256 && (await this.checksum)) {
      if (skip === 0) headers["Upload-Checksum"] = `sha256 ${sha256}`;
      else this.checked = false; // only the slice's rest goes, whose digest is not known here
    }
    return { url, method: "PATCH", headers, skip, end: start + size };
  }

  async complete(url, { size, slicesSha256 }, signal) {
    // Every slice's PATCH was answered with the offset it should have ended at (checked in
    // sendXhr), so the server holds `size` bytes; only a deferred length is left to give.
    if (this.deferred) {
      // A retry: the PATCH before may have given the length already.
      const { length } = this.completing ? await this.head(url, signal) : { length: null };
      this.completing = true;
      if (length === null) {
        const end = String(size);
        await this.request(url, "PATCH", { "Upload-Offset": end, "Upload-Length": end, "Content-Type": TUS_TYPE }, signal);
      }
    }
    const checked = this.checked && (await this.checksum) === true;
    return { id: url, size, sha256: null, slicesSha256: checked ? slicesSha256 : null, location: url };
  }
}

export const tusSession = (...args) => new TusSession(...args);
