/**
 * The README's first command: a full local demo on an embedded Prosody.
 *
 * Two accounts sign in over STARTTLS, publish their OMEMO 0.3 devices and exchange end-to-end encrypted
 * messages both ways; then bob runs the answering bot (`startBot`, the code of `deno task bot`) and alice
 * the dialler (`dial`, the code of `deno task call`), which places an OMEMO-verified audio+video call with
 * synthetic media (a 440 Hz tone and ffmpeg's test pattern) for about 4 seconds. Both sides record what
 * they receive and write their call records into `./demo-output/` (or the folder given as argument).
 * Exit status 0 when everything worked, 1 with the reason otherwise.
 *
 * @module
 */
import { type ChatMessage, createEndpoint, type Endpoint } from "../bot/endpoint.ts";
import { startProsody } from "./prosody.ts";
import { resolveFfmpeg } from "../media/ffmpeg.ts";
import { parseCli } from "../bot/cli.ts";
import { type Bot, startBot } from "../bot/main.ts";
import { dial } from "../bot/dial.ts";
import { type CallRecord, summarize } from "../bot/records.ts";

function waitForChat(endpoint: Endpoint, timeoutMs = 10_000): Promise<ChatMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no message arrived at ${endpoint.conn.jid} within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = endpoint.onChat((message) => {
      clearTimeout(timer);
      off();
      resolve(message);
    });
  });
}

const log = (line: string) => console.log(line);
const started = performance.now();
const ms = (from: number) => `${(performance.now() - from).toFixed(0)} ms`;
const outDir = Deno.args[0] ?? "./demo-output";
const CALL_SECONDS = 4;

