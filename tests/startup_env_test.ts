/**
 * What a server's start makes of its environment: a missing `--allow-env`
 * is a one-line error naming it (exit 1, not the usage of a bad flag); a
 * relative `XDG_RUNTIME_DIR` is ignored (XDG Base Directory Specification),
 * one inherited from another user is named in the error of a refused listen;
 * a `--socket-mode` letting a group or others in is warned about when a
 * directory above the socket keeps them out.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { serve } from "../server.ts";
import { asNobody, canRunAsNobody, readStdoutUntil, tempDir } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const ADDRESS_TS = new URL("../transport/address.ts", import.meta.url).href;

/** Runs `deno <args>` with stdin closed; a server that (wrongly) starts is killed after 30 s. */
async function deno(
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; wrap?: string[] } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, ...pre] = options.wrap ?? [Deno.execPath()];
  const child = new Deno.Command(cmd, {
    args: options.wrap === undefined ? args : [...pre, Deno.execPath(), ...args],
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const out = await child.output().finally(() => clearTimeout(timer));
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test({
  name:
    "server.ts without --allow-env: one line naming --allow-env, exit 1 (not the usage, exit 2)",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const noEnv = [
      "run",
      "--no-prompt",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-sys=uid",
      "--allow-ffi",
      SERVER_TS,
      "--db",
      `${dir.path}/x.db`,
    ];
    const token = await deno(noEnv);
    assert.equal(token.code, 1, token.stderr);
    assert.equal(
      token.stderr,
      "netsqlite: Cannot read NETSQLITE_TOKEN (the token, when neither --token nor --token-file " +
        'is given): Requires env access to "NETSQLITE_TOKEN", run again with the --allow-env flag\n',
    );
    // With a token given, the default socket's directory needs the environment too.
    const socket = await deno([...noEnv, "--token", "a-long-enough-token"]);
    assert.equal(socket.code, 1, socket.stderr);
    assert.equal(
      socket.stderr,
      `netsqlite: Cannot work out the default socket of "${dir.path}/x.db": its directory ` +
        "depends on the environment variables XDG_RUNTIME_DIR, TMPDIR, TMP, TEMP, and reading " +
        'XDG_RUNTIME_DIR was not allowed (Requires env access to "XDG_RUNTIME_DIR", run again ' +
        "with the --allow-env flag); run with --allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP (or " +
        "--allow-env), or give the socket path explicitly\n",
    );
    assert.deepEqual([...Deno.readDirSync(dir.path)], [], "nothing made");
  },
});

Deno.test({
  name: "defaultSocketDir() ignores a relative XDG_RUNTIME_DIR (server and client share it)",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    Deno.mkdirSync(`${dir.path}/run`);
    const script = `import { defaultSocketDir } from ${JSON.stringify(ADDRESS_TS)};
      console.log(defaultSocketDir());`;
    const run = (xdg: string) =>
      deno(["eval", script], {
        cwd: dir.path,
        env: { XDG_RUNTIME_DIR: xdg, TMPDIR: dir.path },
      });
    const relative = await run("run");
    assert.equal(relative.stdout, `${dir.path}/netsqlite-${Deno.uid()}\n`, relative.stderr);
    const absolute = await run(`${dir.path}/run`);
    assert.equal(absolute.stdout, `${dir.path}/run/netsqlite\n`, absolute.stderr);
  },
});

Deno.test({
  name: "an XDG_RUNTIME_DIR of another user (kept by su): the listen error names it, its owner " +
    "and what to do",
  ignore: !canRunAsNobody,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o777);
    const runtime = `${dir.path}/run-0`;
    Deno.mkdirSync(runtime, { mode: 0o700 }); // root's, as /run/user/0
    const out = await deno(
      ["run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`],
      { env: { HOME: "/tmp", XDG_RUNTIME_DIR: runtime }, wrap: asNobody },
    );
    assert.equal(out.code, 1, out.stderr);
    assert.match(
      out.stderr,
      new RegExp(
        `^netsqlite: Cannot listen on unix:${runtime}/netsqlite/a-[0-9a-f]+\\.sock: Permission ` +
          `denied \\(os error 13\\): stat '${runtime}/netsqlite'; XDG_RUNTIME_DIR is ` +
          `"${runtime}", which belongs to uid 0, not to this user \\(uid 65534\\): it was likely ` +
          "inherited from another user \\(su keeps it\\); unset it or set it to this user's own, " +
          "or give the socket path explicitly \\(--socket\\)\n$",
      ),
    );
    assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["run-0"]);
  },
});

