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
