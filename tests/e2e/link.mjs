// Emulated links for the end-to-end tests and the benchmark.
//
// Rate and latency come from Chromium's own network emulation, which paces request bodies
// inside the network service, shared by all of a page's requests: upload progress then
// shows what crossed the emulated link. (A userspace proxy alone cannot: the kernel's
// socket buffers on loopback take megabytes at once, so progress would jump and stand
// still; see ../shared/FINDINGS.md.) Per-connection windows need the proxy in link-proxy.mjs.

/** The named links: uplink rate in bit/s and round trip in ms. */
export const LINKS = {
  slow: { name: "slow", upBitsPerSecond: 8e6, rttMs: 60 },
  mobile: { name: "mobile", upBitsPerSecond: 1e6, rttMs: 150 },
  lan: { name: "lan", upBitsPerSecond: 1e9, rttMs: 1 },
};

/**
 * Applies `link` to the page behind the DevTools session `cdp` (Playwright's
 * `page.context().newCDPSession(page)`, or a raw target session). `maxPostDataSize: 0`
 * keeps DevTools from copying request bodies.
 */
export async function emulateLink(cdp, link) {
  await cdp.send("Network.enable", { maxPostDataSize: 0 });
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false,
    latency: link.rttMs,
    uploadThroughput: link.upBitsPerSecond / 8,
    downloadThroughput: link.downBitsPerSecond ? link.downBitsPerSecond / 8 : -1,
  });
}

/**
 * Installed in the page before an upload: records every progress report with its time,
 * and every slice request started, so that tests and the benchmark read the same facts.
 */
export function progressProbe() {
  window.__log = [];
  window.__sends = {};
  window.__t0 = performance.now();
  return {
    onProgress: (p) => window.__log.push([performance.now() - window.__t0, p.bytesSent, p.bytesAcknowledged ?? p.bytesSent, p.slicesDone]),
    onSlice: (e) => { if (e.state === "sending") window.__sends[e.index] = (window.__sends[e.index] ?? 0) + 1; },
  };
}

/**
 * The longest time the progress value stood still in `log` (entries `[ms, bytes, ...]`),
 * from its first move until it reached `total`; if it never did, until `endMs` when given.
 * null when it never moved.
 */
export function longestStillMs(log, total, endMs = null) {
  let longest = 0;
  let since = null;
  let value = 0;
  for (const [ms, bytes] of log) {
    if (bytes <= 0) continue;
    if (since === null) {
      [since, value] = [ms, bytes];
    } else if (bytes !== value) {
      longest = Math.max(longest, ms - since);
      [since, value] = [ms, bytes];
    }
    if (bytes >= total) return longest;
  }
  if (since === null) return null;
  return endMs === null ? longest : Math.max(longest, endMs - since);
}

/** When the progress value of `log` (entries `[ms, bytes, ...]`) first moved, or null. */
export function firstMoveMs(log) {
  return log.find(([, bytes]) => bytes > 0)?.[0] ?? null;
}

/**
 * From a progress log ([ms, bytesSent, bytesAcknowledged, slicesDone]): when bytes first
 * moved, when the first slice was acknowledged, and the longest time the bar stood still
 * between its first move and its end.
 */
export function summarizeProgress(log, total) {
  const backwards = log.some((e, i) => i > 0 && e[1] < log[i - 1][1]);
  return {
    firstMoveMs: firstMoveMs(log),
    firstAckMs: log.find((e) => e[3] > 0)?.[0] ?? null,
    longestStillMs: longestStillMs(log, total) ?? 0,
    backwards,
    reports: log.length,
  };
}
