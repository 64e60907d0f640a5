// Small helpers shared by the Node test files.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait until pred() holds, at most ms; the error names what was awaited (and what was seen).
export async function until(pred, ms, what, seen) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${seen ? `; saw ${JSON.stringify(seen())}` : ''}`);
    }
    await sleep(10);
  }
}

// until() with the timeout last, 5 s unless given.
export const waitFor = (pred, what, ms = 5000) => until(pred, ms, what);

// A name no other test (or earlier run against the same server) has used.
let counter = 0;
export const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;
