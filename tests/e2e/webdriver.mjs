// A small W3C WebDriver client, for WebKitGTK's MiniBrowser under WebKitWebDriver (the
// engine of Safari, from Debian's webkit2gtk-driver) on an Xvfb display of its own.
import { spawn } from "node:child_process";
import { freePort } from "./support.mjs";

export const MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";

const reaped = (proc) => {
  const reap = () => proc.kill("SIGKILL");
  process.once("exit", reap);
  return proc;
};

/** Starts Xvfb and WebKitWebDriver, and opens a session in MiniBrowser. */
export async function startWebKit() {
  const display = `:${100 + Math.floor(Math.random() * 800)}`;
  const xvfb = reaped(spawn("Xvfb", [display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"], { stdio: "ignore" }));
  const port = await freePort();
  const driver = reaped(spawn("WebKitWebDriver", [`--port=${port}`], { env: { ...process.env, DISPLAY: display }, stdio: "ignore" }));
  const base = `http://127.0.0.1:${port}`;
  const call = async (method, path, body) => {
    const response = await fetch(base + path, { method, headers: { "content-type": "application/json" }, body: body && JSON.stringify(body) });
    const { value } = await response.json();
    if (!response.ok) throw new Error(`WebDriver ${method} ${path}: ${value?.error}: ${value?.message}`);
    return value;
  };
  let session;
  for (let i = 0; i < 100 && !session; i++) {
    try {
      session = await call("POST", "/session", { capabilities: { alwaysMatch: { "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] } } } });
    } catch (error) {
      if (i === 99) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const at = `/session/${session.sessionId}`;
  await call("POST", `${at}/timeouts`, { script: 180_000, pageLoad: 60_000 });
  const webkit = {
    /** Runs `fn` (an async function's source) in the page with `args`; resolves with what it returned. */
    async run(fn, ...args) {
      const script = `const done = arguments[arguments.length - 1];
        Promise.resolve().then(() => (${fn})(...Array.from(arguments).slice(0, -1)))
          .then((value) => done({ value }), (error) => done({ thrown: String(error && error.stack || error) }));`;
      const out = await call("POST", `${at}/execute/async`, { script, args });
      if (out?.thrown) throw new Error(`in WebKit: ${out.thrown}`);
      return out?.value;
    },
    goto: (url) => call("POST", `${at}/url`, { url }),
    reload: () => call("POST", `${at}/refresh`, {}),
    async waitFor(fn, timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      while (!(await webkit.run(fn))) {
        if (Date.now() > until) throw new Error(`timed out waiting for ${fn}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    /** Sets the files of the input matching `css` (WebDriver's Element Send Keys). */
    async setFiles(css, paths) {
      const element = await call("POST", `${at}/element`, { using: "css selector", value: css });
      await call("POST", `${at}/element/${Object.values(element)[0]}/value`, { text: paths.join("\n") });
    },
    async click(css) {
      const element = await call("POST", `${at}/element`, { using: "css selector", value: css });
      await call("POST", `${at}/element/${Object.values(element)[0]}/click`, {});
    },
    /** The current tab's handle. */
    tab: () => call("GET", `${at}/window`),
    /** Opens a new tab and switches to it; resolves with its handle. */
    async newTab() {
      const { handle } = await call("POST", `${at}/window/new`, { type: "tab" });
      await call("POST", `${at}/window`, { handle });
      return handle;
    },
    switchTo: (handle) => call("POST", `${at}/window`, { handle }),
    /** Closes the current tab (switch to another before the next call). */
    closeTab: () => call("DELETE", `${at}/window`),
    async stop() {
      await call("DELETE", at).catch(() => {});
      driver.kill("SIGKILL");
      xvfb.kill("SIGKILL");
    },
  };
  return webkit;
}
