/**
 * bot/load.ts on a real Prosody: calls placed at a rate under a concurrency cap, every one OMEMO-verified with
 * RTP both ways; the report's counts and phases; failures counted by their Jingle reason.
 */
import assert from "node:assert/strict";
import { callPhaseDurations, formatLoadReport, LOAD_PHASES, loadStats, runLoad } from "../../bot/load.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { endpointOn } from "./_support.ts";

Deno.test("loadStats: nearest-rank percentiles, median of an even series, empty series", () => {
  const s = loadStats(Array.from({ length: 100 }, (_, i) => 100 - i));
  assert.deepEqual(s, { n: 100, min: 1, median: 50.5, p95: 95, p99: 99, max: 100 });
  assert.equal(loadStats([]).n, 0);
  assert.ok(Number.isNaN(loadStats([]).median));
});

Deno.test("callPhaseDurations: ICE, DTLS and first RTP are the later of both sides; a missing step gives none", () => {
  const caller = {
    proposed: 0,
    proceed: 2,
    initiate: 3,
    accept: 7,
    iceConnected: 9,
    dtlsConnected: 15,
    firstRtpReceived: 16,
  };
  const callee = { iceConnected: 10, dtlsConnected: 14, firstRtpReceived: 17 };
  assert.deepEqual(callPhaseDurations(caller, callee), [2, 1, 4, 3, 5, 2, 17]);
  assert.equal(callPhaseDurations({ ...caller, accept: undefined }, callee), undefined);
  assert.equal(callPhaseDurations(caller, { ...callee, firstRtpReceived: undefined }), undefined);
});

Deno.test({
  name: "runLoad: calls at a rate under a concurrency cap through a real Prosody; busy answers are counted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startProsody();
    const root = await Deno.makeTempDir({ prefix: "load-test-" });
    const endpoints: Endpoint[] = [];
    try {
      const on = async (user: string) => {
        const e = await endpointOn(server, user, root);
        endpoints.push(e);
        return e;
      };
      const callee = await on("callee");
      const callers = [await on("caller1"), await on("caller2"), await on("caller3")];

      const progress: number[] = [];
      const r = await runLoad(callers, callee, {
        calls: 6,
        rate: 30,
        concurrency: 3,
        holdMs: 150,
        onProgress: (p) => progress.push(p.started),
      });
      assert.equal(r.attempted, 6);
      assert.equal(r.succeeded, 6, JSON.stringify(r.failures));
      assert.equal(r.failed, 0);
      assert.equal(r.omemoVerified, 6, "verify require: every call OMEMO-verified on both sides");
      assert.ok(r.peakConcurrency >= 2 && r.peakConcurrency <= 3, `peak ${r.peakConcurrency}`);
      for (const p of LOAD_PHASES) assert.equal(r.phases[p].n, 6, p);
      const setup = r.phases["setup (propose→first RTP both ways)"];
      assert.ok(setup.min > 0 && setup.min <= setup.median && setup.median <= setup.max);
      assert.ok(r.rtp.sent > 0 && r.rtp.received > 0, JSON.stringify(r.rtp));
      assert.ok(r.cpu.userMs > 0);
      assert.ok(progress.length >= 1, "progress reported");
      assert.match(formatLoadReport(r), /succeeded 6, failed 0/);

      // An answering side that takes one call at a time: the others are answered busy and counted so.
      const busy = await runLoad(callers, callee, {
        calls: 3,
        rate: 100,
        concurrency: 3,
        holdMs: 400,
        calleeMaxCalls: 1,
      });
      assert.equal(busy.attempted, 3);
      assert.equal(busy.succeeded + busy.failed, 3);
      assert.ok(busy.succeeded >= 1, JSON.stringify(busy));
      assert.ok((busy.failures["busy"] ?? 0) >= 1, JSON.stringify(busy.failures));
      assert.match(formatLoadReport(busy), /failed: \d+ × busy/);
    } finally {
      for (const e of endpoints) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
