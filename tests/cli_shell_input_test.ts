/**
 * `netsqlite shell` input and error output as the sqlite3 shell handles them: a line starting
 * with `#` where a statement may start is a comment, a standard error whose reader went away does
 * not end the session, and Esc pressed alone at the prompt does not eat the next key. Run as a
 * child process against real servers; the interactive cases on a terminal made by `script`.
 */

import assert from "node:assert/strict";
import { canUseTerminal, startServer } from "./_helpers.ts";
import { CLI, cli } from "./_cli.ts";

function socketOf(srv: { connectOptions: unknown }): string {
  return (srv.connectOptions as { path: string }).path;
}

const encoder = new TextEncoder();

/** A shell command run on a terminal by `script`, with keys typed and the screen read as it comes. */
class Terminal {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pump: Promise<void>;
  screen = "";

  constructor(command: string) {
    const child = new Deno.Command("script", {
      args: ["-qefc", command, "/dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      // `script` runs the command with $SHELL; PIPESTATUS is bash's.
      env: { NETSQLITE_HISTORY: "", TERM: "xterm", NO_COLOR: "1", SHELL: "/bin/bash" },
    }).spawn();
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#pump = (async () => {
      const dec = new TextDecoder();
      for await (const chunk of child.stdout) {
        this.screen += dec.decode(chunk, { stream: true });
      }
    })();
  }

  async type(keys: string): Promise<void> {
    await this.#writer.write(encoder.encode(keys));
  }

  /** Waits until `text` shows after `from`; returns where it ends. */
  async waitFor(text: string, from: number, ms = 20_000): Promise<number> {
    const deadline = Date.now() + ms;
    while (true) {
      const at = this.screen.indexOf(text, from);
      if (at !== -1) return at + text.length;
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for ${JSON.stringify(text)}: ${
            JSON.stringify(this.screen.slice(-400))
          }`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Ends the terminal; resolves to `script`'s exit status. */
  async close(): Promise<number> {
    await this.#writer.close().catch(() => {});
    const { code } = await this.#child.status;
    await this.#pump;
    return code;
  }
}

function shellCommand(sock: string, redirect = ""): string {
  return `'${Deno.execPath()}' run -A '${CLI}' shell --socket '${sock}' --mode csv ${redirect}`;
}

// ---- '#' comment lines -------------------------------------------------------------------

Deno.test("cli.ts shell: a line starting with # where a statement may start is a comment, as in sqlite3", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const script = "# a comment first\n" +
    "SELECT 1 AS a;\n" +
    "-- an SQL comment leaves nothing pending\n" +
    "#  another\n" +
    "SELECT 2 AS b; \n" +
    "# after a finished statement\n" +
    "/* a block comment\n#inside it is comment text */ SELECT 3 AS c;\n";
  const r = await cli(["shell", "--socket", sock, "--mode", "csv", "--no-headers"], script);
  assert.equal(r.stderr, "");
  assert.equal(r.code, 0);
  assert.equal(r.stdout, "1\r\n2\r\n3\r\n");
  // In -c and in a .read file too.
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/s.sql`, "#!/usr/bin/env netsqlite\nSELECT 4;\n");
    const c = await cli([
      "shell",
      "--socket",
      sock,
      "--mode",
      "csv",
      "--no-headers",
      "-c",
      `# note\nSELECT 5;\n.read '${dir}/s.sql'`,
    ]);
    assert.equal(c.stderr, "");
    assert.equal(c.code, 0);
    assert.equal(c.stdout, "5\r\n4\r\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli.ts shell: # inside a pending statement or after blanks is SQL, as in sqlite3", async () => {
  await using srv = await startServer();
  const sock = socketOf(srv);
  const inside = await cli(["shell", "--socket", sock], "SELECT 1\n# not a comment\n;\n");
  assert.equal(inside.code, 1);
  assert.equal(inside.stdout, "");
  assert.equal(inside.stderr, 'Error: near line 1: SQLITE_ERROR: unrecognized token: "#"\n');
  const indented = await cli(["shell", "--socket", sock], "SELECT 1;\n  # indented\n");
  assert.equal(indented.code, 1);
  assert.match(indented.stderr, /^Error: near line 2: SQLITE_ERROR: unrecognized token: "#"\n$/);
});

Deno.test({
  name: "cli.ts shell on a terminal: a # line at the prompt is a comment, in a statement it is SQL",
  ignore: !canUseTerminal,
  async fn() {
    await using srv = await startServer();
    const term = new Terminal(shellCommand(socketOf(srv)));
    try {
      let at = await term.waitFor("netsqlite> ", 0);
      await term.type("# just a note\r");
      at = await term.waitFor("netsqlite> ", at);
      await term.type("SELECT 6 AS f;\r");
      at = await term.waitFor("f\r\r\n6\r\r\n", at);
      await term.type("SELECT\r");
      at = await term.waitFor("   ...> ", at);
      await term.type("#x\r");
      at = await term.waitFor("   ...> ", at);
      await term.type("1;\r");
      at = await term.waitFor("Error: SQLITE_ERROR: ", at);
      await term.type(".quit\r");
    } finally {
      assert.equal(await term.close(), 0);
    }
    assert.doesNotMatch(term.screen, /unrecognized token: "#"/);
  },
});

// ---- standard error's reader gone ----------------------------------------------------------

Deno.test({
  name:
    "cli.ts shell on a terminal whose standard error is a pipe closed by its reader goes on after an error",
  ignore: !canUseTerminal,
  async fn() {
    await using srv = await startServer();
    // Standard output stays the terminal (fd 3); standard error goes into `true`, which reads
    // nothing and ends at once, so writing an error fails with EPIPE.
    const term = new Terminal(
      `{ ${shellCommand(socketOf(srv), "2>&1 >&3 3>&-")} | true; ` +
        'echo "status ${PIPESTATUS[0]}"; } 3>&1',
    );
    try {
      let at = await term.waitFor("netsqlite> ", 0);
      await term.type("SELECT nosuch;\r");
      at = await term.waitFor("netsqlite> ", at);
      await term.type("SELECT 42 AS n;\r");
      at = await term.waitFor("n\r\r\n42\r\r\n", at);
      await term.type(".exit 3\r");
      await term.waitFor("status ", at);
    } finally {
      await term.close();
    }
    assert.match(term.screen, /status 3\r\n/, term.screen);
    assert.doesNotMatch(term.screen, /BrokenPipe|Uncaught/);
  },
});

Deno.test("cli.ts shell: a script whose standard error's reader is gone still stops at its first error with status 1", async () => {
  await using srv = await startServer();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "shell", "--socket", socketOf(srv), "--mode", "csv"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NETSQLITE_HISTORY: "", NO_COLOR: "1" },
  }).spawn();
  await child.stderr.cancel();
  const w = child.stdin.getWriter();
  await w.write(encoder.encode("SELECT 1 AS a;\nSELECT nosuch;\nSELECT 2 AS b;\n"));
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 1);
  assert.equal(new TextDecoder().decode(out.stdout), "a\r\n1\r\n");
});

// ---- Esc alone -------------------------------------------------------------------------------

Deno.test({
  name:
    "cli.ts shell on a terminal: Esc pressed alone does nothing; the next key is typed, not eaten",
  ignore: !canUseTerminal,
  async fn() {
    await using srv = await startServer();
    const term = new Terminal(shellCommand(socketOf(srv)));
    try {
      let at = await term.waitFor("netsqlite> ", 0);
      await term.type("\x1b");
      // Longer than the wait for the rest of a sequence (500 ms).
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await term.type("SELECT 7 AS g;\r");
      at = await term.waitFor("g\r\r\n7\r\r\n", at);
      // Keys sent with the Esc are still one key: an Alt-key is ignored, an arrow moves.
      await term.type(
        `\x1bxSELECT 8 AS h${"\x1b[D".repeat(5)} + 1${"\x1b[C".repeat(5)};\r`,
      );
      at = await term.waitFor("h\r\r\n9\r\r\n", at);
      await term.type(".quit\r");
    } finally {
      assert.equal(await term.close(), 0);
    }
    assert.doesNotMatch(term.screen, /Error/);
  },
});
