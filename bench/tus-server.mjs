// The official tus server (@tus/server with @tus/file-store), for comparison runs.
//   node bench/tus-server.mjs DIR   -> prints "tus listening on http://127.0.0.1:PORT/files"
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const directory = process.argv[2];
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }), allowedOrigins: ["*"] });
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(0, "127.0.0.1", () => {
  console.log(`tus listening on http://127.0.0.1:${server.address().port}/files`);
});
