/**
 * Test certificates: a CA and a certificate it signed, made by openssl in a
 * temp directory, for TLS servers on 127.0.0.1.
 */

import assert from "node:assert/strict";

/** PEM text of a CA, and of a certificate it signed with that certificate's key. */
export interface Pem {
  ca: string;
  cert: string;
  key: string;
}

/**
 * Makes a CA and a certificate it signed for `names` (openssl's
 * subjectAltName syntax) in `dir` (as `ca.pem`, `cert.pem`, `key.pem`).
 */
export async function makeCertificate(
  dir: string,
  names = "IP:127.0.0.1",
  subject = "/CN=x",
): Promise<Pem> {
  const ext = `${dir}/leaf.ext`;
  await Deno.writeTextFile(ext, `basicConstraints=critical,CA:FALSE\nsubjectAltName=${names}\n`);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const steps = [
    ["req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "30"]
      .concat(["-subj", "/CN=netsqlite test CA"]),
    ["req", ...ec, "-keyout", `${dir}/key.pem`, "-out", `${dir}/leaf.csr`, "-subj", subject],
    ["x509", "-req", "-in", `${dir}/leaf.csr`, "-CA", `${dir}/ca.pem`, "-CAkey", `${dir}/ca.key`]
      .concat(["-CAcreateserial", "-out", `${dir}/cert.pem`, "-days", "30", "-extfile", ext]),
  ];
  return await openssl(dir, steps);
}

/**
 * A CA and a certificate it signed for 127.0.0.1, valid from `start` to `end`
 * (`YYYYMMDDHHMMSSZ`, past or future: `openssl ca`, since OpenSSL 3.0's
 * `req -x509` and `x509 -req` can only start now).
 */
export async function datedCertificate(
  dir: string,
  start: string,
  end: string,
): Promise<Pem> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await Deno.mkdir(`${dir}/db`);
  await Deno.writeTextFile(`${dir}/db/index.txt`, "");
  await Deno.writeTextFile(`${dir}/db/serial`, "01\n");
  await Deno.writeTextFile(
    `${dir}/ca.cnf`,
    `[ca]\ndefault_ca=c\n[c]\ndir=${dir}/db\ndatabase=${dir}/db/index.txt\n` +
      `serial=${dir}/db/serial\nnew_certs_dir=${dir}/db\ndefault_md=sha256\npolicy=p\n` +
      "x509_extensions=e\n[p]\ncommonName=supplied\n[e]\nbasicConstraints=critical,CA:FALSE\n" +
      "subjectAltName=IP:127.0.0.1\n",
  );
  const steps = [
    ["req", "-x509", ...ec, "-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-days", "1"]
      .concat(["-subj", "/CN=netsqlite test CA"]),
    ["req", ...ec, "-keyout", `${dir}/key.pem`, "-out", `${dir}/leaf.csr`, "-subj", "/CN=dated"],
    ["ca", "-batch", "-config", `${dir}/ca.cnf`, "-cert", `${dir}/ca.pem`, "-keyfile"]
      .concat([`${dir}/ca.key`, "-in", `${dir}/leaf.csr`, "-out", `${dir}/cert.pem`])
      .concat(["-startdate", start, "-enddate", end]),
  ];
  return await openssl(dir, steps);
}

/** Runs openssl with each of `steps`, then reads `ca.pem`, `cert.pem` and `key.pem` from `dir`. */
async function openssl(dir: string, steps: string[][]): Promise<Pem> {
  for (const args of steps) {
    const out = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" })
      .output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  }
  const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
  return { ca: await read("ca.pem"), cert: await read("cert.pem"), key: await read("key.pem") };
}

/** {@link makeCertificate}, or `null` when openssl is not installed. */
export async function makeCertificateIfOpenssl(dir: string): Promise<Pem | null> {
  try {
    const out = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    if (!out.success) return null;
  } catch {
    return null;
  }
  return makeCertificate(dir);
}
