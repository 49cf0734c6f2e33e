// A round-robin TCP load balancer on loopback: each new connection goes to the next target
// that accepts it, skipping one that is down, as a load balancer in front of several
// chunkwise-server instances would.
import net from "node:net";

export async function startRoundRobin(ports) {
  let next = 0;
  const state = { connections: ports.map(() => 0) };
  const open = new Set();
  const server = net.createServer((client) => {
    client.pause();
    const attempt = (tries) => {
      if (tries === ports.length) return client.destroy();
      const i = next++ % ports.length;
      const upstream = net.connect(ports[i], "127.0.0.1");
      let connected = false;
      upstream.once("connect", () => {
        connected = true;
        state.connections[i]++;
        open.add(client);
        open.add(upstream);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
        const close = () => { client.destroy(); upstream.destroy(); open.delete(client); open.delete(upstream); };
        client.on("error", close);
        upstream.on("error", close);
        client.on("close", close);
        upstream.on("close", close);
      });
      upstream.once("error", () => { if (!connected) attempt(tries + 1); });
    };
    attempt(0);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    state,
    url: `http://127.0.0.1:${server.address().port}`,
    close() {
      for (const socket of open) socket.destroy();
      server.close();
      server.unref();
    },
  };
}
