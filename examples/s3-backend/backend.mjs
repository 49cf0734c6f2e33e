// The five S3 calls chunkwise's `s3` option needs, done by the app's own backend with the
// AWS SDK for JavaScript v3: the backend holds the credentials, the browser sends each part
// straight to the bucket with a URL presigned here, and no byte passes through this server.
//
// Every part's SHA-256 is signed into its URL as `x-amz-checksum-sha256`, so the store
// checks the bytes against it and refuses a corrupted part; the multipart upload is
// created with `ChecksumAlgorithm: "SHA256"` and completed with each part's checksum.
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { randomUUID } from "node:crypto";

/**
 * Route handlers for `POST {base}/{create,sign,list,complete,abort}` with JSON bodies.
 * `client` must be built with `requestChecksumCalculation: "WHEN_REQUIRED"`: otherwise
 * the presigner adds a CRC32 of an empty body to every URL and the store refuses the part.
 * `keyFor(request, body)` chooses the object key (check the user here); `signChecksums:
 * false` signs no checksum (the upload is then created without one, and chunkwise reports
 * `verified: false`).
 */
export function s3Backend({ client, bucket, keyFor = () => `uploads/${randomUUID()}`, signChecksums = true, expiresIn = 3600, base = "/s3" }) {
  const routes = {
    async create({ size, chunkSize, metadata }, request) {
      const key = await keyFor(request, { size, chunkSize, metadata });
      const created = await client.send(new CreateMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        // S3 user metadata: ASCII only, 2 KiB in all; one JSON entry keeps any names.
        Metadata: { chunkwise: encodeURIComponent(JSON.stringify(metadata ?? {})) },
        ...(signChecksums && { ChecksumAlgorithm: "SHA256" }),
      }));
      return { uploadId: created.UploadId, key };
    },
    async sign({ uploadId, key, partNumber, size, sha256 }) {
      const command = new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: partNumber,
        ContentLength: size,
        ...(signChecksums && { ChecksumSHA256: sha256 }),
      });
      // Hoisting off: the checksum stays a signed header the browser must send as is.
      const unhoistable = new Set(signChecksums ? ["x-amz-checksum-sha256"] : []);
      const url = await getSignedUrl(client, command, { expiresIn, unhoistableHeaders: unhoistable });
      return { url, headers: signChecksums ? { "x-amz-checksum-sha256": sha256 } : {} };
    },
    async list({ uploadId, key }) {
      const parts = await listParts(client, bucket, key, uploadId);
      return parts.map((part) => ({
        partNumber: part.PartNumber,
        size: part.Size,
        ...(part.ChecksumSHA256 && { sha256: part.ChecksumSHA256 }),
      }));
    },
    async complete({ uploadId, key, parts }) {
      if (parts.length === 0) {
        // An empty file has no parts, and S3 completes no upload without one.
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: "" }));
        return { location: key };
      }
      // The ETags come from the store, so the browser never reads one (and the bucket
      // needs no ExposeHeaders rule). Each part's checksum is the one chunkwise read from
      // the file; the store refuses to complete if it holds other bytes.
      const etags = new Map((await listParts(client, bucket, key, uploadId)).map((p) => [p.PartNumber, p.ETag]));
      const done = await client.send(new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: {
          Parts: parts.map(({ partNumber, sha256 }) => ({
            PartNumber: partNumber,
            ETag: etags.get(partNumber),
            ...(signChecksums && sha256 && { ChecksumSHA256: sha256 }),
          })),
        },
      }));
      return { location: done.Location ?? key };
    },
    async abort({ uploadId, key }) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId }));
      return {};
    },
  };
  /** Answers the request if it is one of these routes; resolves false otherwise. */
  return async function handle(request, response) {
    const url = new URL(request.url, "http://x");
    const name = url.pathname.startsWith(`${base}/`) ? url.pathname.slice(base.length + 1) : null;
    if (request.method !== "POST" || !Object.hasOwn(routes, name ?? "")) return false;
    let status = 200;
    let answer;
    try {
      const body = JSON.parse(await readBody(request, 64 * 1024));
      answer = await routes[name](body, request);
    } catch (error) {
      status = error.$metadata?.httpStatusCode ?? (error instanceof SyntaxError ? 400 : 500);
      answer = { error: { code: error.name ?? "error", message: error.message } };
    }
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(answer));
    return true;
  };
}

/** Every part the store holds (ListParts, page by page). */
async function listParts(client, bucket, key, uploadId) {
  const parts = [];
  let marker;
  do {
    const page = await client.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }));
    parts.push(...(page.Parts ?? []));
    marker = page.IsTruncated ? page.NextPartNumberMarker : undefined;
  } while (marker !== undefined);
  return parts;
}

function readBody(request, limit) {
  return new Promise((resolve, reject) => {
    let text = "";
    request.setEncoding("utf8");
    request.on("data", (chunk) => {
      text += chunk;
      if (text.length > limit) { reject(new SyntaxError("body too large")); request.destroy(); }
    });
    request.on("end", () => resolve(text));
    request.on("error", reject);
  });
}
