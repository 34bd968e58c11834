/** drizzle-kit migration folders for the tests of `migrate()`. */

/** Writes a drizzle-kit migration folder: `[tag, sql]` pairs, one journal entry a second apart. */
export async function writeMigrations(
  dir: string,
  migrations: [string, string][],
  name = "drizzle",
  breakpoints = true,
): Promise<string> {
  const folder = `${dir}/${name}`;
  await Deno.mkdir(`${folder}/meta`, { recursive: true });
  const entries = migrations.map(([tag], idx) => ({
    idx,
    version: "6",
    when: 1_700_000_000_000 + idx * 1000,
    tag,
    breakpoints,
  }));
  for (const [tag, text] of migrations) await Deno.writeTextFile(`${folder}/${tag}.sql`, text);
  await Deno.writeTextFile(
    `${folder}/meta/_journal.json`,
    JSON.stringify({ version: "7", dialect: "sqlite", entries }),
  );
  return folder;
}
