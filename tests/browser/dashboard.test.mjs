// The dashboard in real headless Chromium (Debian's package, driven by
// playwright-core, which never downloads a browser): sign in with an
// organisation token, add a key, deploy a claw, assign a model, run it, and
// see its usage. Saves a screenshot to artifacts/dashboard.png.
//
// Needs the clawrun binary (CLAWRUN_BIN, or $CARGO_TARGET_DIR/debug/clawrun)
// and the example claws built (claws/target/wasm32-wasip2/release).

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const bin = process.env.CLAWRUN_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "clawrun");
const hello = join(root, "claws/target/wasm32-wasip2/release/hello.wasm");
const browserPath = process.env.CHROMIUM || "/usr/bin/chromium";
const KEY = "sk-proj-browserTESTkey-93bd1e7a55c04f2e8d6b1a7c9QpR";

for (const [what, path, fix] of [
  ["clawrun binary", bin, "build it with `cargo build -p clawrun`"],
  ["hello claw", hello, "build the claws: see scripts/test.sh"],
  ["Chromium", browserPath, "install it with `apt-get install chromium`"],
]) {
  if (!existsSync(path)) {
    console.error(`missing ${what} at ${path}: ${fix}`);
    process.exit(1);
  }
}

const dataDir = mkdtempSync(join(tmpdir(), "clawrun-browser-"));
const env = { ...process.env, CLAWRUN_DATA_DIR: dataDir, CLAWRUN_LOG: "info" };
delete env.CLAWRUN_MASTER_KEY;
const children = [];
const logs = [];

// Starts a long-running clawrun command and resolves with the first line
// of its stdout that matches `pattern`.
function start(args, pattern) {
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  child.stderr.on("data", (d) => logs.push(d.toString()));
  return new Promise((resolveLine, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      logs.push(line + "\n");
      const m = line.match(pattern);
      if (m) resolveLine(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`clawrun ${args[0]} exited with ${code}`)));
  });
}

function cleanup() {
  for (const child of children) child.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
}

let browser;
try {
  execFileSync(bin, ["init"], { env, stdio: "ignore" });
  const created = execFileSync(bin, ["orgs", "create", "acme"], { env }).toString();
  const token = created.trim().split("\n").pop().trim();
  assert.match(token, /^clawrun_tok_/);
  const devAddr = await start(["dev-provider", "--listen", "127.0.0.1:0"], /^dev-provider listening on http:\/\/(\S+)/);
  const addr = await start(["serve", "--listen", "127.0.0.1:0"], /^clawrun serving on http:\/\/(\S+)/);

  browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(`http://${addr}/`);

  // A wrong token is refused with a message; the right one signs in.
  await page.fill("#token", "clawrun_tok_0000000000000000_wrong");
  await page.click("#sign-in-form button[type=submit]");
  await page.locator("#sign-in-note").filter({ hasText: "refused" }).waitFor();
  await page.fill("#token", token);
  await page.click("#sign-in-form button[type=submit]");
  await page.locator("#org-name").filter({ hasText: "acme" }).waitFor();
  // The browser logs the refused sign-in's 401; nothing may fail after it.
  consoleErrors.length = 0;

  // Add a key pointing at dev-provider.
  await page.click("nav button[data-tab=keys]");
  const keyForm = page.locator("#key-form");
  await keyForm.locator("input[name=name]").fill("dev");
  await keyForm.locator("select[name=provider]").selectOption("openai");
  await keyForm.locator("input[name=base_url]").fill(`http://${devAddr}/v1`);
  await keyForm.locator("input[name=secret]").fill(KEY);
  await keyForm.locator("button[type=submit]").click();
  const keyRow = page.locator("#keys-table tr[data-key=dev]");
  await keyRow.waitFor();
  assert.match(await keyRow.innerText(), /sk-\.\.\.9QpR/);
  assert.equal(await keyForm.locator("input[name=secret]").inputValue(), "");

  // Deploy the hello claw from a file.
  await page.click("nav button[data-tab=claws]");
  const deployForm = page.locator("#deploy-form");
  await deployForm.locator("input[name=name]").fill("hello");
  await deployForm.locator("input[name=file]").setInputFiles(hello);
  await deployForm.locator("button[type=submit]").click();
  const clawRow = page.locator("#claws-table tr[data-claw=hello]");
  await clawRow.waitFor();

  // Assign it the key and a model, in place.
  await clawRow.locator("select.assign-key").selectOption("dev");
  await clawRow.locator("input.assign-model").fill("gpt-4o-mini");
  await clawRow.locator("button.assign").click();
  await page.locator("#status").filter({ hasText: "Assigned hello" }).waitFor();

  // Run it.
  await clawRow.locator("button.run").click();
  await page.locator("#run-form textarea[name=input]").fill("from the browser");
  await page.locator("#run-form button[type=submit]").click();
  await page.locator("#run-output").filter({ hasText: "from the browser" }).waitFor({ timeout: 60000 });
  assert.match(await page.locator("#run-usage").innerText(), /1 model call\(s\), \d+ input and \d+ output tokens/);

  // Its usage shows on the usage tab, in the chart and the tables.
  await page.click("nav button[data-tab=usage]");
  const clawUsage = page.locator("#usage-claw tbody tr").filter({ hasText: "hello" });
  await clawUsage.waitFor();
  const cells = await clawUsage.locator("td").allInnerTexts();
  assert.equal(cells[1], "1", `one call for hello: ${cells}`);
  assert.ok(Number(cells[2]) > 0 && Number(cells[3]) > 0, `tokens: ${cells}`);
  await page.locator("#usage-chart svg rect").first().waitFor();
  await page.locator("#usage-records tbody tr").first().waitFor();
  assert.match(await page.locator("#usage-records").innerText(), /gpt-4o-mini/);

  mkdirSync(join(here, "artifacts"), { recursive: true });
  await page.screenshot({ path: join(here, "artifacts", "dashboard.png"), fullPage: true });

  // The key is in no page, storage or console after entry.
  await page.click("nav button[data-tab=audit]");
  await page.locator("#audit-table tbody tr").first().waitFor();
  const html = await page.content();
  const storage = await page.evaluate(() => JSON.stringify({ ...sessionStorage, ...localStorage }));
  for (const [where, text] of [["page", html], ["storage", storage], ["server log", logs.join("")]]) {
    assert.ok(!text.includes(KEY), `the key is in the ${where}`);
  }
  assert.deepEqual(consoleErrors, [], "the page logged errors");

  // Signing out forgets the token.
  await page.click("#sign-out");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  console.log("dashboard test passed; screenshot in tests/browser/artifacts/dashboard.png");
} catch (e) {
  console.error("dashboard test failed:", e);
  console.error(logs.join("").slice(-4000));
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
  cleanup();
}
