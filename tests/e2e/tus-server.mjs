// A real tus server: @tus/server with @tus/file-store, as it is deployed, for the tests and
// the benchmark.
//   node tests/e2e/tus-server.mjs DIR   -> prints "tus listening on http://127.0.0.1:PORT/files"
// Environment:
//   TUS_MAX_SIZE=N   its maxSize (a larger upload gets its 413)
// An upload whose metadata has `refuse` is refused by onUploadCreate with a 403 and the
// value as its words, as an app's own rule would.
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const directory = process.argv[2];
const tus = new Server({
  path: "/files",
  datastore: new FileStore({ directory }),
  maxSize: Number(process.env.TUS_MAX_SIZE ?? 0) || undefined,
  async onUploadCreate(req, upload) {
    const reason = upload.metadata?.refuse;
    if (reason) throw { status_code: 403, body: `${reason}\n` };
    return {};
  },
});
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(0, "127.0.0.1", () => {
  console.log(`tus listening on http://127.0.0.1:${server.address().port}/files`);
});
