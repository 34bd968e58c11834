/**
 * What the environment does when it cannot do what it says: a client whose
 * `XDG_RUNTIME_DIR` is another user's (kept by `su`) is told so when it
 * cannot connect to its default socket there, not only "Permission denied";
 * a server that may not read `NETSQLITE_ENGINE` / `NETSQLITE_SQLITE_LIB` (no
 * `--allow-env` for them) warns once at start, naming them and the flag,
 * instead of ignoring them silently. Run on the engine `NETSQLITE_ENGINE`
 * names.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { foreignOwner } from "../transport/_runtime_dir.ts";
import { asNobody, canRunAsNobody, readStdoutUntil, tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const CLI_TS = fileURLToPath(new URL("../cli.ts", import.meta.url));
const CLIENT_TS = new URL("../client.ts", import.meta.url).href;
const ENGINE = Deno.env.get("NETSQLITE_ENGINE") === "node" ? "node" : "ffi";

/** Runs `deno <args>` as nobody with stdin closed (or `stdin` piped in); killed after 30 s. */
async function asNobodyRun(
  args: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...pre] = asNobody;
  const child = new Deno.Command(cmd, {
    args: [...pre, Deno.execPath(), ...args],
    env: { HOME: "/tmp", NO_COLOR: "1", NETSQLITE_HISTORY: "", ...env },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

/** A script printing the message of `connect({ database })`'s failure. */
function connectScript(database: string): string {
  return `import { connect } from ${JSON.stringify(CLIENT_TS)};
    try {
      await connect({ database: ${JSON.stringify(database)}, connectTimeout: 20000 });
      console.log("connected");
    } catch (err) {
      console.log(err.message);
    }`;
}

/** Escapes `text` for a RegExp. */
function re(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

Deno.test({
  name: "connect() to a default socket under another user's XDG_RUNTIME_DIR (kept by su) names " +
    "it, its owner and what to do; refused or missing socket, with or without the uid, CLI too",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o755);
    const shut = `${dir.path}/run-0`; // root's, as /run/user/0
    Deno.mkdirSync(shut, { mode: 0o700 });
    const open = `${dir.path}/run-open`; // root's, but others may search it
    Deno.mkdirSync(open);
    Deno.chmodSync(open, 0o755);
    const own = `${dir.path}/run-65534`; // nobody's own
    Deno.mkdirSync(own, { mode: 0o700 });
    Deno.chownSync(own, 65534, 65534);
    Deno.mkdirSync(`${dir.path}/data`);
    Deno.chmodSync(`${dir.path}/data`, 0o777);
    const db = `${dir.path}/data/a.db`;
    const fix = "; unset it or set it to this user's own, or give the socket path in " +
      "connect({ path })";
    const inherited = ": it was likely inherited from another user (su keeps it)";
    const script = `${dir.path}/connect.ts`;
    Deno.writeTextFileSync(script, connectScript(db));
    Deno.chmodSync(script, 0o644);
    const run = (runtime: string, perms: string[]) =>
      asNobodyRun(["run", ...perms, script], { XDG_RUNTIME_DIR: runtime });

    // Refused (EACCES): the runtime directory is another user's, closed to this one.
    const refused = await run(shut, ["-A"]);
    assert.match(
      refused.stdout,
      new RegExp(
        `^Cannot connect to unix:${re(shut)}/netsqlite/a-[0-9a-f]+\\.sock: Permission denied ` +
          `\\(os error 13\\); XDG_RUNTIME_DIR is "${re(shut)}", which belongs to uid 0, not to ` +
          `this user \\(uid 65534\\)${re(inherited + fix)}\n$`,
      ),
      refused.stderr,
    );
    // Without --allow-sys=uid the owners cannot be compared: that it may not be entered is told.
    const noUid = await run(shut, [
      "--no-prompt",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-env",
    ]);
    assert.match(
      noUid.stdout,
      new RegExp(
        `: Permission denied \\(os error 13\\); XDG_RUNTIME_DIR is "${re(shut)}", which this ` +
          `user may not enter${re(inherited + fix)}\n$`,
      ),
      noUid.stderr,
    );
    // Missing (ENOENT): named before the usual "is the server running?".
    const missing = await run(open, ["-A"]);
    assert.match(
      missing.stdout,
      new RegExp(
        `^Cannot connect to unix:${re(open)}/netsqlite/a-[0-9a-f]+\\.sock: No such file or ` +
          `directory \\(os error 2\\); XDG_RUNTIME_DIR is "${re(open)}", which belongs to uid 0, ` +
          `not to this user \\(uid 65534\\)${re(inherited + fix)} \\(is the server of ` +
          `"${re(db)}" running\\? `,
      ),
      missing.stderr,
    );
    // This user's own runtime directory: no such hint.
    const mine = await run(own, ["-A"]);
    assert.match(mine.stdout, /No such file or directory \(os error 2\) \(is the server of /);
    assert.doesNotMatch(mine.stdout, /XDG_RUNTIME_DIR/);
    // The CLI names its own flag.
    const shell = await asNobodyRun(
      ["run", "-A", CLI_TS, "shell", "--db", db],
      { XDG_RUNTIME_DIR: shut },
      "select 1;\n",
    );
    assert.notEqual(shell.code, 0);
    assert.match(
      shell.stderr,
      new RegExp(
        `XDG_RUNTIME_DIR is "${re(shut)}", which belongs to uid 0, not to this user \\(uid ` +
          `65534\\)${re(inherited)}; unset it or set it to this user's own, or give the socket ` +
          "path with --socket",
      ),
    );
  },
});

Deno.test("foreignOwner() names another owner; this user's own or an unknown one is not named", () => {
  const dir = { runtime: "/run/user/0", owner: 0, user: 1001, shut: true };
  assert.equal(
    foreignOwner(dir),
    ", which belongs to uid 0, not to this user (uid 1001): it was likely inherited from " +
      "another user (su keeps it)",
  );
  assert.equal(foreignOwner({ ...dir, owner: 1001, shut: false }), null);
  assert.equal(
    foreignOwner({ ...dir, user: null }),
    ", which this user may not enter: it was likely inherited from another user (su keeps it)",
  );
  assert.equal(foreignOwner({ ...dir, user: null, shut: false }), null);
  assert.equal(foreignOwner({ ...dir, owner: null, user: null, shut: null }), null);
});

/**
 * Starts `server.ts` with `permissions` (never `-A`) and `args`, with
 * NETSQLITE_ENGINE set to this run's engine and no other NETSQLITE_
 * variable; once it serves, stops it.
 *
 * @returns its warnings (stderr lines) and the engine line it printed.
 */
async function startWith(
  dir: string,
  name: string,
  permissions: string[],
  args: string[] = [],
): Promise<{ warnings: string[]; engine: string; code: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-prompt",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-sys=uid",
      "--allow-ffi",
      ...permissions,
      SERVER_TS,
      "--db",
      `${dir}/${name}.db`,
      "--socket",
      `${dir}/${name}.sock`,
      "--token",
      "a-long-enough-token",
      ...args,
    ],
    env: { ...carried(), NETSQLITE_ENGINE: ENGINE },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    const { text, drained } = await readStdoutUntil(child, /engine \w+/);
    child.kill("SIGTERM");
    const { code } = await child.status;
    await drained;
    const warnings = (await stderr).split("\n").filter((l) => / warn {2}netsqlite: /.test(l));
    return { warnings, engine: /engine (\w+)/.exec(text)?.[1] ?? text, code };
  } finally {
    clearTimeout(timer);
  }
}

