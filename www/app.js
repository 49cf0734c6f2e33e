// The chunkwise demo: pick a file, upload it, watch slices, speed and memory. Several files
// or a folder go through one UploadQueue, with a bar per file.
import init, { Upload, UploadQueue } from "./pkg/index.js";

const $ = (id) => document.getElementById(id);
const MAX_CELLS = 1024;
const STATES = ["pending", "reading", "sending", "retrying", "done"];
const STATE_INDEX = Object.fromEntries(STATES.map((s, i) => [s, i]));
const ERROR_WORDS = {
  network: "The server could not be reached, even after retrying.",
  http_status: "The server refused the upload.",
  digest_mismatch: "The bytes the server stored differ from the file: the digests do not match.",
  aborted: "Cancelled. The partial upload was deleted on the server.",
  source_read: "The file could not be read. Was it moved or changed while uploading?",
  size_mismatch: "The file's length changed while it was being read.",
  stalled: "The server stopped answering.",
  protocol: "The server's answer was not what chunkwise expects.",
  invalid_state: "This upload was already started.",
};

let wasm;
let file = null;
// Several files (or a folder): [{ file, path }], uploaded by `queue`.
let many = null;
let queue = null;
let controller = null;
let upload = null;
let map = null;
let peakInFlight = 0;
const sending = new Set();

function formatBytes(n) {
  if (n == null) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : n < 10 ? 2 : 1)} ${units[i]}`;
}
const formatRate = (bytesPerSecond) => `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
function formatDuration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
}

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === "uploading" || state === "paused";
  $("start").disabled = busy || !(file || many?.length);
  $("cancel").disabled = !busy;
  $("pause").disabled = state !== "uploading";
  $("resume").disabled = state !== "paused";
  for (const id of ["file", "folder", "chunk-size", "max-in-flight", "digest"]) $(id).disabled = busy;
}

function busy() {
  return document.body.dataset.state === "uploading" || document.body.dataset.state === "paused";
}

// One file: the slice map. Several, or any folder: the list.
function chooseFiles(entries, fromFolder) {
  if (busy()) return;
  if (entries.length === 1 && !fromFolder) return chooseFile(entries[0].file);
  file = null;
  many = entries;
  const total = entries.reduce((sum, e) => sum + e.file.size, 0);
  $("file-info").textContent = entries.length === 0
    ? "The folder is empty: nothing to upload."
    : `${entries.length.toLocaleString("en")} files — ${formatBytes(total)}`;
  $("result").hidden = true;
  $("error").hidden = true;
  $("previous").hidden = true;
  $("map-section").hidden = true;
  buildList(entries);
  setState(entries.length ? "ready" : "idle");
  $("start").disabled = entries.length === 0;
}

const rows = new Map();
const dirtyRows = new Set();
function buildList(entries) {
  const list = $("queue-list");
  list.replaceChildren();
  rows.clear();
  $("queue-section").hidden = false;
  $("queue-summary").textContent = "";
  for (const [i, { file: f, path }] of entries.entries()) {
    const li = document.createElement("li");
    li.dataset.state = "queued";
    const name = Object.assign(document.createElement("span"), { className: "path", textContent: path, title: path });
    const bar = Object.assign(document.createElement("progress"), { max: 1, value: 0 });
    const state = Object.assign(document.createElement("span"), { className: "state", textContent: `queued, ${formatBytes(f.size)}` });
    li.append(name, bar, state);
    list.append(li);
    rows.set(i, { li, bar, state });
  }
}

function paintRows() {
  for (const item of dirtyRows) {
    const row = rows.get(item.id);
    if (!row) continue;
    const p = item.progress;
    row.li.dataset.state = item.state;
    row.bar.value = item.size ? p.bytesSent / item.size : item.state === "done" ? 1 : 0;
    row.state.textContent = item.state === "uploading" ? `${formatBytes(p.bytesSent)} of ${formatBytes(item.size)}`
      : item.state === "failed" ? `failed: ${item.error?.code ?? "error"}`
      : item.state;
    if (item.state === "failed") row.state.title = item.error?.message ?? "";
  }
  dirtyRows.clear();
}

function onFileChange(item) {
  if (dirtyRows.size === 0) requestAnimationFrame(paintRows);
  dirtyRows.add(item);
}

