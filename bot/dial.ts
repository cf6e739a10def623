/**
 * `deno task call JID [--video] [--duration S]`: places one call with the chosen `--play` sources, for a
 * duration or until the peer hangs up, optionally recording; prints a human summary (stderr) or, with
 * `--json`, the call record (stdout). Exit status 0 when the call connected and ended normally, 1 otherwise,
 * 2 on bad flags.
 *
 * {@link dial} is the same as a library (the demo uses it).
 *
 * @module
 */
import type { Endpoint } from "./endpoint.ts";
import { setupCalls } from "./calls.ts";
import { type CliConfig, cliOrExit, stderrLogger } from "./cli.ts";
import { checkPlay, runCall } from "./call_runner.ts";
import { type CallRecord, emitRecord, summarize } from "./records.ts";
import { signIn } from "./main.ts";
import type { Logger } from "../xmpp/mod.ts";

/** Options beyond the CLI configuration. */
export interface DialOptions {
  /** Where the dialler logs; default stderr at `config.logLevel`. */
  logger?: Logger;
  /** Use this signed-in endpoint (left open) instead of signing in. */
  endpoint?: Endpoint;
  /** Resolves to hang up early (e.g. on SIGINT). */
  abort?: Promise<string>;
}

/** The outcome of {@link dial}. */
export interface DialResult {
  /** The call record. */
  record: CallRecord;
  /** Connected and ended with `success`. */
  ok: boolean;
}

/** Places `config.peer` a call and waits for it to end; emits the record per `--json` / `--record-dir`. */
export async function dial(config: CliConfig, options: DialOptions = {}): Promise<DialResult> {
  if (!config.peer) throw new Error("no peer to call");
  await checkPlay(config.play); // a bad --play file fails here, before signing in and ringing anyone
  const log = options.logger ?? stderrLogger(config.logLevel);
  const endpoint = options.endpoint ?? await signIn(config, log);
  const calls = await setupCalls(endpoint, { verify: config.verify, logger: log });
  try {
    const call = await calls.call(config.peer, { video: config.video });
    log.info("calling", { peer: config.peer, sid: call.sid, media: call.media });
    const run = runCall(call, {
      play: config.play,
      ...(config.recordDir ? { recordDir: config.recordDir } : {}),
      logger: log,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    let connected = false;
    call.connected.then(() => {
      connected = true;
      log.info("connected", {
        sid: call.sid,
        omemo: call.verification.omemo,
        device: call.verification.deviceId,
        fingerprint: call.verification.identityFingerprint,
      });
      if (config.durationSeconds) {
        timer = setTimeout(() => void run.hangup("duration"), config.durationSeconds * 1000);
      }
    }, () => {});
    options.abort?.then((why) => run.hangup(why)).catch(() => {});
    const record = await run.record;
    clearTimeout(timer);
    await emitRecord(record, {
      json: config.json,
      ...(config.recordDir ? { recordDir: config.recordDir } : {}),
    });
    return { record, ok: connected && record.ended.reason === "success" };
  } finally {
    await calls.stop().catch(() => {});
    if (!options.endpoint) await endpoint.close().catch(() => {});
  }
}

if (import.meta.main) {
  const config = cliOrExit("call");
  const log = stderrLogger(config.logLevel);
  let interrupted!: (why: string) => void;
  const abort = new Promise<string>((r) => interrupted = r);
  Deno.addSignalListener("SIGINT", () => interrupted("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => interrupted("SIGTERM"));
  try {
    const { record, ok } = await dial(config, { logger: log, abort });
    if (!config.json) console.log(summarize(record));
    Deno.exit(ok ? 0 : 1);
  } catch (e) {
    log.error(`call failed: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
