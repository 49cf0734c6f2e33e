// WebKit (Safari's engine: Debian's WebKitGTK MiniBrowser under WebKitWebDriver, on an
// Xvfb display of its own), driven over W3C WebDriver: the scenarios of
// tests/e2e/engines.mjs. This WebKit has no BYOB readers (Safari has them from 26.4), so
// slices are read through the fallback that copies a default reader's pieces.
import { installed } from "./support.mjs";
import { describeEngine } from "./engines.mjs";
import { startWebKit } from "./webdriver.mjs";

describeEngine("WebKit", async () => {
  if (!installed(null, "WebKitWebDriver", null) || !installed(null, "Xvfb", null)) return null;
  return startWebKit();
}, { byob: false });
