/**
 * The call runner and a video upgrade, on a real Prosody: an audio-only call between two endpoints, each run by
 * `runCall` (the code of the bot, the dialler and the demo) with a tone and a test video to play and a record
 * directory; `addVideo()` mid-call must start the video sources on the new track both ways and a video recorder
 * on each side, and each record must list the video recording and what was sent. With `--echo` the peer's
 * added video comes back.
 */
import assert from "node:assert/strict";
import { endpointOn, quiet } from "./_support.ts";
import { probe } from "../media/analysis.ts";
import { type Call, type Calls, setupCalls } from "../../bot/calls.ts";
import { runCall, type RunOptions } from "../../bot/call_runner.ts";
import type { CallRecord } from "../../bot/records.ts";
import type { PlaySpec } from "../../bot/cli.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { liveFfmpegPids } from "../../media/sources.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The callee's next incoming call. */
function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

/** The recording of `kind` in `record`, checked to be a finished one with packets. */
function recordingOf(record: CallRecord, kind: "audio" | "video") {
  const f = record.recordings.find((r) => r.kind === kind);
  assert.ok(f, `${record.direction}: no ${kind} recording in ${JSON.stringify(record.recordings)}`);
  assert.ok(f.ok && f.bytes > 0 && f.packets > 0, `${record.direction} ${kind}: ${JSON.stringify(f)}`);
  return f;
}

/** Width, height and frame count of the first video stream of `path`. */
async function videoInfo(path: string) {
  const info = await probe(path, "stream=width,height,nb_read_frames", ["-count_frames"]);
  return { width: Number(info.width), height: Number(info.height), frames: Number(info.nb_read_frames) };
}

const play = (hz: number, width: number, height: number): PlaySpec => ({
  audio: { type: "tone", frequency: hz },
  video: { type: "testvideo", width, height },
});

Deno.test({
  name: "runCall: video added mid-call (addVideo) is sent and recorded on both sides, and echoed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "call-runner-upgrade-test-" });
    const stops: (() => Promise<unknown>)[] = [];
    try {
      const alice = await endpointOn(server, "alice", tmp);
      const bob = await endpointOn(server, "bob", tmp);
      stops.push(() => alice.close(), () => bob.close());
      const aliceCalls = await setupCalls(alice, { logger: quiet });
      const bobCalls = await setupCalls(bob, { logger: quiet });
      stops.unshift(() => aliceCalls.stop(), () => bobCalls.stop());

      /** An audio-only call from alice to bob, both run by runCall; alice adds video after 1 s. */
      const upgradedCall = async (
        aliceRun: Omit<RunOptions, "logger">,
        bobRun: Omit<RunOptions, "logger">,
      ) => {
        const incoming = nextIncoming(bobCalls).then((c) => runCall(c, { ...bobRun, logger: quiet }));
        const a = await aliceCalls.call(bob.conn.bareJid, { video: false });
        const runA = runCall(a, { ...aliceRun, logger: quiet });
        const runB = await incoming;
        await Promise.all([runA.mediaStarted, runB.mediaStarted, a.connected, runB.call.connected]);
        assert.deepEqual(a.media, ["audio"]);
        assert.deepEqual(runB.call.media, ["audio"]);
        assert.equal(runA.ffmpegPids().sources.video, undefined, "no video source before the upgrade");
        await sleep(1000);
        assert.equal(await a.addVideo(), true, "bob accepts the video upgrade");
        assert.deepEqual(a.media, ["audio", "video"]);
        // Long enough for at least one keyframe interval of the test video (2 s) after the upgrade.
        await sleep(4000);
        await runA.hangup("test");
        const [recA, recB] = await Promise.all([runA.record, runB.record]);
        return { recA, recB };
      };

      await t.step(
        "both sides play and record the added video (320x240 one way, 176x144 the other)",
        async () => {
          const { recA, recB } = await upgradedCall(
            { play: play(440, 320, 240), recordDir: `${tmp}/a1` },
            { play: play(660, 176, 144), recordDir: `${tmp}/b1` },
          );
          for (const r of [recA, recB]) {
            assert.deepEqual(r.errors, [], `${r.direction}: ${JSON.stringify(r.errors)}`);
            assert.deepEqual(r.media.toSorted(), ["audio", "video"]);
            assert.equal(r.codecs.video?.send.name.toUpperCase(), "VP8", JSON.stringify(r.codecs));
            assert.ok((r.traffic.video?.packetsSent ?? 0) > 0, JSON.stringify(r.traffic));
            assert.ok((r.traffic.video?.packetsReceived ?? 0) > 0, JSON.stringify(r.traffic));
            recordingOf(r, "audio");
          }
          assert.deepEqual(recA.sent.video, { type: "testvideo", width: 320, height: 240 });
          assert.deepEqual(recB.sent.video, { type: "testvideo", width: 176, height: 144 });

          // Bob recorded alice's video at the size she sent, and the reverse.
          const atBob = await videoInfo(recordingOf(recB, "video").path);
          assert.equal(atBob.width, 320, JSON.stringify(atBob));
          assert.equal(atBob.height, 240, JSON.stringify(atBob));
          assert.ok(atBob.frames >= 5, JSON.stringify(atBob));
          const atAlice = await videoInfo(recordingOf(recA, "video").path);
          assert.equal(atAlice.width, 176, JSON.stringify(atAlice));
          assert.equal(atAlice.height, 144, JSON.stringify(atAlice));
          assert.ok(atAlice.frames >= 5, JSON.stringify(atAlice));
        },
      );

      await t.step("echo: bob sends alice's added video back; alice records it at 320x240", async () => {
        const { recA, recB } = await upgradedCall(
          { play: play(440, 320, 240), recordDir: `${tmp}/a2` },
          { play: play(660, 176, 144), echo: true },
        );
        assert.deepEqual(recB.sent, { audio: "echo", video: "echo" });
        assert.deepEqual(recA.errors, [], JSON.stringify(recA.errors));
        const back = await videoInfo(recordingOf(recA, "video").path);
        assert.equal(back.width, 320, JSON.stringify(back));
        assert.equal(back.height, 240, JSON.stringify(back));
        assert.ok(back.frames >= 5, JSON.stringify(back));
      });

      // Nothing is left running: every source and recorder ffmpeg of both calls was reaped.
      assert.deepEqual(liveFfmpegPids(), []);
    } finally {
      for (const stop of stops) await stop().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
