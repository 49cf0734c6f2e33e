// Must NOT compile: the test asserts tsc rejects each marked line.
import { Upload, UploadQueue } from "chunkwise";

new Upload(new Blob([]), { endpoint: "/uploads", chunkSize: "8 MiB" }); // WRONG chunkSize
new Upload(new Blob([]), { endpoint: "/uploads", digest: "md5" }); // WRONG digest
new UploadQueue({ endpoint: "/uploads", onSlice: () => {} }); // WRONG onSlice
new Upload(new Blob([]), { endpoint: "/files/", protocol: "tus-v1" }); // WRONG protocol
