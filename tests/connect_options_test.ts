/** `connect()` options: resolved and checked once, each bad one with its own error. */

import assert from "node:assert/strict";
import { connect, type ConnectOptions } from "../mod.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { startServer } from "./_helpers.ts";

Deno.test("resolveConnectOptions() fills in every default", async () => {
  const config = await resolveConnectOptions({ path: "/tmp/x.sock" });
  assert.deepEqual(config, {
    addr: { transport: "unix", path: "/tmp/x.sock" },
    database: null,
    maxFrameSize: 64 * 1024 * 1024,
    requestTimeout: 0,
    connectTimeout: 10_000,
    reconnect: true,
    max: 4,
    acquireTimeout: 0,
    token: null,
    tls: null,
    autostart: null,
  });
  assert.deepEqual((await resolveConnectOptions({ port: 5000 })).addr, {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 5000,
  });
  // The database whose default socket the client uses (its lock file may name another).
  assert.equal((await resolveConnectOptions({ database: "/tmp/x.db" })).database, "/tmp/x.db");
  assert.equal((await resolveConnectOptions({})).database, "netsqlite.db");
});

Deno.test("connect() refuses each bad option with a TypeError or RangeError naming it", async () => {
  const cases: [unknown, ErrorConstructor, RegExp][] = [
    [null, TypeError, /Invalid options: expected an object, got null/],
    [{ pth: "/tmp/x.sock" }, TypeError, /Invalid option "pth": not a connect\(\) option/],
    [
      { requestTimeOut: 5 },
      TypeError,
      /^Invalid option "requestTimeOut": not a connect\(\) option; did you mean "requestTimeout"\?$/,
    ],
    [
      { zzzzzz: 1 },
      TypeError,
      /^Invalid option "zzzzzz": not a connect\(\) option \(known: path, /,
    ],
    [{ path: "" }, TypeError, /Invalid option "path": expected a non-empty string, got ""/],
    [{ path: 5 }, TypeError, /Invalid option "path": expected a non-empty string, got 5/],
    [{ hostname: "", port: 1 }, TypeError, /Invalid option "hostname"/],
    [{ database: false }, TypeError, /Invalid option "database"/],
    [
      { path: "/tmp/x", port: 80 },
      TypeError,
      /either "path" \(Unix socket\) or "hostname"\/"port"/,
    ],
    [{ hostname: "localhost" }, TypeError, /"hostname" needs a "port"/],
    [{ port: 0 }, RangeError, /Invalid option "port": 0 is outside 1\.\.65535/],
    [{ port: 70000 }, RangeError, /Invalid option "port": 70000 is outside 1\.\.65535/],
    [{ port: "80" }, TypeError, /Invalid option "port": expected an integer, got "80"/],
    [{ path: "/x", maxFrameSize: 10 }, RangeError, /"maxFrameSize": 10 is outside 1024\.\./],
    [{ path: "/x", maxFrameSize: 1.5 }, TypeError, /"maxFrameSize": expected an integer/],
    [{ path: "/x", requestTimeout: -1 }, RangeError, /"requestTimeout": -1 is outside 0\.\./],
    [
      { path: "/x", requestTimeout: NaN },
      TypeError,
      /"requestTimeout": expected an integer, got NaN/,
    ],
    [{ path: "/x", reconnect: "yes" }, TypeError, /"reconnect": expected a boolean, got "yes"/],
    [{ path: "/x", max: 0 }, RangeError, /Invalid option "max": 0 is outside 1\.\.1024/],
    [{ path: "/x", max: 2.5 }, TypeError, /Invalid option "max": expected an integer, got 2.5/],
    [{ path: "/x", max: 5000 }, RangeError, /Invalid option "max": 5000 is outside 1\.\.1024/],
    [{ path: "/x", connectTimeout: -1 }, RangeError, /"connectTimeout": -1 is outside 0\.\./],
    [{ path: "/x", connectTimeout: 1.5 }, TypeError, /"connectTimeout": expected an integer/],
    [
      { port: 1, tls: "yes" },
      TypeError,
      /^Invalid option "tls": expected true or an object \{ caCerts\?: string\[\] \}, got "yes"$/,
    ],
    [
      { path: "/x", tls: {} },
      TypeError,
      /^Invalid option "tls": TLS is for TCP: give "hostname"\/"port"$/,
    ],
    [
      { port: 1, tls: { ca: ["PEM"] } },
      TypeError,
      /^Invalid option "tls\.ca": not a TLS option \(known: caCerts\): use "caCerts" \(an array of PEM strings\)$/,
    ],
    [{ port: 1, tls: { caCert: "x" } }, TypeError, /^Invalid option "tls\.caCert": not a TLS/],
    [
      { port: 1, tls: { caCerts: "PEM" } },
      TypeError,
      /^Invalid option "tls\.caCerts": expected a non-empty array of PEM strings, got a string$/,
    ],
    [
      { port: 1, tls: { caCerts: ["PEM", new Uint8Array(3)] } },
      TypeError,
      /^Invalid option "tls\.caCerts": expected a non-empty array of PEM strings: element 1 is an object \(Uint8Array\)$/,
    ],
  ];
  for (const [options, cls, message] of cases) {
    await assert.rejects(connect(options as ConnectOptions), (err: unknown) => {
      assert.ok(err instanceof cls, `${JSON.stringify(options)}: ${String(err)}`);
      assert.match((err as Error).message, message);
      return true;
    });
  }
});

Deno.test("resolveConnectOptions(): connectTimeout defaults to requestTimeout when set; tls: true is TLS with the bundled roots", async () => {
  const base = { hostname: "db.example", port: 5000 };
  assert.equal((await resolveConnectOptions(base)).connectTimeout, 10_000);
  assert.equal(
    (await resolveConnectOptions({ ...base, requestTimeout: 2000 })).connectTimeout,
    2000,
  );
  const both = await resolveConnectOptions({ ...base, requestTimeout: 2000, connectTimeout: 0 });
  assert.equal(both.connectTimeout, 0);
  assert.deepEqual((await resolveConnectOptions({ ...base, tls: true })).tls, {});
  assert.equal((await resolveConnectOptions({ ...base, tls: false })).tls, null);
  const pems = ["-----BEGIN CERTIFICATE-----"];
  assert.deepEqual((await resolveConnectOptions({ ...base, tls: { caCerts: pems } })).tls, {
    caCerts: pems,
  });
});

Deno.test("connect({ max: 1 }): inTransaction is true inside transaction(fn), where plain calls join it, and false outside", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v)");
  assert.equal(db.inTransaction, false);
  const inside = await db.transaction(async (tx) => {
    await db.run("INSERT INTO t VALUES (1)"); // joins the transaction (max: 1)
    return [db.inTransaction, tx.inTransaction];
  });
  assert.deepEqual(inside, [true, true]);
  assert.equal(db.inTransaction, false);
  // With several connections, the client's shared pool is never in that transaction.
  await using pool = await connect({ ...srv.connectOptions, max: 2 });
  const seen = await pool.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (2)");
    return pool.inTransaction;
  });
  assert.equal(seen, false);
});

Deno.test("connect() with valid options reports them on the client", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2, requestTimeout: 5000 });
  assert.equal(db.max, 2);
  assert.equal(db.connections, 1);
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});
