/**
 * No test changes the environment of the test process. `deno test --parallel`
 * (the `test` task) runs every test file in one process: a variable one test
 * sets or deletes is seen, for as long as it stays so, by the tests of the
 * files running beside it (a server of one file listened in a temporary
 * `XDG_RUNTIME_DIR` another file had set, then deleted). A test that needs
 * another environment runs its code in a child with it: `inEnv()` in
 * tests/_helpers.ts.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { relative } from "node:path";

const TESTS = fileURLToPath(new URL(".", import.meta.url));

/**
 * Files under tests/ that may change their environment, and why: only
 * programs that run as a process of their own (never imported by a test file)
 * belong here.
 */
const ALLOWED: Record<string, string> = {
  "_chdir_child.ts": "changes directory; run only in a child process by inEnv()",
};

/** What changes the process environment, in Deno's API or node:process's. */
const MUTATION = [
  /\bDeno\.env\.(set|delete)\s*\(/,
  /\bDeno\.chdir\s*\(/,
  /\bprocess\.chdir\s*\(/,
  /\bprocess\.env(\.\w+|\[[^\]]+\])\s*(=(?!=)|\?\?=|\|\|=|&&=)/,
  /\bdelete\s+process\.env\b/,
  /\bObject\.assign\s*\(\s*process\.env\b/,
];

/** The lines of `text` that change the environment, as `line: text` (comment lines skipped). */
export function envMutations(text: string): string[] {
  const found: string[] = [];
  text.split("\n").forEach((line, i) => {
    const code = line.trim();
    if (code.startsWith("//") || code.startsWith("*") || code.startsWith("/*")) return;
    if (MUTATION.some((re) => re.test(code))) found.push(`${i + 1}: ${code}`);
  });
  return found;
}

/** The .ts and .mjs files under `dir`, as paths relative to tests/. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...sources(path));
    else if (/\.(ts|mjs)$/.test(entry.name)) out.push(relative(TESTS, path));
  }
  return out.sort();
}

Deno.test("envMutations() finds every way of changing the environment, and not reading it or comments", () => {
  // Spelled through D and P so that this file does not hold what it looks for.
  const [D, P, C] = ["Deno.env", "process.env", "Deno.chdir"];
  const text = [
    `${D}.set("XDG_RUNTIME_DIR", dir);`,
    `  if (v === undefined) ${D}.delete(k);`,
    `${P}.TMPDIR = dir;`,
    `${P}["TMPDIR"] ??= dir;`,
    `delete ${P}.TMPDIR;`,
    `Object.assign(${P}, { TMPDIR: dir });`,
    `${C}(dir);`,
    `const a = ${D}.get("XDG_RUNTIME_DIR");`,
    `if (${P}.TMPDIR === dir) {}`,
    `// ${D}.set() would change every file's environment`,
    ` * never ${D}.delete(name) here`,
  ].join("\n");
  assert.deepEqual(envMutations(text).map((line) => Number(line.split(":")[0])), [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
  ]);
});

Deno.test("tests/ never change the environment of the test process (test files share it under --parallel)", () => {
  const files = sources(TESTS.replace(/\/$/, ""));
  assert.ok(files.includes("_helpers.ts") && files.includes("options_test.ts"), files.join(" "));
  const offenders: string[] = [];
  for (const file of files) {
    if (file in ALLOWED) continue;
    const found = envMutations(Deno.readTextFileSync(`${TESTS}${file}`));
    for (const line of found) offenders.push(`tests/${file}:${line}`);
  }
  assert.deepEqual(
    offenders,
    [],
    "These change the environment every test file running beside them sees; run the code " +
      "that needs another environment in a child with inEnv() (tests/_helpers.ts):\n" +
      offenders.join("\n"),
  );
  // The list says what is true: each file allowed exists and still needs it.
  for (const file of Object.keys(ALLOWED)) {
    assert.ok(files.includes(file), `ALLOWED names ${file}, which is gone`);
    assert.notDeepEqual(envMutations(Deno.readTextFileSync(`${TESTS}${file}`)), [], file);
  }
});