/** True when every directory above a new temp directory lets others search it (x). */
const tempParentsOpen = Deno.build.os !== "windows" && (() => {
  const probe = Deno.makeTempDirSync();
  Deno.removeSync(probe);
  for (let d = dirname(probe); d !== dirname(d); d = dirname(d)) {
    if ((Deno.statSync(d).mode! & 0o001) === 0) return false;
  }
  return true;
})();

Deno.test({
  name: "serve() warns when --socket-mode lets a group or others in and a directory above the " +
    "socket keeps them out, naming it; not when they can reach it",
  ignore: !tempParentsOpen, // a closed directory above the temp directory would be named too
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o755);
    Deno.mkdirSync(`${dir.path}/private`);
    Deno.chmodSync(`${dir.path}/private`, 0o700); // as a socket directory an earlier start made
    Deno.mkdirSync(`${dir.path}/group`);
    Deno.chmodSync(`${dir.path}/group`, 0o750);
    const lines: string[] = [];
    const original = console.error;
    console.error = (line: string) => lines.push(line);
    const token = "a-long-enough-token";
    const cases: [string, number, string | null][] = [
      ["private/a.sock", 0o660, null],
      ["group/b.sock", 0o660, null],
      ["group/c.sock", 0o666, token],
      ["private/d.sock", 0o600, null],
    ];
    try {
      for (const [name, socketMode, t] of cases) {
        const path = `${dir.path}/${name}`;
        const db = `${dir.path}/${name.replace(/\W/g, "_")}.db`;
        await (await serve({ database: db, path, socketMode, token: t })).shutdown();
      }
    } finally {
      console.error = original;
    }
    const warned = lines.filter((l) => l.includes("cannot reach it"));
    const gid = Deno.statSync(dir.path).gid; // the socket's: this process's primary group
    assert.equal(warned.length, 2, lines.join("\n"));
    assert.match(
      warned[0],
      new RegExp(
        `^\\S+ warn {2}netsqlite: --socket-mode 660 lets the socket's group \\(gid ${gid}\\) ` +
          `connect to unix:${dir.path}/private/a\\.sock, but they cannot reach it: ` +
          `${dir.path}/private \\(mode 0700\\) does not let them search it; give --socket a path ` +
          `in a directory they can reach, or chmod g\\+x ${dir.path}/private$`,
      ),
    );
    assert.match(
      warned[1],
      new RegExp(
        `--socket-mode 666 lets other users connect to unix:${dir.path}/group/c\\.sock, but ` +
          `they cannot reach it: ${dir.path}/group \\(mode 0750\\) does not let them search it; ` +
          `give --socket a path in a directory they can reach, or chmod o\\+x ${dir.path}/group$`,
      ),
    );
  },
});

Deno.test({
  name: "server.ts --socket-mode 660 on the default socket under XDG_RUNTIME_DIR (always 0700) " +
    "warns that the group cannot reach it, and advises --socket",
  ignore: !tempParentsOpen,
  async fn() {
    await using dir = await tempDir();
    Deno.chmodSync(dir.path, 0o755);
    const runtime = `${dir.path}/run`;
    Deno.mkdirSync(runtime);
    Deno.chmodSync(runtime, 0o700);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`, "--socket-mode", "660"],
      env: { XDG_RUNTIME_DIR: runtime },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    // The warnings come before the start-up line.
    const { drained } = await readStdoutUntil(child, "serving");
    child.kill("SIGTERM");
    await child.status;
    await drained;
    const text = await stderr;
    assert.match(
      text,
      new RegExp(
        `: ${runtime} \\(mode 0700\\) does not let them search it; give --socket a path in a ` +
          `directory they can reach \\(XDG_RUNTIME_DIR, ${runtime}, is private to its user by ` +
          "design: leave it so\\)\n",
      ),
    );
  },
});
