/**
 * Call-setup benchmark: N sequential OMEMO-verified audio calls between two bots through a real Prosody, each
 * propose → first RTP both ways → hangup, timed per phase; next to a bare werift loopback handshake (two
 * media/webrtc.ts peers in-process exchanging SDP directly), the XMPP IQ round trip (XEP-0199 ping) and an
 * independent client calling itself through the same Prosody: two tests/interop/jingle_aiortc_peer.py processes
 * (python3-aiortc + python3-slixmpp, plain XEP-0320 fingerprints) placing sequential audio calls, each propose →
 * first RTP both ways → hangup, timed per phase the same way; and a bot calling that aiortc peer and called by it
 * (the mixed series: a bot that offers is the DTLS server facing OpenSSL). All measured in the same run. Calls,
 * bare handshakes and IQ round trips are interleaved one by one (see {@link SETTLE_MS}), so that the machine's
 * drift affects the three alike; both bots run in this one process (two cores: their CPU work is serialized, as
 * the two peers' of the bare handshake are).
 *
 * Aims: median setup within 2× the bare handshake plus four Prosody round trips, and below the aiortc peer's.
 *
 * Usage: `deno run -A scripts/bench_calls.ts [--calls N] [--aiortc-calls N] [--json] [--nagle]`
 * (`--aiortc-calls` defaults to `--calls`; 0 skips the aiortc and mixed series. It is skipped, with a note, when
 * /usr/bin/python3 lacks aiortc or slixmpp.)
 *
 * @module
 */
import type { Endpoint } from "../bot/endpoint.ts";
import { type Call, type Calls, setupCalls } from "../bot/calls.ts";
import { callPhaseDurations, LOAD_PHASES } from "../bot/load.ts";
import { createPeer, type LocalCandidate, type Peer } from "../media/webrtc.ts";
import { xml } from "../xmpp/mod.ts";
import { type ProsodyServer, startProsody } from "./prosody.ts";
import { JsonLinePeer, type PeerEvent } from "../tests/interop/_peer.ts";
import { endpointOn, quiet } from "../tests/bot/_support.ts";

function parseArgs(
  args: string[],
): { calls: number; aiortcCalls: number; json: boolean; nagle: boolean } {
  let calls = 100;
  let aiortcCalls: number | undefined;
  let json = false;
  let nagle = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--json") json = true;
    else if (a === "--nagle") nagle = true;
    else if (a === "--calls" || a === "-n") calls = Number(args[++i]);
    else if (a.startsWith("--calls=")) calls = Number(a.slice("--calls=".length));
    else if (a === "--aiortc-calls") aiortcCalls = Number(args[++i]);
    else if (a.startsWith("--aiortc-calls=")) aiortcCalls = Number(a.slice("--aiortc-calls=".length));
    else if (a === "--help" || a === "-h") {
      console.log(
        "usage: deno run -A scripts/bench_calls.ts [--calls N] [--aiortc-calls N] [--json] [--nagle]",
      );
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(calls) || calls < 1) throw new Error("--calls must be a positive integer");
  aiortcCalls ??= calls;
  if (!Number.isInteger(aiortcCalls) || aiortcCalls < 0) {
    throw new Error("--aiortc-calls must be a non-negative integer");
  }
  return { calls, aiortcCalls, json, nagle };
}

interface Stats {
  median: number;
  p95: number;
  min: number;
  n: number;
}

function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { median, p95: q(0.95), min: s[0]!, n: s.length };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const progress = (m: string) => Deno.stderr.writeSync(new TextEncoder().encode(m + "\n"));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<T>((_, rej) => t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms)),
  ]).finally(() => clearTimeout(t));
}

function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

/** Pause before each measured call, handshake and ping (ms). */
const SETTLE_MS = 10;

/** The phases reported (those of `deno task load`). */
const PHASES = LOAD_PHASES;

