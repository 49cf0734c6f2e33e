// Compiled by the test with the strict tsconfig.json: the shipped .d.ts must type-check
// (skipLibCheck false, lib ES2022 + DOM) and describe the API as used here.
import init, { Upload, UploadQueue, type UploadErrorCode, type UploadResult, type QueueItem } from "chunkwise";

function explain(code: UploadErrorCode): string {
  switch (code) {
    case "network": return "offline";
    case "http_status": return "refused";
    case "digest_mismatch": return "corrupted";
    case "aborted": return "cancelled";
    case "source_read": return "unreadable";
    case "size_mismatch": return "changed";
    case "stalled": return "stalled";
    case "protocol": return "protocol";
    case "invalid_state": return "twice";
    case "s3_callback": return "the app's S3 callback failed";
    case "crashed": return "reload the page";
    case "busy": return "another tab is uploading it";
    default: {
      const unknown: never = code; // every code is handled: the union is exhaustive
      return unknown;
    }
  }
}

/** Straight to S3 through the app's own backend: the s3 option's callbacks, typed. */
export function direct(file: File): Upload {
  return new Upload(file, {
    chunkSize: 8 * 1024 * 1024,
    s3: {
      createMultipartUpload: async ({ size, chunkSize, metadata }) =>
        ({ uploadId: "u", key: `k-${size ?? "stream"}-${chunkSize}-${Object.keys(metadata).length}` }),
      signPart: ({ uploadId, key, partNumber, size, sha256 }) =>
        ({ url: `https://bucket.example/${key}?uploadId=${uploadId}&partNumber=${partNumber}&n=${size}`, headers: { "x-amz-checksum-sha256": sha256 } }),
      listParts: async ({ signal }) => (signal.aborted ? [] : [{ partNumber: 1, size: 5, sha256: "x" }]),
      completeMultipartUpload: async ({ parts }) => ({ location: `${parts.length} parts` }),
      abortMultipartUpload: async () => undefined,
    },
  });
}

/** To a tus server (tusd, @tus/server, a hosted service), typed. */
export function toTus(file: File): Upload {
  return new Upload(file, {
    endpoint: "https://tus.example/files/",
    protocol: "tus",
    chunkSize: 6 * 1024 * 1024,
    metadata: { filename: file.name, filetype: file.type },
    headers: { Authorization: "Bearer token" },
  });
}

export async function send(file: File): Promise<UploadResult | string> {
  await init();
  const controller = new AbortController();
  const upload = new Upload(file, {
    endpoint: "/uploads",
    chunkSize: 8 * 1024 * 1024,
    maxInFlight: 4,
    digest: "sha-256",
    headers: { Authorization: "Bearer token" },
    metadata: { name: file.name },
    signal: controller.signal,
    onProgress: (p) => console.log(p.bytesSent, p.bytesAcknowledged, p.bytesTotal ?? "unknown", p.etaSeconds),
    onSlice: (e) => console.log(e.index, e.state, e.attempt),
  });
  try {
    return await upload.start();
  } catch (error) {
    const code = (error as { code: UploadErrorCode }).code;
    return explain(code);
  }
}

export async function sendMany(files: FileList): Promise<QueueItem[]> {
  const queue = new UploadQueue({
    endpoint: "/uploads",
    maxInFlight: 6,
    onProgress: (total) => console.log(total.bytesSent / total.bytesTotal),
    onFileChange: (item) => console.log(item.path, item.state),
  });
  queue.add(files);
  const items = await queue.done();
  for (const item of items) if (item.state === "failed") console.log(item.error?.code);
  return items;
}
