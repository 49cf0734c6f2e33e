// A fault-injecting TCP proxy between the browser and the server, for what an HTTP layer
// cannot fake: connections reset in the middle of a request body, connections that go
// silent mid-body (a phone changing networks: no FIN or RST ever reaches the server), and a
// server that is down (connections refused) for a while. It reads the HTTP/1.1 requests it
// forwards, so that tests count what was really sent (`state.requests`).
import net from "node:net";

const MIB = 1024 * 1024;

export async function startProxy(targetPort) {
  // cutAfterBytes: once that many more bytes went towards the server, the connection
  // carrying the next byte is reset (mid-body, when a body is being sent).
  // flipAfterBytes: once that many more bytes went towards the server, the next byte is
  // inverted on the way (corruption in transit that TCP's checksum let through).
  // silenceAfterBytes: once that many more bytes went towards the server, the connection
  // carrying the next byte forwards nothing more either way, and its server side is kept
  // open (when the browser gives up on it, the server is not told).
  const state = {
    resetPerMiB: 0, down: false, resets: 0, refused: 0, cutAfterBytes: 0, cuts: 0, flipAfterBytes: 0, flips: 0,
    silenceAfterBytes: 0, silenced: 0,
    /** Bytes forwarded towards the server, heads and bodies (not those cut or silenced). */
    bytesUp: 0,
    /** When set, each connection forwards at most this many bytes per second towards the
     * server, independently of the others (so parallel requests stay in flight together). */
    connectionBytesPerSecond: 0,
    /** Requests with a slice's body (PUT, and tus's PATCH) sent and not yet answered now,
     * and the most at once (CORS preflights and other requests are not counted). */
    putsInFlight: 0, maxPutsInFlight: 0,
    /** Every request forwarded towards the server, as `{ method, path, slice, offset,
     * length, preflight }` (`slice`: the Chunkwise-Slice header, or the v1 path's index;
     * `offset`: tus's Upload-Offset; `length`: its Content-Length; `preflight`: a CORS
     * preflight), in order. */
    requests: [],
  };
  const silent = new Set();
  const open = new Set();
  const server = net.createServer((client) => {
    if (state.down) {
      state.refused++;
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    open.add(client);
    open.add(upstream);
    let sinceDraw = 0;
    // A PUT is in flight from its head until the first byte of its answer (HTTP/1.1: one
    // request at a time per connection).
    let waiting = false;
    const answered = () => { if (waiting) { waiting = false; state.putsInFlight--; } };
    const reader = requestReader((request) => {
      state.requests.push(request);
      if ((request.method === "PUT" || request.method === "PATCH") && !waiting) {
        waiting = true;
        state.maxPutsInFlight = Math.max(state.maxPutsInFlight, ++state.putsInFlight);
      }
    });
    upstream.on("data", answered);
    // A TCP reset towards the browser; the server side is simply closed. (resetAndDestroy
    // on a socket that is not fully open can leave a handle that keeps node from exiting.)
    const kill = () => {
      if (!client.destroyed) client.readyState === "open" ? client.resetAndDestroy() : client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    let silenced = false;
    client.on("data", (data) => {
      if (silenced) return;
      if (state.silenceAfterBytes > 0) {
        state.silenceAfterBytes -= data.length;
        if (state.silenceAfterBytes <= 0) {
          // Forward what came before the silence, then nothing.
          const keep = data.length + state.silenceAfterBytes;
          state.silenceAfterBytes = 0;
          state.silenced++;
          silenced = true;
          silent.add(upstream);
          upstream.unpipe(client);
          if (keep > 0) { reader(data.subarray(0, keep)); upstream.write(data.subarray(0, keep)); }
          return;
        }
      }
      if (state.cutAfterBytes > 0) {
        state.cutAfterBytes -= data.length;
        if (state.cutAfterBytes <= 0) {
          state.cutAfterBytes = 0;
          state.cuts++;
          kill();
          return;
        }
      }
      if (state.flipAfterBytes > 0) {
        if (state.flipAfterBytes <= data.length) {
          data = Buffer.from(data);
          data[state.flipAfterBytes - 1] ^= 0xff;
          state.flipAfterBytes = 0;
          state.flips++;
        } else {
          state.flipAfterBytes -= data.length;
        }
      }
      sinceDraw += data.length;
      // One draw per MiB forwarded towards the server: resets land mid-body.
      while (sinceDraw >= MIB) {
        sinceDraw -= MIB;
        if (Math.random() < state.resetPerMiB) {
          state.resets++;
          kill();
          return;
        }
      }
      reader(data);
      state.bytesUp += data.length;
      const rate = state.connectionBytesPerSecond;
      if (rate > 0) {
        client.pause();
        setTimeout(() => { if (!client.destroyed) client.resume(); }, (data.length / rate) * 1000);
      }
      if (!upstream.write(data)) {
        client.pause();
        upstream.once("drain", () => client.resume());
      }
    });
    upstream.pipe(client);
    // A silenced connection's server side outlives the browser's: the server hears nothing.
    const killUnlessSilent = () => { if (silenced) { if (!client.destroyed) client.destroy(); } else kill(); };
    client.on("end", () => { if (!silenced) upstream.end(); });
    client.on("error", killUnlessSilent);
    upstream.on("error", kill);
    client.on("close", () => { open.delete(client); killUnlessSilent(); });
    upstream.on("close", () => { answered(); open.delete(upstream); silent.delete(upstream); kill(); });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    state,
    url: `http://127.0.0.1:${server.address().port}`,
    /** Refuses every connection and cuts the open ones for `ms`. */
    async down(ms) {
      state.down = true;
      for (const socket of open) socket.destroy();
      await new Promise((r) => setTimeout(r, ms));
      state.down = false;
    },
    /** How many times slice `index` was sent (PUT) through the proxy. */
    sends(index) {
      return state.requests.filter((r) => r.method === "PUT" && r.slice === index).length;
    },
    close() {
      state.down = true;
      for (const socket of open) socket.destroy();
      for (const socket of silent) socket.destroy();
      server.close();
      server.unref();
    },
  };
}

/** Follows the HTTP/1.1 requests in one connection's bytes towards the server (heads and
 * Content-Length bodies; what browsers send), calling `onRequest` at each request's head. */
function requestReader(onRequest) {
  let head = Buffer.alloc(0);
  let bodyLeft = 0;
  return (data) => {
    while (data.length > 0) {
      if (bodyLeft > 0) {
        const n = Math.min(bodyLeft, data.length);
        bodyLeft -= n;
        data = data.subarray(n);
        continue;
      }
      head = Buffer.concat([head, data]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const lines = head.subarray(0, end).toString("latin1").split("\r\n");
      data = head.subarray(end + 4);
      head = Buffer.alloc(0);
      const [method, path] = lines[0].split(" ");
      const header = (name) => lines.find((l) => l.toLowerCase().startsWith(name + ":"))?.slice(name.length + 1).trim();
      bodyLeft = Number(header("content-length") ?? 0);
      const named = header("chunkwise-slice") ?? path.match(/\/slices\/(\d+)/)?.[1];
      const offset = header("upload-offset");
      onRequest({
        method, path, slice: named === undefined ? undefined : Number(named),
        offset: offset === undefined ? undefined : Number(offset), length: bodyLeft,
        preflight: header("access-control-request-method") !== undefined,
      });
    }
  };
}
