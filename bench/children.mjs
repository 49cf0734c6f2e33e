// Every process the benchmark starts dies with it. A child that outlives a crashed
// benchmark keeps the test command's log pipe open, and the test command then waits for
// it forever.
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** Kills `child` when this process exits, however it exits. Returns `child`. */
export function reaped(child) {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}