/** One call: propose → first RTP both ways → hangup. Returns the phase durations (ms). */
async function oneCall(aliceCalls: Calls, bobCalls: Calls, bob: Endpoint): Promise<number[]> {
  const incoming = nextIncoming(bobCalls);
  const a = await aliceCalls.call(bob.conn.bareJid);
  const b = await withTimeout(incoming, 10_000, "incoming call");
  await withTimeout(Promise.all([a.connected, b.connected]), 20_000, "connect");
  if (!a.verification.omemo || !b.verification.omemo) throw new Error("call was not OMEMO-verified");
  const pkt = new Uint8Array(32);
  pkt[0] = 0x80;
  pkt[1] = 111;
  for (let i = 0; a.phases.firstRtpReceived === undefined || b.phases.firstRtpReceived === undefined; i++) {
    if (i > 2000) throw new Error("no RTP both ways");
    new DataView(pkt.buffer).setUint16(2, i);
    await Promise.all([a.peer!.sendRtp("audio", pkt), b.peer!.sendRtp("audio", pkt)]);
    if (a.phases.firstRtpReceived === undefined || b.phases.firstRtpReceived === undefined) await sleep(1);
  }
  const out = callPhaseDurations(a.phases, b.phases);
  if (!out) throw new Error(`a call missed a phase: ${JSON.stringify(a.phases)} ${JSON.stringify(b.phases)}`);
  await a.hangup();
  await withTimeout(Promise.all([a.ended, b.ended]), 10_000, "hangup");
  return out;
}

/** Bare werift loopback handshake: two createPeer peers exchanging SDP and candidates directly. */
async function bareHandshake(): Promise<number> {
  const t0 = performance.now();
  const [off, ans] = await Promise.all([
    createPeer({ role: "initiator", audio: true, video: false }),
    createPeer({ role: "responder", audio: true, video: false }),
  ]);
  const wire = (from: Peer, to: Peer, ready: () => boolean) => {
    const q: LocalCandidate[] = [];
    const flush = () => {
      for (const c of q.splice(0)) void to.addRemoteCandidate(c).catch(() => {});
    };
    from.onLocalCandidate((c) => {
      if (!c) return;
      q.push(c);
      if (ready()) flush();
    });
    return flush;
  };
  let offRemote = false, ansRemote = false;
  const flushOff = wire(off, ans, () => ansRemote);
  const flushAns = wire(ans, off, () => offRemote);
  try {
    const offer = await off.createOffer();
    await ans.setRemoteDescription("offer", offer);
    ansRemote = true;
    flushOff();
    const answer = await ans.createAnswer();
    await off.setRemoteDescription("answer", answer);
    offRemote = true;
    flushAns();
    await Promise.all([off.waitConnected(10_000), ans.waitConnected(10_000)]);
    return performance.now() - t0;
  } finally {
    await Promise.all([off.close(), ans.close()]);
  }
}

const PY = "/usr/bin/python3";
const AIORTC_PEER = new URL("../tests/interop/jingle_aiortc_peer.py", import.meta.url).pathname;

/** Why the aiortc series cannot run here (Debian's python3-aiortc / python3-slixmpp missing), or undefined. */
function aiortcUnavailable(): string | undefined {
  try {
    const out = new Deno.Command(PY, {
      args: ["-c", "import aiortc, slixmpp"],
      stdout: "null",
      stderr: "piped",
    })
      .outputSync();
    return out.success ? undefined : `${PY} cannot import aiortc and slixmpp`;
  } catch (e) {
    return `${PY} not runnable: ${e}`;
  }
}

/** Starts tests/interop/jingle_aiortc_peer.py signed in as `user@domain/aiortc` (auto-answering). */
async function startAiortcPeer(server: ProsodyServer, user: string): Promise<JsonLinePeer> {
  await server.createAccount(user, "pw");
  const peer = new JsonLinePeer(PY, [
    AIORTC_PEER,
    ...["--jid", `${user}@${server.domain}/aiortc`, "--password", "pw", "--host", server.host],
    ...["--port", String(server.c2sPort), "--ca", server.certificatePath],
  ]);
  const ready = await peer.next((e) => e.event === "ready" || e.event === "error", 30_000);
  if (ready.event !== "ready") throw new Error(`aiortc peer ${user}: ${JSON.stringify(ready)}`);
  return peer;
}

type PeerPhases = Record<string, number | undefined>;

