// A fault-injecting TCP proxy between the browser and the server, for what an HTTP layer
// cannot fake: connections reset in the middle of a request body, and a server that is
// down (connections refused) for a while.
import net from "node:net";

const MIB = 1024 * 1024;

export async function startProxy(targetPort) {
  // cutAfterBytes: once that many more bytes went towards the server, the connection
  // carrying the next byte is reset (mid-body, when a body is being sent).
  // flipAfterBytes: once that many more bytes went towards the server, the next byte is
  // inverted on the way (corruption in transit that TCP's checksum let through).
  const state = { resetPerMiB: 0, down: false, resets: 0, refused: 0, cutAfterBytes: 0, cuts: 0, flipAfterBytes: 0, flips: 0 };
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
    // A TCP reset towards the browser; the server side is simply closed. (resetAndDestroy
    // on a socket that is not fully open can leave a handle that keeps node from exiting.)
    const kill = () => {
      if (!client.destroyed) client.readyState === "open" ? client.resetAndDestroy() : client.destroy();
      if (!upstream.destroyed) upstream.destroy();
    };
    client.on("data", (data) => {
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
      if (!upstream.write(data)) {
        client.pause();
        upstream.once("drain", () => client.resume());
      }
    });
    upstream.pipe(client);
    client.on("end", () => upstream.end());
    client.on("error", kill);
    upstream.on("error", kill);
    client.on("close", () => { open.delete(client); kill(); });
    upstream.on("close", () => { open.delete(upstream); kill(); });
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
    close() {
      state.down = true;
      for (const socket of open) socket.destroy();
      server.close();
      server.unref();
    },
  };
}