const server = await startProsody();
const workDir = await Deno.makeTempDir({ prefix: "callbot-demo-" });
const endpoints: Endpoint[] = [];
let bot: Bot | undefined;
let exitCode = 0;
const watchdog = setTimeout(() => {
  console.error("demo failed: did not finish within 60 s");
  Deno.exit(1);
}, 60_000);
try {
  log(`Prosody on ${server.host}:${server.c2sPort} (domain ${server.domain}, self-signed TLS)`);
  const ffmpeg = await resolveFfmpeg().then(
    (f) => `${f.path} (from ${f.source})`,
    (e) => `none: ${e.message}`,
  );
  log(`ffmpeg: ${ffmpeg}`);
  await Deno.remove(outDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(outDir, { recursive: true });
  const passwords = { alice: crypto.randomUUID(), bob: crypto.randomUUID() };
  const alice = await server.createAccount("alice", passwords.alice);
  const bob = await server.createAccount("bob", passwords.bob);
  const quiet = {
    debug() {},
    info() {},
    warn: (m: string, d?: unknown) => console.warn(`warn: ${m}`, d ?? ""),
    error: (m: string, d?: unknown) => console.error(`error: ${m}`, d ?? ""),
  };
  // The same configuration the CLI would build from flags.
  const common = ["--server", `${server.host}:${server.c2sPort}`, "--ca", server.certificatePath];
  const bobConfig = parseCli("bot", [
    ...common,
    "--jid",
    `${bob}/demo`,
    "--password",
    passwords.bob,
    "--store",
    `${workDir}/bob`,
    "--verify",
    "require",
    "--allow",
    alice,
    "--record-dir",
    `${outDir}/bob`,
    "--play",
    "tone:660",
    "--play",
    "testvideo:320x240",
  ]);
  const aliceConfig = parseCli("call", [
    bob,
    ...common,
    "--jid",
    `${alice}/demo`,
    "--password",
    passwords.alice,
    "--store",
    `${workDir}/alice`,
    "--verify",
    "require",
    "--video",
    "--duration",
    String(CALL_SECONDS),
    "--record-dir",
    `${outDir}/alice`,
    "--play",
    "tone:440",
    "--play",
    "testvideo:320x240",
  ]);
  const endpointFor = (c: typeof bobConfig) =>
    createEndpoint({
      jid: c.jid,
      password: c.password,
      server: c.server,
      caPem: server.certificatePem,
      storeDir: c.storeDir,
      logger: quiet,
    });

  let t = performance.now();
  const [a, b] = await Promise.all([endpointFor(aliceConfig), endpointFor(bobConfig)]);
  endpoints.push(a, b);
  log(`signed in and published OMEMO devices in ${ms(t)}:`);
  log(`  ${a.conn.jid}  device ${a.deviceId}  fingerprint ${await a.omemo.ownFingerprint()}`);
  log(`  ${b.conn.jid}  device ${b.deviceId}  fingerprint ${await b.omemo.ownFingerprint()}`);

  t = performance.now();
  let arrival = waitForChat(b);
  await a.sendChat(bob, "Hello Bob, this is end-to-end encrypted with OMEMO 0.3.");
  let message = await arrival;
  log(`alice → bob in ${ms(t)} (X3DH session built from bob's bundle):`);
  log(`  "${message.body}" from device ${message.senderDeviceId}, trust ${message.trust}`);

  t = performance.now();
  arrival = waitForChat(a);
  await b.sendChat(alice, "Hi Alice, received and answered over the same session.");
  message = await arrival;
  log(`bob → alice in ${ms(t)}:`);
  log(`  "${message.body}" from device ${message.senderDeviceId}, trust ${message.trust}`);

  // The call: bob's bot answers, alice's dialler calls for CALL_SECONDS.
  bot = await startBot(bobConfig, { endpoint: b, logger: quiet, summaries: false });
  const botRecord = new Promise<CallRecord>((resolve) => {
    const off = bot!.onRecord((r) => {
      off();
      resolve(r);
    });
  });
  log(`\nalice calls bob's bot (audio+video, OMEMO-verified DTLS required) for ${CALL_SECONDS} s …`);
  t = performance.now();
  const result = await dial(aliceConfig, { endpoint: a, logger: quiet });
  const answered = await Promise.race([
    botRecord,
    new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000)),
  ]);
  log(`call finished in ${ms(t)}\n`);
  log(`caller (alice):\n${summarize(result.record)}\n`);
  if (answered) log(`callee (bob's bot):\n${summarize(answered)}\n`);

  const problems: string[] = [];
  const check = (ok: boolean, what: string) => ok || problems.push(what);
  const r = result.record;
  check(result.ok, `the call did not connect and end normally (${r.ended.reason} ${r.ended.text ?? ""})`);
  check(
    r.verification.omemo && r.verification.device === b.deviceId,
    "the caller did not verify bob's device",
  );
  check(!!answered, "the bot left no call record");
  if (answered) {
    check(
      answered.verification.omemo && answered.verification.device === a.deviceId,
      "bob did not verify alice",
    );
    check(answered.ended.reason === "success", `bob's side ended with ${answered.ended.reason}`);
  }
  for (const rec of [r, answered]) {
    if (!rec) continue;
    for (const kind of ["audio", "video"] as const) {
      check((rec.traffic[kind]?.packetsReceived ?? 0) > 0, `${rec.direction} side received no ${kind}`);
    }
    check(rec.srtpAuthFailures === 0, `${rec.direction} side saw SRTP auth failures`);
    check(
      rec.recordings.length === 2 && rec.recordings.every((f) => f.bytes > 0),
      `${rec.direction} recordings`,
    );
    for (const e of rec.errors) problems.push(`${rec.direction}: ${e}`);
  }
  const files: string[] = [];
  for await (const sub of Deno.readDir(outDir)) {
    if (!sub.isDirectory) continue;
    for await (const f of Deno.readDir(`${outDir}/${sub.name}`)) {
      files.push(`${outDir}/${sub.name}/${f.name}`);
    }
  }
  log(`files written to ${outDir}/:`);
  for (const f of files.sort()) log(`  ${f}  (${(await Deno.stat(f)).size} B)`);
  if (problems.length) throw new Error(problems.join("; "));
  log(`\ndemo OK in ${ms(started)}`);
} catch (err) {
  console.error(`demo failed: ${err instanceof Error ? err.message : err}`);
  exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await bot?.shutdown().catch(() => {});
  for (const endpoint of endpoints) await endpoint.close().catch(() => {});
  await server.stop();
  await Deno.remove(workDir, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
