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

export async function resumeEntries() {
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
