/**
 * The temporary names a killed server leaves behind (private directories,
 * with or without their socket; sockets, of earlier versions): a server that
 * claims its path removes those of dead processes (the long
 * `.<name>.<pid>.<random>.tmp` form for its own socket name, and the short
 * `.nsq<pid>.<random>` form), and keeps those of live processes, young ones,
 * other sockets' names, and anything that is not a socket. The leftovers are
 * made the way a crash makes them: a child process listens on the name and
 * is killed with SIGKILL.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { MAX_SOCKET_PATH_BYTES } from "../transport/listen.ts";
import { DEAD_LEFTOVER_AGE_MS, temporaryNamePid } from "../transport/_temporary_socket.ts";
import { tempDir } from "./_helpers.ts";

/** Names in `dir`, sorted. */
function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

/** Sets the modification time of `path` `ms` into the past. */
function age(path: string, ms: number): void {
  const then = new Date(Date.now() - ms);
  Deno.utimeSync(path, then, then);
}

/**
 * Runs a child process that listens on `<dir>/<name(pid)>` (its own pid in
 * the name) and kills it with SIGKILL once it listens, as a server killed
 * between its listen and its rename.
 *
 * @returns The name, and the child's pid, dead and reaped.
 */
async function killedListener(
  dir: string,
  name: (pid: number) => string,
): Promise<{ name: string; pid: number }> {
  const code = `const name = (${name.toString()})(Deno.pid);
    Deno.listen({ transport: "unix", path: ${JSON.stringify(dir)} + "/" + name });
    console.log(name);
    setInterval(() => {}, 1000);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", code],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += value;
  }
  child.kill("SIGKILL");
  await reader.cancel();
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL");
  const made = line.trim();
  assert.equal(made, name(child.pid));
  assert.ok(Deno.lstatSync(`${dir}/${made}`).isSocket, "the killed child left no socket");
  return { name: made, pid: child.pid };
}

/** A closed socket file at `path` (bound at `aside`, renamed to `path`, closed). */
function socketFile(path: string, aside = `${path}.aside`): void {
  const l = Deno.listen({ transport: "unix", path: aside });
  Deno.renameSync(aside, path);
  l.close();
  assert.ok(Deno.lstatSync(path).isSocket);
}

/**
 * The names in `dir` but the running server's own private directory, which
 * stays until it closes its listener: there must be exactly one, a
 * temporary name of this process for the socket named `socket` other than
 * the test's own `live` one, an empty `0700` directory.
 */
function namesButOwnPrivateDir(dir: string, socket: string, live: string): string[] {
  const own = names(dir).filter((n) => n !== live && temporaryNamePid(n, socket) === Deno.pid);
  assert.equal(own.length, 1, `the server's own private directory: ${own.join(", ")}`);
  assert.ok(Deno.lstatSync(`${dir}/${own[0]}`).isDirectory);
  assert.equal(Deno.lstatSync(`${dir}/${own[0]}`).mode! & 0o7777, 0o700);
  assert.deepEqual(names(`${dir}/${own[0]}`), []);
  return names(dir).filter((n) => n !== own[0]);
}

const linux = Deno.build.os === "linux";
const older = DEAD_LEFTOVER_AGE_MS + 5_000;

Deno.test({
  name:
    "serve() removes the temporary socket a killed server left and keeps live, young and foreign ones",
  ignore: !linux, // the pid is checked in /proc; elsewhere only leftovers 10 minutes old go
  async fn() {
    await using dir = await tempDir();
    const d = dir.path;
    const sock = `${d}/s.sock`;
    const dead = await killedListener(d, (pid) => `.s.sock.${pid}.0123abcd.tmp`);
    age(`${d}/${dead.name}`, older);
    // The same process killed just now (not yet old enough), and one of another socket's name.
    const young = await killedListener(d, (pid) => `.s.sock.${pid}.4567cdef.tmp`);
    const other = await killedListener(d, (pid) => `.t.sock.${pid}.0123abcd.tmp`);
    age(`${d}/${other.name}`, older);
    // A live process's (this one's) claim, however old.
    const live = `.s.sock.${Deno.pid}.89abcdef.tmp`;
    socketFile(`${d}/${live}`);
    age(`${d}/${live}`, older);
    // Not sockets, though named like one of a dead process.
    const plain = `.s.sock.${dead.pid}.00000000.tmp`;
    Deno.writeTextFileSync(`${d}/${plain}`, "mine");
    age(`${d}/${plain}`, older);
    const link = `.s.sock.${dead.pid}.11111111.tmp`;
    Deno.symlinkSync(`${d}/${other.name}`, `${d}/${link}`);
    const before = names(d);
    assert.deepEqual(before, [dead.name, young.name, other.name, live, plain, link].sort());

    const server = await serve({ database: ":memory:", path: sock });
    try {
      assert.deepEqual(
        namesButOwnPrivateDir(d, "s.sock", live),
        [young.name, other.name, live, plain, link, "s.sock"].sort(),
        "only the dead process's old temporary socket goes",
      );
      await using db = await connect({ path: sock });
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    } finally {
      await server.shutdown();
    }
    assert.equal(Deno.readTextFileSync(`${d}/${plain}`), "mine");

    // Once old enough, the second leftover goes at the next start too.
    age(`${d}/${young.name}`, older);
    await (await serve({ database: ":memory:", path: sock })).shutdown();
    assert.deepEqual(names(d), [other.name, live, plain, link].sort());
  },
});

