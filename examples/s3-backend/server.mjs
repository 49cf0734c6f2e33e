// A runnable app backend for the recipe: the five routes of backend.mjs under /s3, and the
// files of STATIC_DIR (the app's page) at /. Configured by the environment:
//   S3_ENDPOINT (omit for AWS), S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//   S3_BUCKET, PORT (0: any free port), STATIC_DIR (optional), SIGN_CHECKSUMS=0 (optional),
//   ALLOWED_ORIGIN (optional: a page on another origin that may call the routes).
// Prints "listening on http://HOST:PORT" once it listens.
import { S3Client } from "@aws-sdk/client-s3";
import { createReadStream, statSync } from "node:fs";
import http from "node:http";
import { extname, join, normalize, resolve } from "node:path";
import { s3Backend } from "./backend.mjs";

const client = new S3Client({
  region: process.env.S3_REGION ?? "us-east-1",
  ...(process.env.S3_ENDPOINT && { endpoint: process.env.S3_ENDPOINT, forcePathStyle: true }),
  // Without it, the presigner puts a CRC32 of an empty body in every part URL.
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});
const handle = s3Backend({
  client,
  bucket: process.env.S3_BUCKET,
  signChecksums: process.env.SIGN_CHECKSUMS !== "0",
});

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };
const root = process.env.STATIC_DIR && resolve(process.env.STATIC_DIR);

const allowedOrigin = process.env.ALLOWED_ORIGIN;

const server = http.createServer(async (request, response) => {
  if (allowedOrigin) {
    response.setHeader("access-control-allow-origin", allowedOrigin);
    if (request.method === "OPTIONS") {
      response.writeHead(204, { "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type", "access-control-max-age": "600" });
      response.end();
      return;
    }
  }
  if (await handle(request, response)) return;
  const path = root && join(root, normalize(decodeURIComponent(new URL(request.url, "http://x").pathname)));
  const file = path?.startsWith(root) && (statSync(path, { throwIfNoEntry: false })?.isFile() ? path : null);
  if (request.method !== "GET" || !file) {
    response.writeHead(404, { "content-type": "application/json" });
    response.end(JSON.stringify({ error: { code: "not_found", message: "no such resource" } }));
    return;
  }
  response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
  createReadStream(file).pipe(response);
});
server.listen(Number(process.env.PORT ?? 8787), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
