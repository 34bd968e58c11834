/**
 * Test helper: a cluster of `dqlite-demo` processes (go-dqlite's demo
 * application, Debian package `go-dqlite`) on loopback ports picked free,
 * each with its own data directory under one temp directory.
 *
 * @module
 */

import { DqliteCluster } from "../engine/dqlite/cluster.ts";

/** Path of `dqlite-demo`, or null when it is not installed. */
export const DQLITE_DEMO: string | null = findExecutable("dqlite-demo");

function findExecutable(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const path = `${dir}/${name}`;
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there
    }
  }
  return null;
}

/**
 * True (the file's cluster tests are to be ignored) when `dqlite-demo` is not
 * installed, saying so once for `file`; `what`: which of its tests.
 */
export function skipWithoutDqlite(file: string, what = "tests"): boolean {
  if (DQLITE_DEMO !== null) return false;
  console.log(
    `${file}: ${what} skipped: dqlite-demo not found on PATH (apt-get install go-dqlite libdqlite0)`,
  );
  return true;
}

/** Reserves `n` distinct free loopback ports (listened on, then released). */
export function freePorts(n: number): number[] {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of listeners) l.close();
  return ports;
}

/** A node could not listen on its port: another process took it. */
class PortTaken extends Error {
  constructor(logs: string) {
    super(`A dqlite node's port was taken:\n${logs}`);
  }
}

interface Node {
  api: string;
  db: string;
  dir: string;
  log: string;
  child: Deno.ChildProcess | null;
}

/** A running cluster of `dqlite-demo` nodes. */
export class DemoCluster {
  readonly #root: string;
  readonly #nodes: Node[];

  private constructor(root: string, nodes: Node[]) {
    this.#root = root;
    this.#nodes = nodes;
  }

  /**
   * Starts `size` nodes (the first bootstraps, the others join it) and waits
   * until the leader lists `size` voters.
   */
  static async start(size = 3, timeoutMs = 30_000): Promise<DemoCluster> {
    // A port freePorts() found free may be taken before a node binds it (an
    // outgoing connection of a test running beside this one): start again
    // on other ports.
    for (let attempt = 1;; attempt++) {
      try {
        return await DemoCluster.#start(size, timeoutMs);
      } catch (err) {
        if (!(err instanceof PortTaken) || attempt === 3) throw err;
      }
    }
  }