/**
 * One call between two aiortc peers through Prosody: propose → first RTP both ways (aiortc sends its own 20 ms
 * audio frames) → hangup. Same phases as {@link oneCall}, from the timestamps both peers report (wall-clock ms,
 * one machine).
 */
async function oneAiortcCall(
  caller: JsonLinePeer,
  callee: JsonLinePeer,
  calleeBare: string,
): Promise<number[]> {
  await caller.send({ cmd: "call", to: calleeBare });
  const sid = (await caller.next((e) => e.event === "proposed", 10_000)).sid;
  const ofCall = (e: PeerEvent) => e.sid === sid;
  for (const side of [caller, callee]) {
    const e = await side.next(
      (e) => ofCall(e) && (e.event === "ended" || (e.event === "first_rtp" && e.direction === "in")),
      20_000,
    );
    if (e.event === "ended") throw new Error(`aiortc call ended before media: ${JSON.stringify(e)}`);
  }
  await caller.send({ cmd: "hangup", sid });
  const [ea, eb] = await Promise.all(
    [caller, callee].map((side) => side.next((e) => ofCall(e) && e.event === "ended", 10_000)),
  );
  if (ea!.reason !== "success" || eb!.reason !== "success") {
    throw new Error(`aiortc call did not end with success: ${ea!.reason}/${eb!.reason}`);
  }
  const pa = ea!.phases as PeerPhases, pb = eb!.phases as PeerPhases;
  const out = callPhaseDurations(pa, pb);
  if (!out) throw new Error(`aiortc call missed a phase: ${JSON.stringify(pa)} ${JSON.stringify(pb)}`);
  return out;
}

/**
 * One call between the bot and an aiortc peer (mixed series): `botCalls` — the bot proposes (it offers, so it is
 * the DTLS server facing aiortc's OpenSSL client), otherwise aiortc calls the bot. Propose → first RTP both ways
 * (the bot sends opus-shaped packets, aiortc its own 20 ms frames) → the caller hangs up. Phases as in
 * {@link oneCall}, from the bot's phases and the timestamps the aiortc peer reports (same clock).
 */
async function oneMixedCall(
  botCalls: Calls,
  botBare: string,
  py: JsonLinePeer,
  pyBare: string,
  botCallsOut: boolean,
): Promise<number[]> {
  let call: Call;
  if (botCallsOut) call = await botCalls.call(pyBare);
  else {
    const incoming = nextIncoming(botCalls);
    await py.send({ cmd: "call", to: botBare });
    call = await withTimeout(incoming, 10_000, "incoming aiortc call");
  }
  const sid = call.sid;
  await withTimeout(call.connected, 20_000, "connect (bot ↔ aiortc)");
  let pyFirstIn: number | undefined;
  const pyIn = py.next((e) => e.sid === sid && e.event === "first_rtp" && e.direction === "in", 20_000)
    .then((e) => void (pyFirstIn = e.t as number));
  pyIn.catch(() => {}); // a timeout surfaces as "no RTP both ways" below
  const pkt = new Uint8Array(15);
  pkt[0] = 0x80;
  pkt[1] = 111;
  pkt.set([0xf8, 0xff, 0xfe], 12);
  for (let i = 0; pyFirstIn === undefined || call.phases.firstRtpReceived === undefined; i++) {
    if (i > 1000) {
      throw new Error(
        `no RTP both ways (bot ↔ aiortc): aiortc got ${pyFirstIn}, bot got ${call.phases.firstRtpReceived}, stats ${
          JSON.stringify(call.peer!.stats())
        }`,
      );
    }
    new DataView(pkt.buffer).setUint16(2, i);
    await call.peer!.sendRtp("audio", pkt);
    await sleep(2); // a macrotask turn, so that UDP is read (awaiting a settled promise would not yield)
  }
  if (botCallsOut) await call.hangup();
  else await py.send({ cmd: "hangup", sid });
  const ended = await py.next((e) => e.sid === sid && e.event === "ended", 10_000);
  await withTimeout(call.ended, 10_000, "hangup (bot ↔ aiortc)");
  if (ended.reason !== "success") throw new Error(`bot ↔ aiortc call ended with ${ended.reason}`);
  // aiortc's first RTP in is the one our watcher saw (its record may come later than the hangup)
  const pp = { ...ended.phases as PeerPhases, firstRtpReceived: pyFirstIn }, bp = call.phases;
  const out = botCallsOut ? callPhaseDurations(bp, pp) : callPhaseDurations(pp, bp);
  if (!out) {
    throw new Error(
      `bot ↔ aiortc call missed a phase: bot ${JSON.stringify(bp)} aiortc ${JSON.stringify(pp)}`,
    );
  }
  return out;
}