Deno.test({
  name:
    "serve() removes a killed server's short temporary name (.nsq<pid>.<random>) in a long directory",
  ignore: !linux,
  async fn() {
    await using dir = await tempDir();
    // A directory just long enough for `.nsq<pid>.<8 hex>`, where `.s.<pid>.<8 hex>.tmp` is too long.
    const short = `.nsq${Deno.pid}.01234567`;
    const d = `${dir.path}/${
      "d".repeat(MAX_SOCKET_PATH_BYTES - dir.path.length - 2 - short.length)
    }`;
    Deno.mkdirSync(d);
    const sock = `${d}/s`;
    assert.equal(new TextEncoder().encode(`${d}/${short}`).length, MAX_SOCKET_PATH_BYTES);
    // The killed child's socket is made in the short outer directory and moved in (its pid may
    // have more digits than this process's).
    const dead = await killedListener(dir.path, (pid) => `.nsq${pid}.0123abcd`);
    Deno.renameSync(`${dir.path}/${dead.name}`, `${d}/${dead.name}`);
    age(`${d}/${dead.name}`, older);
    const live = `.nsq${Deno.pid}.89abcdef`;
    socketFile(`${d}/${live}`, `${dir.path}/aside`);
    age(`${d}/${live}`, older);
    const plain = `.nsq${dead.pid}.00000000`;
    Deno.writeTextFileSync(`${d}/${plain}`, "mine");
    age(`${d}/${plain}`, older);

    const server = await serve({ database: ":memory:", path: sock });
    try {
      assert.deepEqual(names(d), [live, plain, "s"].sort()); // listening in place: no private directory
      await using db = await connect({ path: sock });
      assert.deepEqual(await db.values("SELECT 2"), [[2]]);
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(names(d), [live, plain].sort());
  },
});

Deno.test({
  name: "serve() removes the private directory a killed server left, with its socket, and no other",
  ignore: !linux,
  async fn() {
    await using dir = await tempDir();
    const d = dir.path;
    const sock = `${d}/s.sock`;
    // A dead process's pid: a child that has exited and been reaped.
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", ""],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await child.status;
    const pid = child.pid;
    // Killed between its listen and its rename: the socket still inside.
    const withSocket = `.s.sock.${pid}.0123abcd.tmp`;
    Deno.mkdirSync(`${d}/${withSocket}`, { mode: 0o700 });
    socketFile(`${d}/${withSocket}/s`, `${d}/aside`);
    // Killed after its rename: empty.
    const empty = `.s.sock.${pid}.4567cdef.tmp`;
    Deno.mkdirSync(`${d}/${empty}`, { mode: 0o700 });
    // Holding something else than its socket: kept, with what it holds.
    const other = `.s.sock.${pid}.89abcdef.tmp`;
    Deno.mkdirSync(`${d}/${other}`, { mode: 0o700 });
    Deno.writeTextFileSync(`${d}/${other}/s`, "mine");
    // This process's (a claim in progress), however old.
    const live = `.s.sock.${Deno.pid}.01234567.tmp`;
    Deno.mkdirSync(`${d}/${live}`, { mode: 0o700 });
    for (const name of [withSocket, empty, other, live]) age(`${d}/${name}`, older);

    const server = await serve({ database: ":memory:", path: sock });
    try {
      assert.deepEqual(namesButOwnPrivateDir(d, "s.sock", live), [other, live, "s.sock"].sort());
      assert.equal(Deno.readTextFileSync(`${d}/${other}/s`), "mine");
      await using db = await connect({ path: sock });
      assert.deepEqual(await db.values("SELECT 3"), [[3]]);
    } finally {
      await server.shutdown();
    }
    assert.deepEqual(names(d), [other, live].sort());
  },
});

Deno.test({
  name:
    "serve() keeps a dead-looking private directory that a process holds locked (a live server in another pid namespace)",
  ignore: !linux,
  async fn() {
    await using dir = await tempDir();
    const d = dir.path;
    const sock = `${d}/s.sock`;
    // A pid this process cannot see: a child that has exited and been reaped.
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", ""],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    await child.status;
    // Its server listens yet, its private directory emptied by the rename and locked.
    const held = `.s.sock.${child.pid}.0123abcd.tmp`;
    Deno.mkdirSync(`${d}/${held}`, { mode: 0o700 });
    const lock = await Deno.open(`${d}/${held}`, { read: true });
    try {
      assert.ok(await lock.tryLock(false));
      age(`${d}/${held}`, older);
      const server = await serve({ database: ":memory:", path: sock });
      await server.shutdown();
      assert.deepEqual(names(d), [held], "the locked private directory is kept");
    } finally {
      lock.close();
    }
    // Unlocked (its server gone), it goes at the next start.
    await (await serve({ database: ":memory:", path: sock })).shutdown();
    assert.deepEqual(names(d), []);
  },
});

Deno.test("temporaryNamePid() reads the pid of either form for its socket's name only", () => {
  assert.equal(temporaryNamePid(".s.sock.4321.0123abcd.tmp", "s.sock"), 4321);
  assert.equal(temporaryNamePid(".a.b.sock.7.0123abcd.tmp", "a.b.sock"), 7);
  assert.equal(temporaryNamePid(".nsq4321.0123abcd", "s.sock"), 4321);
  assert.equal(temporaryNamePid(".nsq4321.0123abcd", "anything"), 4321);
  for (
    const name of [
      ".t.sock.4321.0123abcd.tmp", // another socket's
      ".s.sock.4321.0123abcd", // no .tmp
      ".s.sock.x.0123abcd.tmp",
      ".s.sock.4321.0123ABCD.tmp",
      ".s.sock.4321.0123abc.tmp",
      ".s.sock.0.0123abcd.tmp",
      ".s.sock.1.4321.0123abcd.tmp", // the name of socket "s.sock.1"
      ".nsq0123abcd", // the short form before pids were in it: no pid to check
      ".nsq4321.0123abcd.tmp",
      "s.sock",
    ]
  ) {
    assert.equal(temporaryNamePid(name, "s.sock"), null, name);
  }
});