  static async #start(size: number, timeoutMs: number): Promise<DemoCluster> {
    if (DQLITE_DEMO === null) throw new Error("dqlite-demo is not installed");
    const root = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-" });
    const ports = freePorts(size * 2);
    const nodes: Node[] = [];
    for (let i = 0; i < size; i++) {
      const dir = `${root}/node${i + 1}`;
      await Deno.mkdir(dir);
      nodes.push({
        api: `127.0.0.1:${ports[2 * i]}`,
        db: `127.0.0.1:${ports[2 * i + 1]}`,
        dir,
        log: `${root}/node${i + 1}.log`,
        child: null,
      });
    }
    const cluster = new DemoCluster(root, nodes);
    try {
      cluster.#spawn(0);
      await cluster.waitVoters(1, timeoutMs);
      for (let i = 1; i < size; i++) cluster.#spawn(i);
      await cluster.waitVoters(size, timeoutMs);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  /** Node database addresses (`host:port`), in start order. */
  get addresses(): string[] {
    return this.#nodes.map((n) => n.db);
  }

  /** The temp directory holding the nodes' data and logs. */
  get root(): string {
    return this.#root;
  }

  /** Index of the node serving `address`. */
  indexOf(address: string): number {
    const i = this.#nodes.findIndex((n) => n.db === address);
    if (i === -1) throw new Error(`No node at "${address}"`);
    return i;
  }

  /** True while node `i`'s process runs (as far as this helper knows). */
  running(i: number): boolean {
    return this.#nodes[i].child !== null;
  }

  #spawn(i: number): void {
    const node = this.#nodes[i];
    const args = ["-a", node.api, "-d", node.db, "-D", node.dir];
    if (i !== 0) args.push("-j", this.#nodes[0].db);
    // `exec` keeps the pid of dqlite-demo itself; stderr goes to a log (node crashes land there).
    const quoted = [DQLITE_DEMO!, ...args].map((a) => `'${a}'`).join(" ");
    node.child = new Deno.Command("sh", {
      args: ["-c", `exec ${quoted} >>'${node.log}' 2>&1`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /** Kills node `i` with SIGKILL and waits for its exit. */
  async kill(i: number): Promise<void> {
    const child = this.#nodes[i].child;
    if (child === null) return;
    this.#nodes[i].child = null;
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
  }

  /**
   * Stops node `i` with SIGSTOP: a hung node (or one behind a partition that
   * drops packets). Its sockets stay open and the kernel still accepts TCP
   * connections to it, but it answers nothing. {@link resume} undoes it.
   * Resolves once every thread of the node is stopped (on Linux, read from
   * `/proc`): the kernel stops each thread only when it is next scheduled,
   * and under load a thread went on for milliseconds after `kill()`
   * returned, answering what it had read meanwhile.
   */
  async pause(i: number, ms = 5000): Promise<void> {
    const child = this.#nodes[i].child;
    if (child === null) return;
    child.kill("SIGSTOP");
    if (Deno.build.os !== "linux") return;
    const deadline = performance.now() + ms;
    for (;;) {
      const states = threadStates(child.pid);
      if (states.length > 0 && states.every((s) => "TZX".includes(s))) return;
      if (performance.now() > deadline) {
        throw new Error(`Node ${i} did not stop within ${ms} ms: threads ${states.join("")}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** Lets node `i`, stopped by {@link pause}, run again (SIGCONT). */
  resume(i: number): void {
    try {
      this.#nodes[i].child?.kill("SIGCONT");
    } catch {
      // exited meanwhile
    }
  }

  /** Starts node `i` again on its data directory (it rejoins as it was). */
  restart(i: number): void {
    if (this.#nodes[i].child !== null) throw new Error(`Node ${i} is running`);
    this.#spawn(i);
  }

  /** Waits until the leader reports at least `n` voters among the members. */
  async waitVoters(n: number, timeoutMs = 30_000): Promise<void> {
    const cluster = new DqliteCluster(this.addresses, {
      leaderTimeout: 1_000,
      connectTimeout: 500,
      requestTimeout: 2_000,
    });
    const deadline = performance.now() + timeoutMs;
    let last = "";
    while (performance.now() < deadline) {
      try {
        const members = await cluster.members();
        const voters = members.filter((m) => m.role === 0).length;
        last = `${voters} voters of ${members.length}`;
        if (voters >= n) return;
      } catch (err) {
        last = String(err);
      }
      const logs = this.logs();
      if (logs.includes("failed to set bind address")) throw new PortTaken(logs);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(
      `Cluster did not reach ${n} voters in ${timeoutMs} ms: ${last}\n${this.logs()}`,
    );
  }

  /** The nodes' logs (for failure messages). */
  logs(): string {
    return this.#nodes.map((n, i) => {
      let text = "";
      try {
        text = Deno.readTextFileSync(n.log).slice(-2000);
      } catch {
        // no log yet
      }
      return `--- node ${i + 1} (${n.db})\n${text}`;
    }).join("\n");
  }

  /** Kills every node, waits for them, removes the temp directory. */
  async stop(): Promise<void> {
    await Promise.all(this.#nodes.map((_, i) => this.kill(i)));
    await Deno.remove(this.#root, { recursive: true }).catch(() => {});
  }

  /** Stops, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * The state letter of each thread of process `pid` (`T`: stopped by a
 * signal; `Z`, `X`: exited), from `/proc`.
 */
export function threadStates(pid: number): string[] {
  const states: string[] = [];
  let tasks: Iterable<Deno.DirEntry>;
  try {
    tasks = Deno.readDirSync(`/proc/${pid}/task`);
  } catch {
    return states; // exited
  }
  for (const task of tasks) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
      states.push(stat[stat.lastIndexOf(")") + 2]);
    } catch {
      // exited meanwhile
    }
  }
  return states;
}
