/**
 * `deno task load` as a user runs it: its own Prosody, 50 concurrent OMEMO-verified call setups in one process,
 * none failing, the JSON report written; and its flag parsing.
 */
import assert from "node:assert/strict";
import { parseLoadArgs } from "../../scripts/load.ts";

const TOOL = new URL("../../scripts/load.ts", import.meta.url).pathname;

Deno.test("load: flags", () => {
  assert.deepEqual(parseLoadArgs([]), {
    calls: 100,
    rate: 10,
    concurrency: 10,
    holdMs: 1000,
    verify: "require",
    json: false,
  });
  const o = parseLoadArgs([
    "--calls=20",
    "--rate",
    "2.5",
    "--concurrency",
    "4",
    "--hold=0",
    "--video",
    "--verify",
    "prefer",
    "--callee-max-calls",
    "2",
    "--setup-timeout",
    "5000",
    "--max-duration",
    "30",
    "--report",
    "/tmp/r.json",
  ]);
  assert.equal(o.calls, 20);
  assert.equal(o.rate, 2.5);
  assert.equal(o.concurrency, 4);
  assert.equal(o.holdMs, 0);
  assert.equal(o.video, true);
  assert.equal(o.verify, "prefer");
  assert.equal(o.calleeMaxCalls, 2);
  assert.equal(o.setupTimeoutMs, 5000);
  assert.equal(o.maxDurationMs, 30_000);
  assert.equal(o.reportPath, "/tmp/r.json");
  for (
    const bad of [["--calls", "0"], ["--calls", "1.5"], ["--rate", "0"], ["--verify", "maybe"], ["--bogus"], [
      "--concurrency",
    ]]
  ) assert.throws(() => parseLoadArgs(bad), Error, bad.join(" "));
});

Deno.test({
  name: "load: 50 concurrent OMEMO-verified call setups in one process, none fails; report written",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "load-cli-" });
    try {
      const report = `${dir}/report.json`;
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          TOOL,
          ...["--calls", "50", "--concurrency", "50", "--rate", "500", "--hold", "300"],
          ...["--max-duration", "120", "--report", report],
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `${text}\n${err}`);
      const r = JSON.parse(await Deno.readTextFile(report));
      assert.equal(r.attempted, 50);
      assert.equal(r.succeeded, 50, JSON.stringify(r.failures));
      assert.equal(r.failed, 0);
      assert.equal(r.omemoVerified, 50);
      assert.equal(r.peakConcurrency, 50, "all 50 up at once");
      assert.equal(r.phases["setup (propose→first RTP both ways)"].n, 50);
      assert.match(text, /succeeded 50, failed 0/);
      assert.match(err, /started 50/);

      const bad = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", TOOL, "--calls", "x"] })
        .output();
      assert.equal(bad.code, 2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
