// The backend @uppy/aws-s3 6 asks with `signRequest`: one presigned URL per S3 request
// (create, each part, list, complete, abort), signed with the same SDK and credentials as
// examples/s3-backend. For the store benchmark's peer row only.
//   S3_ENDPOINT, S3_REGION, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, PORT, ALLOWED_ORIGIN
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand,
  ListPartsCommand, PutObjectCommand, S3Client, UploadPartCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import http from "node:http";

const client = new S3Client({
  region: process.env.S3_REGION, endpoint: process.env.S3_ENDPOINT, forcePathStyle: true,
  requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
});
const Bucket = process.env.S3_BUCKET;

function command({ method, key: Key, uploadId: UploadId, partNumber: PartNumber }) {
  if (method === "POST" && !UploadId) return new CreateMultipartUploadCommand({ Bucket, Key });
  if (method === "PUT" && UploadId) return new UploadPartCommand({ Bucket, Key, UploadId, PartNumber });
  if (method === "POST") return new CompleteMultipartUploadCommand({ Bucket, Key, UploadId });
  if (method === "GET") return new ListPartsCommand({ Bucket, Key, UploadId });
  if (method === "DELETE" && UploadId) return new AbortMultipartUploadCommand({ Bucket, Key, UploadId });
  if (method === "PUT") return new PutObjectCommand({ Bucket, Key });
  throw new Error(`cannot sign ${method}`);
}

const server = http.createServer(async (request, response) => {
  response.setHeader("access-control-allow-origin", process.env.ALLOWED_ORIGIN ?? "*");
  if (request.method === "OPTIONS") {
    response.writeHead(204, { "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type", "access-control-max-age": "600" });
    return response.end();
  }
  let text = "";
  for await (const chunk of request) text += chunk;
  try {
    const wanted = JSON.parse(text);
    const url = await getSignedUrl(client, command(wanted), { expiresIn: wanted.expiresIn ?? 3600 });
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ url }));
  } catch (error) {
    response.writeHead(400, { "content-type": "application/json" });
    response.end(JSON.stringify({ error: { code: "bad_request", message: error.message } }));
  }
});
server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
