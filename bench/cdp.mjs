// A bare Chrome DevTools Protocol client over Chromium's own debugging socket.
//
// Benchmarks must not run in a Playwright-managed page: Playwright enables the Network
// domain, and DevTools then copies every ArrayBuffer request body (see shared FINDINGS),
// which makes uploads look 10x slower and hundreds of MiB bigger. Here nothing but
// Runtime/Target/DOM is ever enabled.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { reaped } from "./children.mjs";

const FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-extensions", "--remote-debugging-port=0"];

export class Chromium {
  static async launch() {
    const profile = mkdtempSync(join(tmpdir(), "chunkwise-bench-profile-"));
    const proc = reaped(spawn("/usr/bin/chromium", [...FLAGS, `--user-data-dir=${profile}`, "about:blank"], { stdio: "ignore" }));
    let endpoint;
    for (let i = 0; i < 200 && !endpoint; i++) {
      await new Promise((r) => setTimeout(r, 50));
      try {
        // Chromium may be caught writing it: take it only with both lines whole.
        const [port, path] = readFileSync(join(profile, "DevToolsActivePort"), "utf8").split("\n");
        if (/^\d+$/.test(port) && /^\/devtools\/browser\/[0-9a-f-]{36}$/.test(path?.trim())) endpoint = `ws://127.0.0.1:${port}${path.trim()}`;
      } catch { /* not yet */ }
    }
    if (!endpoint) throw new Error("Chromium did not open its DevTools port");
    const ws = new WebSocket(endpoint);
    await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
    return new Chromium(proc, ws, profile);
  }

  constructor(proc, ws, profile) {
    this.proc = proc;
    this.ws = ws;
    this.profile = profile;
    this.nextId = 1;
    this.pending = new Map();
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error) waiter.fail(new Error(`${waiter.method}: ${message.error.message}`));
      else waiter.ok(message.result);
    };
  }

  send(method, params = {}, sessionId = undefined) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params, sessionId }));
    return new Promise((ok, fail) => this.pending.set(id, { ok, fail, method }));
  }

  /** Opens `url` as a raw target and returns a page handle. */
  async open(url) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId, targetId);
    await page.send("Page.navigate", { url });
    await page.waitFor("window.benchReady === true", 30_000);
    return page;
  }

  /** Renderer process ids, from the browser's own process list. */
  async rendererPids() {
    const { processInfo } = await this.send("SystemInfo.getProcessInfo");
    return processInfo.filter((p) => p.type === "renderer").map((p) => p.id);
  }

  /** CPU seconds used so far: by every Chromium process, and by renderers alone. */
  async cpuSeconds() {
    const { processInfo } = await this.send("SystemInfo.getProcessInfo");
    const sum = (ps) => ps.reduce((total, p) => total + p.cpuTime, 0);
    return { all: sum(processInfo), renderer: sum(processInfo.filter((p) => p.type === "renderer")) };
  }

  async close() {
    try { await this.send("Browser.close"); } catch { /* already gone */ }
    await new Promise((r) => { if (this.proc.exitCode !== null) r(); else this.proc.once("exit", r); });
    rmSync(this.profile, { recursive: true, force: true });
  }
}

export class Page {
  constructor(browser, sessionId, targetId) {
    Object.assign(this, { browser, sessionId, targetId });
  }

  send(method, params = {}) {
    return this.browser.send(method, params, this.sessionId);
  }

  async evaluate(expression) {
    const { result, exceptionDetails } = await this.send("Runtime.evaluate", {
      expression, awaitPromise: true, returnByValue: true,
    });
    if (exceptionDetails) {
      throw new Error(exceptionDetails.exception?.description ?? exceptionDetails.text);
    }
    return result.value;
  }

  async waitFor(expression, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try { if (await this.evaluate(expression)) return; } catch { /* navigating */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${expression}`);
  }

  /** Gives the page's file input a disk-backed File. */
  async setFile(selector, path) {
    const { root } = await this.send("DOM.getDocument", { depth: 0 });
    const { nodeId } = await this.send("DOM.querySelector", { nodeId: root.nodeId, selector });
    await this.send("DOM.setFileInputFiles", { nodeId, files: [path] });
  }

  /** JS heap used plus ArrayBuffer backing stores, in bytes. */
  async heapBytes() {
    const { usedSize, backingStorageSize } = await this.send("Runtime.getHeapUsage");
    return { used: usedSize, backing: backingStorageSize ?? 0 };
  }

  async collectGarbage() {
    await this.send("HeapProfiler.collectGarbage");
  }
}
