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

/** Whether WebCrypto can hash here (secure contexts only). */
export function nativeDigest() {
  return subtle !== undefined;
}

async function fill(blob, buffer) {
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
    for (;;) {
      const { value, done } = await plain.read();
      if (done) break;
      if (value.byteLength > length - filled) {
        await plain.cancel();
        throw new RangeError("a slice gave more bytes than its length");
      }
      target.set(value, filled);
      filled += value.byteLength;
    }
    return { buffer, filled };
  }
  try {
    while (filled < length) {
      const { value, done } = await reader.read(new Uint8Array(buffer, filled, length - filled));
      if (value === undefined) throw new TypeError("a BYOB read gave no view back");
      buffer = value.buffer;
      if (done) break;
      filled += value.byteLength;
    }
    // Every byte is in; nobody reads the (empty) rest. Not awaited: Chromium may settle
    // it only much later, and a 4 GiB upload once stalled for minutes waiting on it.
    if (filled >= length) reader.cancel().catch(() => {});
  } finally {
    reader.releaseLock();
  }
  return { buffer, filled };
}

/**
 * Reads `blob` (at most `buffer.byteLength` bytes) into the start of `buffer`. Resolves
 * with `{ buffer, length, digest }`: the buffer to reuse, the bytes read, and, when `hash`
 * is set and WebCrypto exists, a promise of their SHA-256 as an ArrayBuffer (else `null`,
 * and the caller hashes `buffer` itself).
 *
 * The digest is left pending on purpose: WebCrypto takes its copy of the bytes when called,
 * so the buffer is free at once and the next slice can be read while this one is hashed.
 */
export async function readSlice(blob, buffer, hash) {
  const { buffer: filledBuffer, filled } = await fill(blob, buffer);
  let digest = null;
  if (hash && subtle !== undefined) {
    digest = subtle.digest("SHA-256", new Uint8Array(filledBuffer, 0, filled));
  }
  return { buffer: filledBuffer, length: filled, digest };
}