async function startQueue() {
  $("result").hidden = true;
  $("error").hidden = true;
  buildList(many);
  let created;
  try {
    created = new UploadQueue({
      endpoint: "/uploads",
      chunkSize: Number($("chunk-size").value),
      maxInFlight: Number($("max-in-flight").value),
      digest: $("digest").checked ? "sha-256" : "none",
      onProgress: (total) => {
        onProgress(total);
        $("in-flight").value = total.inFlight;
        peakInFlight = Math.max(peakInFlight, total.inFlight);
        $("peak-in-flight").value = peakInFlight;
        $("queue-summary").textContent = `(${total.filesDone} done, ${total.filesFailed} failed of ${total.files})`;
      },
      onFileChange,
    });
  } catch (error) {
    showError({ code: "options", message: error.message });
    return;
  }
  queue = created;
  peakInFlight = 0;
  $("max-shown").value = $("max-in-flight").value;
  setState("uploading");
  const started = performance.now();
  queue.add(many);
  const items = await queue.done();
  for (const item of items) dirtyRows.add(item);
  paintRows();
  onProgress(queue.progress);
  $("in-flight").value = 0;
  const failed = items.filter((i) => i.state === "failed").length;
  const cancelled = items.filter((i) => i.state === "cancelled").length;
  const done = items.length - failed - cancelled;
  const seconds = (performance.now() - started) / 1000;
  $("queue-summary").textContent = `(${done} done, ${failed} failed, ${cancelled} cancelled, in ${seconds.toFixed(1)} s)`;
  if (failed) showError({ code: "queue", message: `${failed} of ${items.length} files failed; the others are stored. Hover a row for why.` });
  setState(cancelled === items.length ? "cancelled" : failed ? "error" : "done");
  queue = null;
}

function chooseFile(chosen) {
  if (!chosen || busy()) return;
  file = chosen;
  many = null;
  $("queue-section").hidden = true;
  $("map-section").hidden = false;
  $("file-info").textContent = `${file.name} — ${formatBytes(file.size)} (${file.size.toLocaleString("en")} bytes)`;
  $("result").hidden = true;
  $("error").hidden = true;
  setState("ready");
  buildMap(Math.ceil(file.size / Number($("chunk-size").value)));
  showPrevious(file);
}

// Tells the person when this file was partly uploaded before (after a reload, say).
async function showPrevious(chosen) {
  $("previous").hidden = true;
  const previous = await Upload.findPrevious(chosen);
  if (chosen !== file || previous.length === 0) return;
  const p = previous[0];
  const done = p.bytesReceived == null ? "" : `: ${formatBytes(p.bytesReceived)} of ${formatBytes(p.size)} already on the server`;
  $("previous").textContent = `This file was partly uploaded before${done}. Start continues that upload and sends only the rest.`;
  $("previous").hidden = false;
}

// One cell per slice, or per group of slices once there are more than MAX_CELLS.
function buildMap(slices) {
  const group = Math.max(1, Math.ceil(slices / MAX_CELLS));
  const cells = Math.ceil(slices / group);
  const root = $("slice-map");
  root.replaceChildren();
  const elements = [];
  for (let c = 0; c < cells; c++) {
    const cell = document.createElement("i");
    const first = c * group, last = Math.min(slices, first + group) - 1;
    cell.title = first === last ? `slice ${first}` : `slices ${first}–${last}`;
    root.append(cell);
    elements.push(cell);
  }
  map = { slices, group, elements, states: new Uint8Array(slices), counts: new Uint32Array(cells * STATES.length), dirty: new Set() };
  for (let c = 0; c < cells; c++) map.counts[c * STATES.length] = Math.min(slices, (c + 1) * group) - c * group;
  $("map-scale").textContent = slices === 0 ? "(an empty file has no slices)" : group === 1 ? `(${slices})` : `(${slices} slices, ${group} per cell)`;
}

function setSliceState(index, state) {
  if (!map || index >= map.slices) return;
  const cell = Math.floor(index / map.group);
  const base = cell * STATES.length;
  map.counts[base + map.states[index]]--;
  map.states[index] = STATE_INDEX[state];
  map.counts[base + map.states[index]]++;
  if (map.dirty.size === 0) requestAnimationFrame(paintMap);
  map.dirty.add(cell);
}

function paintMap() {
  for (const cell of map.dirty) {
    const base = cell * STATES.length;
    const size = Math.min(map.slices, (cell + 1) * map.group) - cell * map.group;
    const count = (s) => map.counts[base + STATE_INDEX[s]];
    const state = count("retrying") ? "retrying" : count("sending") ? "sending" : count("reading") ? "reading"
      : count("done") === size ? "done" : "pending";
    map.elements[cell].className = state;
  }
  map.dirty.clear();
}

function onSlice({ index, state }) {
  if (state === "sending") sending.add(index); else sending.delete(index);
  peakInFlight = Math.max(peakInFlight, sending.size);
  $("in-flight").value = sending.size;
  $("peak-in-flight").value = peakInFlight;
  setSliceState(index, state);
}

function onProgress(p) {
  const fraction = p.bytesTotal ? p.bytesSent / p.bytesTotal : p.bytesTotal === 0 ? 1 : 0;
  $("progress").value = fraction;
  $("percent").textContent = `${(fraction * 100).toFixed(1)}%`;
  $("bytes").textContent = `${formatBytes(p.bytesSent)} of ${formatBytes(p.bytesTotal)} sent, ${formatBytes(p.bytesAcknowledged ?? p.bytesSent)} stored`;
  $("speed").textContent = formatRate(p.bytesPerSecond);
  $("eta").textContent = `ETA ${formatDuration(p.etaSeconds)}`;
}

