// Prints pkg/package.json: the npm package's manifest, its version from Cargo.toml.
import { readFileSync } from "node:fs";

const cargo = readFileSync(new URL("../Cargo.toml", import.meta.url), "utf8");
const version = /\[workspace\.package\][^[]*?\nversion = "([^"]+)"/.exec(cargo)?.[1];
if (!version) throw new Error("no [workspace.package] version in Cargo.toml");

const manifest = {
  name: "chunkwise",
  version,
  description:
    "Upload huge files from the browser in fixed-size slices: bounded memory, parallel requests, retries, resume after reloads, and SHA-256 end to end. Rust compiled to WebAssembly.",
  keywords: ["upload", "chunked-upload", "resumable", "file-upload", "multipart", "sha-256", "wasm", "webassembly"],
  license: "MIT OR Apache-2.0",
  repository: { type: "git", url: "git+https://github.com/chunkwise/chunkwise.git" },
  homepage: "https://github.com/chunkwise/chunkwise#readme",
  bugs: { url: "https://github.com/chunkwise/chunkwise/issues" },
  type: "module",
  main: "./index.js",
  module: "./index.js",
  types: "./index.d.ts",
  exports: {
    ".": { types: "./index.d.ts", default: "./index.js" },
    "./chunkwise_bg.wasm": "./chunkwise_bg.wasm",
    "./package.json": "./package.json",
  },
  files: [
    "index.js", "index.d.ts", "queue.js", "trap.js",
    "chunkwise.js", "chunkwise.d.ts", "chunkwise_bg.wasm", "chunkwise_bg.wasm.d.ts",
    "snippets/", "README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE",
  ],
  // Importing has no effect until init() runs; snippets are imported by the glue.
  sideEffects: ["./snippets/*"],
};
process.stdout.write(JSON.stringify(manifest, null, 2) + "\n");
