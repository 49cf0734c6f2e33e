"""The five S3 calls chunkwise's `s3` option needs, done by the app's own backend with boto3.

The backend holds the credentials; the browser sends each part straight to the bucket with
a URL presigned here, and no byte passes through this server. Every part's SHA-256 is
signed into its request (the `x-amz-checksum-sha256` header), so the store checks the
bytes and refuses a corrupted part.

    pip install -r requirements.txt
    S3_ENDPOINT=... S3_REGION=... S3_BUCKET=... AWS_ACCESS_KEY_ID=... \\
      AWS_SECRET_ACCESS_KEY=... PORT=8787 [STATIC_DIR=page/] python server.py

Routes: POST /s3/{create,sign,list,complete,abort} with JSON bodies (see README); with
STATIC_DIR, the app's page at /. Prints "listening on http://HOST:PORT" once it listens.
"""

import json
import os
import uuid
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

BUCKET = os.environ["S3_BUCKET"]
# "when_required": otherwise botocore adds a CRC32 to presigned part URLs and the store
# refuses the part.
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ.get("S3_ENDPOINT"),
    region_name=os.environ.get("S3_REGION", "us-east-1"),
    config=Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
)


def list_parts(key, upload_id):
    parts, marker = [], 0
    while True:
        page = s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        parts += page.get("Parts", [])
        if not page.get("IsTruncated"):
            return parts
        marker = page["NextPartNumberMarker"]


def create(body):
    key = f"uploads/{uuid.uuid4()}"  # choose the key, and check the user, here
    made = s3.create_multipart_upload(
        Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256",
        # S3 user metadata is ASCII, 2 KiB in all: one JSON entry (non-ASCII escaped).
        Metadata={"chunkwise": json.dumps(body.get("metadata") or {})},
    )
    return {"uploadId": made["UploadId"], "key": key}


def sign(body):
    url = s3.generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": BUCKET, "Key": body["key"], "UploadId": body["uploadId"],
            "PartNumber": body["partNumber"], "ContentLength": body["size"],
            "ChecksumSHA256": body["sha256"],
        },
        ExpiresIn=3600,
    )
    # botocore signs the checksum as a header: the browser must send it as is.
    return {"url": url, "headers": {"x-amz-checksum-sha256": body["sha256"]}}


def list_(body):
    return [
        {"partNumber": p["PartNumber"], "size": p["Size"],
         **({"sha256": p["ChecksumSHA256"]} if p.get("ChecksumSHA256") else {})}
        for p in list_parts(body["key"], body["uploadId"])
    ]


def complete(body):
    key, upload_id, parts = body["key"], body["uploadId"], body["parts"]
    if not parts:  # an empty file: S3 completes no upload without a part
        s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
        return {"location": key}
    etags = {p["PartNumber"]: p["ETag"] for p in list_parts(key, upload_id)}
    done = s3.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [
            {"PartNumber": p["partNumber"], "ETag": etags.get(p["partNumber"]),
             "ChecksumSHA256": p["sha256"]}
            for p in parts
        ]},
    )
    return {"location": done.get("Location", key)}


def abort(body):
    s3.abort_multipart_upload(Bucket=BUCKET, Key=body["key"], UploadId=body["uploadId"])
    return {}


ROUTES = {"create": create, "sign": sign, "list": list_, "complete": complete, "abort": abort}


class Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def do_POST(self):
        route = ROUTES.get(self.path.removeprefix("/s3/")) if self.path.startswith("/s3/") else None
        if route is None:
            return self.answer(404, {"error": {"code": "not_found", "message": "no such route"}})
        length = int(self.headers.get("content-length") or 0)
        if length > 64 * 1024:
            return self.answer(413, {"error": {"code": "too_large", "message": "body too large"}})
        try:
            self.answer(200, route(json.loads(self.rfile.read(length))))
        except s3.exceptions.ClientError as error:
            status = error.response["ResponseMetadata"]["HTTPStatusCode"]
            self.answer(status, {"error": {"code": error.response["Error"]["Code"], "message": str(error)}})
        except (KeyError, ValueError) as error:
            self.answer(400, {"error": {"code": "bad_request", "message": repr(error)}})

    def answer(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    static = os.environ.get("STATIC_DIR") or os.path.join(os.path.dirname(__file__), "empty")
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8787"))),
                                 partial(Handler, directory=static))
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