function showMemory() {
  const parts = [];
  if (wasm) parts.push(`wasm ${formatBytes(wasm.memory.buffer.byteLength)}`);
  if (performance.memory) parts.push(`JS heap ${formatBytes(performance.memory.usedJSHeapSize)}`);
  $("memory").textContent = `Memory: ${parts.join(", ") || "not reported by this browser"}`;
}

function showError(error) {
  const words = ERROR_WORDS[error.code] ?? "The upload failed.";
  const status = error.status ? ` (HTTP ${error.status})` : "";
  if (error.code === "aborted") $("previous").hidden = true;
  $("error").textContent = error.code === "aborted" ? words : `${words}${status} ${error.message}`;
  $("error").hidden = false;
}

async function start() {
  if (many) return startQueue();
  if (!file) return;
  $("result").hidden = true;
  $("error").hidden = true;
  const chunkSize = Number($("chunk-size").value);
  const maxInFlight = Number($("max-in-flight").value);
  buildMap(Math.ceil(file.size / chunkSize));
  sending.clear();
  peakInFlight = 0;
  $("peak-in-flight").value = 0;
  $("max-shown").value = maxInFlight;
  onProgress({ bytesSent: 0, bytesTotal: file.size, bytesPerSecond: 0, etaSeconds: null });
  controller = new AbortController();
  $("previous").hidden = true;
  try {
    upload = new Upload(file, {
      endpoint: "/uploads",
      chunkSize,
      maxInFlight,
      digest: $("digest").checked ? "sha-256" : "none",
      metadata: { name: file.name, type: file.type || "application/octet-stream" },
      onProgress,
      onSlice,
      signal: controller.signal,
    });
  } catch (error) {
    // A TypeError or RangeError naming the option and what is allowed.
    showError({ code: "options", message: error.message });
    return;
  }
  setState("uploading");
  try {
    const result = await upload.start();
    showResult(result);
    setState("done");
    if (result.resumedSlices) {
      $("upload-id").textContent += ` (${result.resumedSlices} slices were already on the server)`;
    }
  } catch (error) {
    showError(error);
    setState(error.code === "aborted" ? "cancelled" : "error");
  } finally {
    sending.clear();
    $("in-flight").value = 0;
    upload = null;
  }
}

function showResult(result) {
  $("elapsed").textContent = `${(result.elapsedMs / 1000).toFixed(2)} s`;
  $("average").textContent = formatRate(result.size / Math.max(result.elapsedMs, 1) * 1000);
  $("upload-id").textContent = `${result.id} — ${formatBytes(result.size)} in ${result.slices} slices of ${formatBytes(result.chunkSize)}`;
  // Null when the slices went straight to an object store: no server saw the whole file.
  const direct = result.sha256 === null;
  $("server-sha").textContent = direct ? "none (straight to the object store)" : result.sha256;
  $("checked").textContent = result.verified
    ? `SHA-256 of all ${result.slices} slices, computed in this browser, matched ${direct ? "by the object store, part by part" : "on the server"}`
    : "nothing (digests off)";
  const verdict = $("verdict");
  if (result.verified) {
    verdict.textContent = `✓ Verified: the ${direct ? "bucket" : "server"} holds exactly the bytes of this file.`;
    verdict.className = "verdict match";
  } else {
    verdict.textContent = "Digests were off: the server's SHA-256 is shown, but nothing was compared.";
    verdict.className = "verdict";
  }
  $("result").hidden = false;
}

const picked = (list) => [...list].map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
$("file").addEventListener("change", (e) => chooseFiles(picked(e.target.files), false));
$("folder").addEventListener("change", (e) => chooseFiles(picked(e.target.files), true));
$("chunk-size").addEventListener("change", () => file && buildMap(Math.ceil(file.size / Number($("chunk-size").value))));
$("max-in-flight").addEventListener("change", (e) => { $("max-shown").value = e.target.value; });
$("start").addEventListener("click", start);
$("cancel").addEventListener("click", () => { controller?.abort(); queue?.cancel(); });
$("pause").addEventListener("click", () => { upload?.pause(); queue?.pause(); setState("paused"); });
$("resume").addEventListener("click", () => { upload?.resume(); queue?.resume(); setState("uploading"); });
for (const type of ["dragenter", "dragover"]) {
  document.addEventListener(type, (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
}
for (const type of ["dragleave", "drop"]) {
  document.addEventListener(type, (e) => { e.preventDefault(); document.body.classList.remove("dragging"); });
}
document.addEventListener("drop", async (e) => {
  if (!e.dataTransfer || busy()) return;
  const hasFolder = [...e.dataTransfer.items].some((i) => i.webkitGetAsEntry?.()?.isDirectory);
  chooseFiles(await UploadQueue.filesIn(e.dataTransfer), hasFolder);
});

wasm = await init();
showMemory();
setInterval(showMemory, 500);
setState("idle");
document.body.dataset.ready = "true";
