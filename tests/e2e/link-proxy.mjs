// A userspace link between the browser and a server, for what Chromium's emulation does
// not model: TCP's per-connection window, and counting requests by method (CORS preflights
// included) from the byte stream, whatever the server.
//
// Each direction is delayed by half the round trip. The uplink's rate is shared by every
// connection, and each connection may have at most `windowBytes` unacknowledged: bytes
// count against the window until their acknowledgement would be back, a full round trip
// after they left. So one connection carries at most window / RTT, as over a long path.
// (Freeing the window on delivery, half a round trip after sending, would let one
// connection run twice too fast.)
import net from "node:net";

const QUANTUM = 64 * 1024;
const MAX_QUEUED = 256 * 1024;

/**
 * Calls `deliver(item)` for each pushed item once its time (performance.now() ms) has come,
 * strictly in push order: separate timers per piece could reorder bytes, since Node rounds
 * timer delays to whole milliseconds.
 */
function delayLine(deliver) {
  const items = [];
  let timer = null;
  const run = () => {
    timer = null;
    const now = performance.now();
    while (items.length && items[0].at <= now + 0.5) deliver(items.shift().item);
    if (items.length) timer = setTimeout(run, Math.max(0, items[0].at - now));
  };
  return {
    push(at, item) {
      items.push({ at, item });
      if (timer === null) timer = setTimeout(run, Math.max(0, at - performance.now()));
    },
    clear() {
      items.length = 0;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}

/**
 * Starts a link to `targetPort` on 127.0.0.1: `{ upBitsPerSecond, rttMs, windowBytes }`;
 * a missing rate or window means no limit.
 */
export async function startLinkProxy(targetPort, { upBitsPerSecond = Infinity, rttMs = 0, windowBytes = Infinity } = {}) {
  const counts = {};
  const sockets = new Set();
  let linkFreeAt = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const parser = requestCounter(counts);
    const queue = [];
    let queued = 0;
    let inFlight = 0;
    let ended = false;
    let closed = false;
    const later = (ms, fn) => (ms > 0 ? setTimeout(fn, ms) : setImmediate(fn));
    const toServer = delayLine((piece) => { if (!closed) upstream.write(piece); });
    const acks = delayLine((bytes) => { inFlight -= bytes; pump(); });
    // null: the server ended its side.
    const toClient = delayLine((data) => { if (!closed) data ? client.write(data) : client.end(); });
    const close = () => {
      if (closed) return;
      closed = true;
      for (const line of [toServer, acks, toClient]) line.clear();
      client.destroy();
      upstream.destroy();
    };
    const pump = () => {
      while (!closed && queue.length && inFlight < windowBytes) {
        let piece = queue[0];
        const room = Math.min(QUANTUM, windowBytes - inFlight);
        if (piece.length > room) {
          queue[0] = piece.subarray(room);
          piece = piece.subarray(0, room);
        } else {
          queue.shift();
        }
        queued -= piece.length;
        inFlight += piece.length;
        linkFreeAt = Math.max(performance.now(), linkFreeAt) + (piece.length * 8 * 1000) / upBitsPerSecond;
        toServer.push(linkFreeAt + rttMs / 2, piece);
        acks.push(linkFreeAt + rttMs, piece.length);
      }
      if (queued < MAX_QUEUED && client.isPaused()) client.resume();
      if (ended && !queue.length && inFlight === 0) later(rttMs / 2, () => upstream.end());
    };
    // The handshake costs one round trip before the first byte can leave.
    client.pause();
    later(rttMs, () => { client.resume(); pump(); });
    client.on("data", (data) => {
      parser(data);
      queue.push(data);
      queued += data.length;
      if (queued >= MAX_QUEUED) client.pause();
      pump();
    });
    client.on("end", () => { ended = true; pump(); });
    upstream.on("data", (data) => toClient.push(performance.now() + rttMs / 2, data));
    upstream.on("end", () => toClient.push(performance.now() + rttMs / 2, null));
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", () => { sockets.delete(client); later(rttMs / 2, close); });
    upstream.on("close", () => { sockets.delete(upstream); later(rttMs / 2, close); });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Requests seen so far, by method. */
    counts: () => ({ ...counts }),
    reset: () => { for (const key of Object.keys(counts)) delete counts[key]; },
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
      server.unref();
    },
  };
}

/** Counts HTTP/1.1 requests by method in a client's byte stream (Content-Length bodies). */
function requestCounter(counts) {
  let pending = null;
  let bodyLeft = 0;
  return (data) => {
    const bytes = pending ? Buffer.concat([pending, data]) : data;
    pending = null;
    let at = 0;
    while (at < bytes.length) {
      if (bodyLeft > 0) {
        const take = Math.min(bodyLeft, bytes.length - at);
        bodyLeft -= take;
        at += take;
        continue;
      }
      const end = bytes.indexOf("\r\n\r\n", at);
      if (end === -1) {
        pending = Buffer.from(bytes.subarray(at)); // a head split across packets
        return;
      }
      const head = bytes.subarray(at, end).toString("latin1");
      const method = head.slice(0, head.indexOf(" "));
      counts[method] = (counts[method] ?? 0) + 1;
      bodyLeft = Number(head.match(/\r\ncontent-length:\s*(\d+)/i)?.[1] ?? 0);
      at = end + 4;
    }
  };
}
