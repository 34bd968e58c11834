/**
 * Review of the change-feed work: a feed that ends before `subscribe()`
 * returns it (a replay from `since` that lags at once, or ends with
 * `CHANGE_TOO_LARGE`, or its `signal` aborting as it opens) was added to
 * its client's feeds after it had already left them: the client held it,
 * its connection and the changes it buffered, until `close()`. Feeds need
 * the FFI engine.
 */

import assert from "node:assert/strict";
import { runWithGc } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

Deno.test({
  name: "a feed that ended before subscribe() returned it is not held by its client",
  ignore: !ffi,
  async fn() {
    const r = JSON.parse(await runWithGc(new URL("./_review_a_child.ts", import.meta.url)));
    // Each ended lagged at once (its replay of 50 changes over a buffer of 1).
    assert.deepEqual(r.kinds, ["table,lagged"]);
    // Was: all 10 kept by the client. (One may stay referenced from the stack.)
    assert.ok(r.alive <= 1, `${r.alive} of 10 ended feeds still held`);
  },
});
