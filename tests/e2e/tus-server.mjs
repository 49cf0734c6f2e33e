// A real tus server: @tus/server with @tus/file-store, as it is deployed, for the tests and
// the benchmark.
//   node tests/e2e/tus-server.mjs DIR   -> prints "tus listening on http://127.0.0.1:PORT/files"
// Environment:
//   TUS_MAX_SIZE=N   its maxSize (a larger upload gets its 413)
//   TUS_ALLOWED_ORIGIN=ORIGIN   the only origin its CORS answers allow (default: any)
//   TUS_CHECKSUM=1   adds tus's checksum extension (sha256), which @tus/server lacks: OPTIONS
//                    announces it, and a PATCH with Upload-Checksum is read whole and
//                    checked first; a mismatch is answered 460 and nothing is written.
//   TUS_SHORT_FIRST=1   the first PATCH with a body has only its first half written, as a
//                    server or proxy that took less than was sent: the answer's
//                    Upload-Offset says so, with a 204 like any other.
// An upload whose metadata has `refuse` is refused by onUploadCreate with a 403 and the
// value as its words, as an app's own rule would.
import { createHash } from "node:crypto";
import http from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const directory = process.argv[2];
const tus = new Server({
  path: "/files",
  datastore: new FileStore({ directory }),
  maxSize: Number(process.env.TUS_MAX_SIZE ?? 0) || undefined,
  allowedOrigins: process.env.TUS_ALLOWED_ORIGIN ? [process.env.TUS_ALLOWED_ORIGIN] : undefined,
  async onUploadCreate(req, upload) {
    const reason = upload.metadata?.refuse;
    if (reason) throw { status_code: 403, body: `${reason}\n` };
    return {};
  },
});

const stats = { checked: 0, mismatches: 0, shortened: 0 };
const checksum = process.env.TUS_CHECKSUM === "1";
const shortFirst = process.env.TUS_SHORT_FIRST === "1";
let shorten = shortFirst;

/** What @tus/server lacks, in front of it (requests whole, as web Requests). */
async function front(req, res) {
  const parts = [];
  for await (const part of req) parts.push(part);
  let body = Buffer.concat(parts);
  const cors = { "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Upload-Offset, Location, Tus-Extension, Tus-Checksum-Algorithm" };
  const claimed = req.headers["upload-checksum"];
  if (req.method === "PATCH" && shorten && body.length > 1) {
    shorten = false;
    stats.shortened++;
    body = body.subarray(0, Math.floor(body.length / 2));
    req.headers["content-length"] = String(body.length);
  }
  if (checksum && req.method === "PATCH" && claimed) {
    const [algorithm, digest] = claimed.split(" ");
    if (algorithm !== "sha256") {
      res.writeHead(400, cors).end("Unsupported checksum algorithm\n");
      return;
    }
    stats.checked++;
    if (createHash("sha256").update(body).digest("base64") !== digest) {
      stats.mismatches++;
      res.writeHead(460, cors).end("Checksum Mismatch\n");
      return;
    }
  }
  const request = new Request(`http://${req.headers.host}${req.url}`, {
    method: req.method, headers: req.headers, body: ["GET", "HEAD"].includes(req.method) ? undefined : body, duplex: "half",
  });
  const response = await tus.handleWeb(request);
  const headers = Object.fromEntries(response.headers);
  if (checksum && req.method === "OPTIONS") {
    headers["tus-extension"] = `${headers["tus-extension"] ?? "creation"},checksum`;
    headers["tus-checksum-algorithm"] = "sha256";
    headers["access-control-allow-headers"] = `${headers["access-control-allow-headers"] ?? ""}, Upload-Checksum`;
    headers["access-control-expose-headers"] = `${headers["access-control-expose-headers"] ?? ""}, Tus-Checksum-Algorithm`;
  }
  res.writeHead(response.status, headers).end(Buffer.from(await response.arrayBuffer()));
}

const server = http.createServer((req, res) => {
  if (req.url === "/stats") return res.end(JSON.stringify(stats));
  if (checksum || shortFirst) {
    front(req, res).catch((error) => res.writeHead(500).end(String(error)));
  } else {
    tus.handle(req, res);
  }
});
server.listen(0, "127.0.0.1", () => {
  console.log(`tus listening on http://127.0.0.1:${server.address().port}/files`);
});
