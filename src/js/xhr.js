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
    for (let i = 0; i < headers.length; i += 2) xhr.setRequestHeader(headers[i], headers[i + 1]);
    xhr.upload.onprogress = (event) => alive(event.loaded);
    xhr.upload.onload = () => alive(body.size ?? body.byteLength ?? sent);
    xhr.onreadystatechange = () => {
      if (xhr.readyState >= XMLHttpRequest.HEADERS_RECEIVED && sent > 0) alive(sent);
    };
    xhr.onload = () =>
      finish(resolve, {
        status: xhr.status,
        statusText: xhr.statusText,
        retryAfter: xhr.getResponseHeader("retry-after"),
        text: xhr.responseText,
      });
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
