// Routes every call from wasm-bindgen's glue (pkg/chunkwise.js) into the wasm module
// through npm/trap.js's guard, so that a trap becomes an UploadError ("crashed") for every
// pending and later call instead of a hang. Fails the build if the glue's shape changed.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
const glue = readFileSync(path, "utf8");
const assign = /^(\s*)wasm = instance\.exports;$/m;
if (glue.match(new RegExp(assign.source, "gm"))?.length !== 1) {
  throw new Error(`${path}: expected one "wasm = instance.exports;" (wasm-bindgen's glue changed shape)`);
}
// After the glue's leading `/* @ts-self-types */` directive, which must stay first.
const guarded = glue.replace(assign, "$1wasm = guard(instance.exports);");
const head = /^\/\*[^\n]*\*\/\n/.exec(guarded)?.[0] ?? "";
writeFileSync(path, `${head}import { guard } from "./trap.js";\n${guarded.slice(head.length)}`);
