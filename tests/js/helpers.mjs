// Small helpers shared by the Node test files.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait until pred() holds, at most ms; the error names what was awaited (and what was seen).
export async function until(pred, ms, what, seen) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) {
      throw new Error(`timeout waiting for ${what}${seen ? `; saw ${JSON.stringify(seen())}` : ''}`);
    }
    await sleep(10);
  }
}
