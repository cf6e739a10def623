/**
 * Where the media start delay of a call goes: N audio+video calls from a dialler (tone + test video) to the
 * answering bot (recording, playing a tone) on an embedded Prosody. Per call, in ms after the call connected
 * (DTLS authenticated): when each side's sources fed the call, when the bot's recorders were ready, the first
 * RTP packet sent, and how much shorter the bot's audio recording is than the connected time.
 *
 * The answering side is the bot's code path (`setupCalls` + `runCall`, as `deno task bot` runs it), driven
 * here directly so that `--linger=MS` can keep its encoders warm between calls (`sourceLingerMs`).
 *
 *   deno run -A scripts/bench_media_start.ts [--calls=5] [--seconds=3] [--linger=0] [--json]
 */
import { startProsody } from "./prosody.ts";
import { type Call, setupCalls } from "../bot/calls.ts";
import type { CallRecord } from "../bot/records.ts";
import { stopIdleSources } from "../media/sources.ts";
import { type CallMediaTimings, type CallRun, runCall } from "../bot/call_runner.ts";
import { createEndpoint } from "../bot/endpoint.ts";

const arg = (name: string, dflt: number) =>
  Number(Deno.args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? dflt);
const calls = arg("calls", 5);
const seconds = arg("seconds", 3);
const lingerMs = arg("linger", 0);
const json = Deno.args.includes("--json");
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
/** Timings of a run (absent from older runners, to compare before/after). */
const timingsOf = (run: CallRun): CallMediaTimings =>
  (run as Partial<CallRun>).mediaTimings?.() ?? { sources: {}, recorders: {} };

async function duration(path: string): Promise<number> {
  const out = await new Deno.Command("ffprobe", {
    args: ["-v", "error", "-show_entries", "format=duration", "-of", "default=nw=1:nk=1", path],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(out.stdout).trim()) * 1000;
}

interface Row {
  callerSources: CallMediaTimings["sources"];
  botSources: CallMediaTimings["sources"];
  botRecorders: CallMediaTimings["recorders"];
  callerFirstRtpSentMs: number;
  botFirstRtpReceivedMs: number;
  connectedMs: number;
  audioRecordingMs: number;
  shortfallMs: number;
}

const server = await startProsody();
const tmp = await Deno.makeTempDir({ prefix: "bench-media-start-" });
const rows: Row[] = [];
try {
  await server.createAccount("bot", "botpw");
  await Deno.mkdir(`${tmp}/rec`);
  await server.createAccount("caller", "pw");
  const botEndpoint = await createEndpoint({
    jid: `bot@${server.domain}/b`,
    password: "botpw",
    server: { host: server.host, port: server.c2sPort },
    caPem: server.certificatePem,
    storeDir: `${tmp}/bot`,
    logger: quiet,
  });
  const botCalls = await setupCalls(botEndpoint, { logger: quiet });
  const botRuns = new Map<string, CallRun>();
  botCalls.onIncoming((call: Call) => {
    botRuns.set(
      call.sid,
      runCall(call, {
        play: { audio: { type: "tone", frequency: 660 }, video: { type: "testvideo" } },
        recordDir: `${tmp}/rec`,
        logger: quiet,
        sourceLingerMs: lingerMs,
      }),
    );
  });
  const caller = await createEndpoint({
    jid: `caller@${server.domain}/c`,
    password: "pw",
    server: { host: server.host, port: server.c2sPort },
    caPem: server.certificatePem,
    storeDir: `${tmp}/caller`,
    logger: quiet,
  });
  const callerCalls = await setupCalls(caller, { logger: quiet });
  for (let i = 0; i < calls; i++) {
    const call = await callerCalls.call(botEndpoint.conn.bareJid, { video: true });
    const run = runCall(call, {
      play: { audio: { type: "tone", frequency: 440 }, video: { type: "testvideo" } },
      logger: quiet,
    });
    await call.connected;
    await run.mediaStarted;
    const botRun = botRuns.get(call.sid)!;
    await botRun.mediaStarted;
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const botTimings = timingsOf(botRun);
    await run.hangup("bench");
    const mine = await run.record;
    const theirs: CallRecord = await botRun.record;
    const audio = theirs.recordings.find((r) => r.kind === "audio" && r.ok !== false);
    const audioMs = audio ? await duration(audio.path) : NaN;
    const p = mine.phases;
    const q = theirs.phases;
    rows.push({
      callerSources: timingsOf(run).sources,
      botSources: botTimings.sources,
      botRecorders: botTimings.recorders,
      callerFirstRtpSentMs: (p.firstRtpSent ?? NaN) - (p.dtlsConnected ?? NaN),
      botFirstRtpReceivedMs: (q.firstRtpReceived ?? NaN) - (q.dtlsConnected ?? NaN),
      connectedMs: theirs.connectedMs ?? NaN,
      audioRecordingMs: Math.round(audioMs),
      shortfallMs: Math.round((theirs.connectedMs ?? NaN) - audioMs),
    });
  }
  await botCalls.stop();
  await stopIdleSources();
  await botEndpoint.close();
  await callerCalls.stop();
  await caller.close();
} finally {
  await server.stop();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}

const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
};
const summary = {
  calls: rows.length,
  "caller audio source fed the call (ms after connected)": median(
    rows.map((r) => r.callerSources.audio ?? NaN),
  ),
  "caller video source fed the call": median(rows.map((r) => r.callerSources.video ?? NaN)),
  "bot audio source fed the call": median(rows.map((r) => r.botSources.audio ?? NaN)),
  "bot audio recorder ready": median(rows.map((r) => r.botRecorders.audio ?? NaN)),
  "bot video recorder ready": median(rows.map((r) => r.botRecorders.video ?? NaN)),
  "caller first RTP sent": median(rows.map((r) => r.callerFirstRtpSentMs)),
  "bot first RTP received": median(rows.map((r) => r.botFirstRtpReceivedMs)),
  "bot audio recording shorter than connected by": median(rows.map((r) => r.shortfallMs)),
};
if (json) console.log(JSON.stringify({ summary, rows }));
else {
  for (const [k, v] of Object.entries(summary)) console.log(`${k.padEnd(55)} ${Math.round(v)}`);
}
Deno.exit(0);