async function main() {
  const { calls: N, aiortcCalls, json, nagle } = parseArgs(Deno.args);
  const started = performance.now();
  // 170 s for the bot series and the bare handshakes (as before), plus room for the aiortc and mixed series.
  const watchdogMs = 170_000 + aiortcCalls * 4500;
  const watchdog = setTimeout(() => {
    progress(`bench_calls: exceeded ${watchdogMs / 1000} s, aborting`);
    Deno.exit(2);
  }, watchdogMs);
  // Prosody's epoll backend keeps Nagle on by default: two stanzas back to back to the same client (ringing then
  // proceed; IQ result then session-accept) then cost a ~40 ms delayed-ACK stall on loopback. Turn it off, as a
  // latency-minded deployment would (`--nagle` keeps Prosody's default for comparison).
  const server = await startProsody(nagle ? {} : { extraConfig: "network_settings = { nagle = false }\n" });
  const tmp = await Deno.makeTempDir({ prefix: "bench-calls-" });
  const endpoints: Endpoint[] = [];
  const subsystems: Calls[] = [];
  const pyPeers: JsonLinePeer[] = [];
  try {
    const connect = async (user: string) => {
      const e = await endpointOn(server, user, tmp);
      endpoints.push(e);
      return e;
    };
    const alice = await connect("alice");
    const bob = await connect("bob");
    const aliceCalls = await setupCalls(alice, { verify: "require", logger: quiet });
    const bobCalls = await setupCalls(bob, { verify: "require", logger: quiet });
    subsystems.push(aliceCalls, bobCalls);

    // IQ round trip (XEP-0199 ping to the server domain) on the same connection the calls use.
    const ping = () =>
      alice.conn.iq(xml("iq", { type: "get", to: server.domain }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    for (let i = 0; i < 5; i++) await ping();
    const rtts: number[] = [];
    const timedPing = async () => {
      const t = performance.now();
      await ping();
      rtts.push(performance.now() - t);
    };

    // Warm-up call (first OMEMO session build, JIT) and handshake; reported apart.
    progress("warm-up call…");
    const warm = await oneCall(aliceCalls, bobCalls, bob);
    await bareHandshake();
    // Calls, bare werift handshakes (same process) and pings interleaved one each: the machine's speed drifts by
    // ±25 % between runs on a shared VM, and the aim compares the three, so they sample the same moments. Each
    // starts after the same short pause, and calls and handshakes take turns going first, so that both pay equally
    // for whatever tail the other leaves (sockets closing, timers, garbage collection).
    const samples: number[][] = PHASES.map(() => []);
    const bare: number[] = [];
    const measureCall = async () => {
      await sleep(SETTLE_MS);
      const r = await oneCall(aliceCalls, bobCalls, bob);
      r.forEach((v, k) => samples[k]!.push(v));
    };
    const measureBare = async () => {
      await sleep(SETTLE_MS);
      bare.push(await bareHandshake());
    };
    for (let i = 0; i < N; i++) {
      if (i % 2 === 0) {
        await measureCall();
        await measureBare();
      } else {
        await measureBare();
        await measureCall();
      }
      await sleep(SETTLE_MS);
      await ping(); // the round trip counted is the second, on a warm path (the smaller, stricter budget)
      await timedPing();
      if ((i + 1) % 25 === 0) progress(`${i + 1}/${N} calls`);
    }
    while (rtts.length < 20) await timedPing();

    // The independent client (python3-aiortc + slixmpp) calling itself through the same Prosody.
    const aiortcSkipped = aiortcCalls === 0 ? "--aiortc-calls 0" : aiortcUnavailable();
    const aiortcSamples: number[][] = PHASES.map(() => []);
    const mixedSamples = {
      botCalls: PHASES.map(() => [] as number[]),
      aiortcCalls: PHASES.map(() => [] as number[]),
    };
    let aiortcWarm: number[] | undefined;
    if (!aiortcSkipped) {
      progress("aiortc peers: warm-up call…");
      const pyA = await startAiortcPeer(server, "aiortc-a");
      pyPeers.push(pyA);
      const pyB = await startAiortcPeer(server, "aiortc-b");
      pyPeers.push(pyB);
      const pyBBare = `aiortc-b@${server.domain}`;
      aiortcWarm = await oneAiortcCall(pyA, pyB, pyBBare);
      for (let i = 0; i < aiortcCalls; i++) {
        const r = await oneAiortcCall(pyA, pyB, pyBBare);
        r.forEach((v, k) => aiortcSamples[k]!.push(v));
        if ((i + 1) % 25 === 0) progress(`${i + 1}/${aiortcCalls} aiortc calls`);
      }

      // Mixed: a bot with `verify: prefer` (aiortc sends plain XEP-0320 fingerprints) calling aiortc and called by it.
      progress("bot ↔ aiortc: warm-up calls…");
      const carol = await connect("carol");
      const carolCalls = await setupCalls(carol, { verify: "prefer", logger: quiet });
      subsystems.push(carolCalls);
      // a fresh aiortc peer: one that has taken part in the series above sends no RTP to the bot (not understood)
      const pyC = await startAiortcPeer(server, "aiortc-c");
      pyPeers.push(pyC);
      const pyCBare = `aiortc-c@${server.domain}`;
      for (const out of [true, false]) {
        await oneMixedCall(carolCalls, carol.conn.bareJid, pyC, pyCBare, out);
        for (let i = 0; i < aiortcCalls; i++) {
          const r = await oneMixedCall(carolCalls, carol.conn.bareJid, pyC, pyCBare, out);
          r.forEach((v, k) => mixedSamples[out ? "botCalls" : "aiortcCalls"][k]!.push(v));
        }
      }
    }

    const phaseStats = Object.fromEntries(PHASES.map((p, k) => [p, stats(samples[k]!)]));
    const setup = phaseStats[PHASES[PHASES.length - 1]!]!;
    const bareStats = stats(bare);
    const rttStats = stats(rtts);
    const budget = 2 * bareStats.median + 4 * rttStats.median;
    const pass = setup.median <= budget;
    const aiortcPhases = aiortcSkipped
      ? undefined
      : Object.fromEntries(PHASES.map((p, k) => [p, stats(aiortcSamples[k]!)]));
    const aiortcSetup = aiortcPhases?.[PHASES[PHASES.length - 1]!];
    const mixedPhases = aiortcSkipped ? undefined : Object.fromEntries(
      (["botCalls", "aiortcCalls"] as const).map((who) => [
        who,
        Object.fromEntries(PHASES.map((p, k) => [p, stats(mixedSamples[who][k]!)])),
      ]),
    ) as Record<"botCalls" | "aiortcCalls", Record<string, Stats>>;
    const belowAiortc = aiortcSetup ? setup.median < aiortcSetup.median : undefined;
    const result = {
      calls: N,
      prosodyNagle: nagle,
      warmUpSetupMs: warm[warm.length - 1],
      phases: phaseStats,
      bareHandshake: bareStats,
      iqRoundTrip: rttStats,
      aim: "median setup within 2× the bare handshake plus four Prosody round trips",
      budgetMs: budget,
      medianSetupMs: setup.median,
      verdict: pass ? "PASS" : "MISS",
      aiortc: aiortcSkipped ? { skipped: aiortcSkipped } : {
        calls: aiortcCalls,
        fingerprints: "plain XEP-0320 (no OMEMO)",
        warmUpSetupMs: aiortcWarm![aiortcWarm!.length - 1],
        phases: aiortcPhases,
        medianSetupMs: aiortcSetup!.median,
        aim: "bot median setup below the aiortc peer's",
        verdict: belowAiortc ? "PASS" : "MISS",
        botWithAiortc: { calls: aiortcCalls, verify: "prefer (plain XEP-0320)", ...mixedPhases },
      },
      elapsedS: (performance.now() - started) / 1000,
    };
    if (json) console.log(JSON.stringify(result, null, 2));
    else {
      const f = (x: number) => x.toFixed(2).padStart(9);
      console.log(
        `bench_calls: ${N} sequential OMEMO-verified audio calls through Prosody (after 1 warm-up call; Prosody ${
          nagle ? "default Nagle" : "nagle = false"
        })`,
      );
      console.log(`${"phase".padEnd(44)}${"median".padStart(9)}${"p95".padStart(9)}${"min".padStart(9)}  ms`);
      for (const p of PHASES) {
        const s = phaseStats[p]!;
        console.log(`${p.padEnd(44)}${f(s.median)}${f(s.p95)}${f(s.min)}`);
      }
      console.log(
        `${`bare werift loopback handshake (n=${N})`.padEnd(44)}${f(bareStats.median)}${f(bareStats.p95)}${
          f(bareStats.min)
        }`,
      );
      console.log(
        `${`IQ round trip, XEP-0199 ping (n=${rtts.length})`.padEnd(44)}${f(rttStats.median)}${
          f(rttStats.p95)
        }${f(rttStats.min)}`,
      );
      console.log(`warm-up call setup: ${warm[warm.length - 1]!.toFixed(2)} ms`);
      console.log(
        `aim: median setup within 2× the bare handshake plus four Prosody round trips: ${
          setup.median.toFixed(2)
        } ms ≤ 2×${bareStats.median.toFixed(2)} + 4×${rttStats.median.toFixed(2)} = ${
          budget.toFixed(2)
        } ms → ${pass ? "PASS" : "MISS"}`,
      );
      if (aiortcSkipped) console.log(`aiortc peer series skipped: ${aiortcSkipped}`);
      else {
        console.log(
          `aiortc peer (python3-aiortc + slixmpp, tests/interop/jingle_aiortc_peer.py) calling itself through the same Prosody: ${aiortcCalls} sequential audio calls, plain XEP-0320 fingerprints (after 1 warm-up call)`,
        );
        console.log(
          `${"phase".padEnd(44)}${"median".padStart(9)}${"p95".padStart(9)}${"min".padStart(9)}${
            "bot med".padStart(9)
          }  ms`,
        );
        for (const p of PHASES) {
          const s = aiortcPhases![p]!;
          console.log(`${p.padEnd(44)}${f(s.median)}${f(s.p95)}${f(s.min)}${f(phaseStats[p]!.median)}`);
        }
        console.log(`aiortc warm-up call setup: ${aiortcWarm![aiortcWarm!.length - 1]!.toFixed(2)} ms`);
        console.log(
          `bot ↔ aiortc peer (bot with verify=prefer; ${aiortcCalls} calls each way, plain XEP-0320 fingerprints): median (p95) ms`,
        );
        console.log(`${"phase".padEnd(44)}${"bot calls".padStart(18)}${"aiortc calls".padStart(18)}`);
        const mp = (s: Stats) => `${s.median.toFixed(2)} (${s.p95.toFixed(2)})`.padStart(18);
        for (const p of PHASES) {
          console.log(`${p.padEnd(44)}${mp(mixedPhases!.botCalls[p]!)}${mp(mixedPhases!.aiortcCalls[p]!)}`);
        }
        console.log(
          `aim: bot median setup below the aiortc peer's: ${setup.median.toFixed(2)} ms < ${
            aiortcSetup!.median.toFixed(2)
          } ms → ${belowAiortc ? "PASS" : "MISS"}`,
        );
      }
      console.log(`elapsed ${result.elapsedS.toFixed(1)} s`);
    }
  } finally {
    for (const p of pyPeers) await p.close().catch(() => {});
    for (const c of subsystems) await c.stop().catch(() => {});
    for (const e of endpoints) await e.close().catch(() => {});
    await server.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    clearTimeout(watchdog);
  }
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (e) {
    console.error("bench_calls failed:", e);
    Deno.exit(1);
  }
}
