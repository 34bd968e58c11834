/** Messages of an FFI engine that cannot load: a missing permission, a library that will not open. */

import assert from "node:assert/strict";
import { loadSqlite } from "../engine/binding/load.ts";
import { tempDir } from "./_helpers.ts";

Deno.test("loadSqlite: a library that will not open says Deno's reason once", () => {
  assert.throws(
    () => loadSqlite({ engine: "ffi", library: "/nonexistent/libsqlite3.so" }),
    (err: Error & { code: string }) => {
      assert.equal(err.code, "SQLITE_LIBRARY_NOT_LOADED");
      assert.match(
        err.message,
        /^Cannot load SQLite through FFI: "\/nonexistent\/libsqlite3\.so": /,
      );
      assert.ok(err.message.split("Could not open library").length <= 2, err.message);
      return true;
    },
  );
});

Deno.test("loadSqlite: --engine ffi without --allow-ffi names the permission, not --sqlite-lib", async () => {
  await using dir = await tempDir();
  const script = `${dir.path}/load.ts`;
  const load = new URL("../engine/binding/load.ts", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { loadSqlite } from "${load}";
try { loadSqlite({ engine: "ffi" }); console.log("loaded"); }
catch (err) { console.log(err.code, err.message); }
`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-read", "--allow-env", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(
    stdout,
    "SQLITE_LIBRARY_NOT_LOADED Cannot load SQLite through FFI: FFI is not permitted: run with " +
      "--allow-ffi for all files: with --allow-ffi=PATH Deno refuses the pointer functions the " +
      "binding needs, or use --engine node\n",
    new TextDecoder().decode(out.stderr),
  );
});