/** The variables Deno itself needs (its cache), from this process. */
function carried(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Whether a libsqlite3 loads here (auto then picks ffi). */
const ffiLoads = (() => {
  for (const name of ["libsqlite3.so.0", "libsqlite3.so", "libsqlite3.dylib"]) {
    try {
      Deno.dlopen(name, {}).close();
      return true;
    } catch {
      // next
    }
  }
  return false;
})();

Deno.test({
  name: "server.ts that may not read NETSQLITE_ENGINE or NETSQLITE_SQLITE_LIB warns once at " +
    "start, naming them and --allow-env; not when they are read, denied on purpose or not consulted",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const warning = (names: string[], what: string, flags: string, options: string) =>
      new RegExp(
        ` warn {2}netsqlite: ${
          re(
            `could not read ${names.join(" and ")} (env access not ` +
              `granted): the ${what} chosen as if ${
                names.length === 1 ? "it" : "they"
              } were unset; ` +
              `to use ${names.length === 1 ? "it" : "them"} run with --allow-env=${
                names.join(",")
              } ` +
              `(or --allow-env), or give ${flags} (serve({ ${options} }))`,
          )
        }$`,
      );

    // No --allow-env at all (the token and socket given, so the start needs none).
    const none = await startWith(dir.path, "none", []);
    assert.equal(none.code, 0);
    assert.equal(none.warnings.length, 1, none.warnings.join("\n"));
    assert.match(
      none.warnings[0],
      warning(
        ["NETSQLITE_ENGINE", "NETSQLITE_SQLITE_LIB"],
        "engine and library are",
        "--engine and --sqlite-lib",
        "engine, sqliteLib",
      ),
    );
    assert.equal(none.engine, ffiLoads ? "ffi" : "node", "NETSQLITE_ENGINE was not read");

    // NETSQLITE_ENGINE readable: on node the library is not consulted; on ffi it is, and named.
    const engineOnly = await startWith(dir.path, "engine", ["--allow-env=NETSQLITE_ENGINE"]);
    assert.equal(engineOnly.engine, ENGINE);
    if (ENGINE === "node") {
      assert.deepEqual(engineOnly.warnings, []);
    } else {
      assert.equal(engineOnly.warnings.length, 1, engineOnly.warnings.join("\n"));
      assert.match(
        engineOnly.warnings[0],
        warning(["NETSQLITE_SQLITE_LIB"], "library is", "--sqlite-lib", "sqliteLib"),
      );
    }

    // Both readable, both denied on purpose, or both chosen by flags: no warning.
    const both = await startWith(dir.path, "both", [
      "--allow-env=NETSQLITE_ENGINE,NETSQLITE_SQLITE_LIB",
    ]);
    assert.deepEqual([both.warnings, both.engine], [[], ENGINE]);
    const denied = await startWith(dir.path, "denied", [
      "--deny-env=NETSQLITE_ENGINE,NETSQLITE_SQLITE_LIB",
    ]);
    assert.deepEqual(denied.warnings, []);
    const flags = await startWith(dir.path, "flags", [], ["--engine", "node"]);
    assert.deepEqual([flags.warnings, flags.engine], [[], "node"]);
  },
});
