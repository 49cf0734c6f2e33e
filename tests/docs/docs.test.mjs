// The docs hold together: every relative link in every Markdown file points at a file that
// exists, and every #anchor at a heading there (GitHub's slugs); and the reference pages
// name every option, field and error code the TypeScript types declare, so neither can
// drift from the other. Runs in scripts/test's `docs` layer, with no build.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";

const ROOT = resolve(import.meta.dirname, "../..");
const SKIP = new Set(["node_modules", "target", "pkg", ".git", "fuzz/corpus", "fuzz/artifacts", "tests/npm-app/node_modules"]);

function markdownFiles(dir = ROOT) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (SKIP.has(relative(ROOT, path)) || SKIP.has(entry.name)) continue;
    if (entry.isDirectory()) found.push(...markdownFiles(path));
    else if (entry.name.endsWith(".md")) found.push(path);
  }
  return found;
}

/** The text outside fenced code blocks and inline code spans. */
function prose(text) {
  return text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "").replace(/`[^`\n]*`/g, "``");
}

/** GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces to
 * hyphens, a repeat numbered -1, -2, ... */
export function anchors(text) {
  const seen = new Map();
  const out = new Set();
  const body = text.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "");
  for (const [, heading] of body.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = heading
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

const files = markdownFiles();

test("the README and docs/ exist, and the README stays short", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  assert.ok(readme.split("\n").length <= 200, `README.md has ${readme.split("\n").length} lines`);
  // It opens with exactly the two commands.
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)?.[1].trim().split("\n");
  assert.deepEqual(firstBlock, ["./scripts/demo", "./scripts/test"]);
  assert.ok(files.some((f) => f.endsWith("docs/getting-started.md")));
});

test("every relative link and anchor in the Markdown files resolves", () => {
  const broken = [];
  let checked = 0;
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const [, target] of prose(text).matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      checked++;
      const [path, anchor] = target.split("#");
      const into = path ? resolve(dirname(file), decodeURIComponent(path)) : file;
      const where = `${relative(ROOT, file)}: (${target})`;
      if (!existsSync(into)) { broken.push(`${where}: no such file`); continue; }
      if (anchor === undefined) continue;
      if (statSync(into).isDirectory() || !into.endsWith(".md")) { broken.push(`${where}: an anchor into a file that is not Markdown`); continue; }
      if (!anchors(readFileSync(into, "utf8")).has(anchor)) broken.push(`${where}: no heading with that anchor`);
    }
  }
  assert.deepEqual(broken, []);
  assert.ok(checked > 30, `only ${checked} relative links found: the scan is broken`);
});

/** The field names of `interface NAME { ... }` in a TypeScript text (comments removed). */
function fields(ts, name) {
  const body = new RegExp(`interface ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(ts)?.[1];
  assert.ok(body, `interface ${name} not found`);
  const bare = body.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  return [...bare.matchAll(/^\s*(\w+)\??\s*:/gm)].map((m) => m[1]);
}

test("docs/api.md and docs/queue.md name every option, field and error code of the types", () => {
  const types = readFileSync(join(ROOT, "src/lib.rs"), "utf8") + readFileSync(join(ROOT, "npm/index.d.ts"), "utf8");
  const api = readFileSync(join(ROOT, "docs/api.md"), "utf8");
  const queue = readFileSync(join(ROOT, "docs/queue.md"), "utf8");
  const options = fields(types, "UploadOptions");
  assert.ok(options.length >= 15, `only ${options.length} options parsed`);
  const rows = new Set([...api.matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]));
  assert.deepEqual(options.filter((o) => !rows.has(o)), [], "options without a row in docs/api.md's table");
  assert.deepEqual([...rows].filter((r) => !options.includes(r)), [], "rows in docs/api.md for options the types lack");
  for (const field of [...fields(types, "UploadResult"), ...fields(types, "UploadProgress")]) {
    assert.match(api, new RegExp(`\\b${field}\\b`), `docs/api.md never names ${field}`);
  }
  const codes = /type UploadErrorCode =([^;]*);/.exec(types)[1].match(/"(\w+)"/g).map((c) => c.slice(1, -1));
  assert.ok(codes.length >= 10);
  for (const code of codes) assert.ok(api.includes(`\`${code}\``) || api.includes(`"${code}"`), `docs/api.md never names the error code ${code}`);
  for (const option of fields(types, "UploadQueueOptions")) assert.match(queue, new RegExp(`\\b${option}\\b`), `docs/queue.md never names ${option}`);
});
