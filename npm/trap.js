// What the page sees when the wasm module traps.
//
// The package is built with panics that trap at once (no unwinding, no message: see
// docs/size.md), and a trap leaves the instance's memory in an unknown state, so nothing
// may run in it again. Every call into the module goes through `guard`: the first
// `WebAssembly.RuntimeError` marks the module dead, every `start()` still pending rejects
// (`untilTrap`), and every later call throws the same `UploadError` with code "crashed"
// instead of running, or hanging on a promise nobody will settle.

let trap = null;
let rejectPending;
const pending = new Promise((_, reject) => { rejectPending = reject; });
pending.catch(() => {}); // only ever raced: never an unhandled rejection of its own

/** The UploadError a trap becomes. */
function crashed(cause) {
  const error = new Error(
    "chunkwise stopped at an internal error (a WebAssembly trap) and cannot run again in this " +
      "page or worker: reload it to upload again (an upload with resume on continues where it stopped)",
    { cause },
  );
  error.name = "UploadError";
  error.code = "crashed";
  return error;
}

/** The trap's UploadError once the module trapped, else null. */
export const trapped = () => trap;

/** Settles as `promise` does, or rejects with the trap's UploadError once the module traps. */
export const untilTrap = (promise) => (trap ? Promise.reject(trap) : Promise.race([promise, pending]));

/** The module's exports, each function wrapped (the glue's `wasm`; see scripts/build). */
export function guard(exports) {
  const guarded = {};
  for (const [name, value] of Object.entries(exports)) {
    if (typeof value !== "function") {
      guarded[name] = value;
      continue;
    }
    // Freeing an object or a closure of a dead instance is nothing to do, not an error:
    // cleanup code (the queue settling an item, a FinalizationRegistry) must go on.
    const release = name.endsWith("_free") || name.includes("destroy_closure");
    guarded[name] = function (...args) {
      if (trap) {
        if (release) return undefined;
        throw trap;
      }
      try {
        return value.apply(this, args);
      } catch (error) {
        if (!(error instanceof WebAssembly.RuntimeError)) throw error;
        trap = crashed(error);
        rejectPending(trap);
        throw trap;
      }
    };
  }
  return guarded;
}
