/**
 * End to end media through a real OMEMO-verified call on an embedded Prosody: the dialler (`dial`, the code
 * of `deno task call` and of the demo) plays a 440 Hz tone and a 320x240 test video; the answering bot
 * (`startBot`) records them, then, started with `--echo`, sends them back to the dialler, which records.
 */
import assert from "node:assert/strict";
import { power, probe } from "../media/analysis.ts";
import { parseCli } from "../../bot/cli.ts";
import { type Bot, startBot } from "../../bot/main.ts";
import { dial } from "../../bot/dial.ts";
import { startProsody } from "../../scripts/prosody.ts";
import type { CallRecord } from "../../bot/records.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const CALL_SECONDS = 6;

/** The strongest frequency (100–2000 Hz, 10 Hz steps) of one second of the recording, after 0.5 s. */
async function dominantFrequency(path: string): Promise<number> {
  const pcm = await new Deno.Command("ffmpeg", {
    args: ["-v", "error", "-i", path, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
    stdout: "piped",
  }).output();
  assert.ok(pcm.success, `cannot decode ${path}`);
  const b = pcm.stdout;
  const all = new Int16Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 2));
  assert.ok(all.length >= 24000 + 48000, `${path}: only ${all.length} samples`);
  const x = all.slice(24000, 24000 + 48000);
  let best = 0, bestP = 0;
  for (let f = 100; f <= 2000; f += 10) {
    const p = power(x, f, 48000);
    if (p > bestP) [best, bestP] = [f, p];
  }
  return best;
}

function recordingOf(record: CallRecord, kind: "audio" | "video"): string {
  const f = record.recordings.find((r) => r.kind === kind);
  assert.ok(
    f && f.bytes > 0 && f.packets > 0,
    `${record.direction} ${kind} recording: ${JSON.stringify(record)}`,
  );
  return f.path;
}

function assertVerifiedSuccess(record: CallRecord, peerDevice: number) {
  assert.equal(record.verification.omemo, true, JSON.stringify(record));
  assert.equal(record.verification.device, peerDevice);
  assert.equal(record.ended.reason, "success", JSON.stringify(record.ended));
  assert.equal(record.srtpAuthFailures, 0);
  assert.deepEqual(record.errors, []);
}

Deno.test({
  name: "media call: bot records the dialler's 440 Hz tone and 320x240 video; --echo sends them back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const started = performance.now();
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "media-call-test-" });
    let bot: Bot | undefined;
    try {
      await server.createAccount("bot", "botpw");
      await server.createAccount("caller", "callerpw");
      const common = ["--server", `${server.host}:${server.c2sPort}`, "--ca", server.certificatePath];
      const botConfig = (extra: string[]) =>
        parseCli("bot", [
          ...common,
          "--jid",
          `bot@${server.domain}/b`,
          "--password",
          "botpw",
          "--store",
          `${tmp}/bot`,
          "--verify",
          "require",
          "--allow",
          `caller@${server.domain}`,
          ...extra,
        ]);
      const callerConfig = (recordDir: string) =>
        parseCli("call", [
          `bot@${server.domain}`,
          ...common,
          "--jid",
          `caller@${server.domain}/c`,
          "--password",
          "callerpw",
          "--store",
          `${tmp}/caller`,
          "--verify",
          "require",
          "--video",
          "--duration",
          String(CALL_SECONDS),
          "--record-dir",
          recordDir,
          "--play",
          "tone:440",
          "--play",
          "testvideo:320x240",
        ]);
      /** Runs `b` and a dial; returns both sides' records. */
      const callBot = async (b: Bot, recordDir: string) => {
        const botRecord = new Promise<CallRecord>((resolve) => {
          const off = b.onRecord((r) => {
            off();
            resolve(r);
          });
        });
        const result = await dial(callerConfig(recordDir), { logger: quiet });
        assert.ok(result.ok, JSON.stringify(result.record));
        let timer: ReturnType<typeof setTimeout> | undefined;
        const answered = await Promise.race([
          botRecord,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error("the bot left no call record within 10 s")), 10_000);
          }),
        ]).finally(() => clearTimeout(timer));
        assert.equal(answered.sid, result.record.sid);
        assertVerifiedSuccess(result.record, b.endpoint.deviceId);
        return { caller: result.record, answered };
      };

      await t.step("the bot records the caller's tone (duration, 440 Hz) and video (320x240)", async () => {
        const botDir = `${tmp}/bot-records`;
        // The bot plays a different tone, so what it records can only be the caller's.
        bot = await startBot(botConfig(["--record-dir", botDir, "--play", "tone:660"]), {
          logger: quiet,
          summaries: false,
        });
        const { caller, answered } = await callBot(bot, `${tmp}/caller-records-1`);
        await bot.shutdown();
        bot = undefined;
        assert.equal(answered.direction, "incoming");
        assert.equal(answered.ended.by, "remote");
        assert.ok(caller.verification.identityFingerprint);
        assert.deepEqual(answered.media.toSorted(), ["audio", "video"]);

        // The JSON record the bot wrote: connected from dtlsConnected to ended.
        const onDisk = JSON.parse(await Deno.readTextFile(`${botDir}/${answered.sid}.json`)) as CallRecord;
        assert.equal(onDisk.sid, answered.sid);
        assert.equal(onDisk.verification.omemo, true);
        assert.ok((onDisk.traffic.audio?.packetsReceived ?? 0) > 0);
        assert.ok((onDisk.traffic.video?.packetsReceived ?? 0) > 0);
        const { dtlsConnected, ended } = onDisk.phases;
        assert.ok(dtlsConnected !== undefined && ended !== undefined, JSON.stringify(onDisk.phases));
        const connectedS = (ended - dtlsConnected) / 1000;
        assert.ok(Math.abs(connectedS - CALL_SECONDS) < 1, `connected ${connectedS} s`);
        if (onDisk.connectedMs !== undefined) {
          assert.ok(Math.abs(onDisk.connectedMs / 1000 - connectedS) < 0.01);
        }

        const audio = recordingOf(onDisk, "audio");
        const duration = Number((await probe(audio, "format=duration")).duration);
        assert.ok(
          Math.abs(duration - connectedS) <= 0.1 * connectedS,
          `audio recording ${duration} s vs connected ${connectedS} s (phases ${
            JSON.stringify(onDisk.phases)
          }, ` +
            `recordings ${JSON.stringify(onDisk.recordings)}, traffic ${
              JSON.stringify(onDisk.traffic.audio)
            })`,
        );
        const f = await dominantFrequency(audio);
        assert.ok(Math.abs(f - 440) <= 20, `dominant ${f} Hz`);

        const video = recordingOf(onDisk, "video");
        const info = await probe(video, "stream=width,height,nb_read_frames", ["-count_frames"]);
        assert.equal(info.width, "320", JSON.stringify(info));
        assert.equal(info.height, "240", JSON.stringify(info));
        assert.ok(Number(info.nb_read_frames) > 10, JSON.stringify(info));
      });

      await t.step("echo: the caller records its own 440 Hz tone coming back", async () => {
        bot = await startBot(botConfig(["--echo"]), { logger: quiet, summaries: false });
        const callerDir = `${tmp}/caller-records-2`;
        const { caller, answered } = await callBot(bot, callerDir);
        await bot.shutdown();
        bot = undefined;
        assert.deepEqual(answered.sent, { audio: "echo", video: "echo" });
        const onDisk = JSON.parse(await Deno.readTextFile(`${callerDir}/${caller.sid}.json`)) as CallRecord;
        assert.equal(onDisk.sid, caller.sid);
        assert.ok((onDisk.traffic.audio?.packetsReceived ?? 0) > 0);
        const f = await dominantFrequency(recordingOf(onDisk, "audio"));
        assert.ok(Math.abs(f - 440) <= 20, `echoed dominant ${f} Hz`);
        const info = await probe(recordingOf(onDisk, "video"), "stream=width,height");
        assert.equal(info.width, "320", JSON.stringify(info));
        assert.equal(info.height, "240", JSON.stringify(info));
      });
    } finally {
      await bot?.shutdown().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
    const took = (performance.now() - started) / 1000;
    assert.ok(took < 60, `took ${took.toFixed(1)} s`);
  },
});
