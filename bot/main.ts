/**
 * `deno task bot`: the answering bot. Signs in, publishes its OMEMO device, answers calls (allow-list,
 * answer delay, busy beyond `--max-calls`, time limit), plays `--play` or echoes, records each call under
 * `--record-dir`, and answers OMEMO chat commands from allowed JIDs: `status` and `call me`. With
 * `--download-dir` it receives files (Jingle file transfer, JET-OMEMO; see bot/files.ts) from allowed JIDs, and
 * with `--files-dir` it answers "files" (the list) and "send NAME" (that file, to the asking device).
 * SIGINT/SIGTERM hang up every call (session-terminate), finish recordings, close and exit 0.
 *
 * {@link startBot} is the same bot as a library (the demo and the tests run it in-process).
 *
 * @module
 */
import { createEndpoint, type Endpoint } from "./endpoint.ts";
import { type Call, type Calls, setupCalls } from "./calls.ts";
import { bareJid, type CliConfig, cliOrExit, stderrLogger } from "./cli.ts";
import { type CallRun, checkPlay, runCall } from "./call_runner.ts";
import { stopIdleSources } from "../media/sources.ts";
import { type CallRecord, emitRecord, summarize } from "./records.ts";
import type { Logger } from "../xmpp/mod.ts";
import { type FileTransfers, setupFileTransfer, summarizeTransfer, type TransferRecord } from "./files.ts";

/** A running bot. */
export interface Bot {
  /** The signed-in account (disco, carbons, OMEMO). */
  readonly endpoint: Endpoint;
  /** Call signalling and media for the account. */
  readonly calls: Calls;
  /** Calls in progress. */
  readonly active: ReadonlyMap<string, CallRun>;
  /** Every record so far (also emitted per `--json` / `--record-dir`). */
  readonly records: CallRecord[];
  /** File transfer, when `--download-dir` or `--files-dir` is set. */
  readonly files?: FileTransfers;
  /** Subscribes to call records as calls end. */
  onRecord(cb: (r: CallRecord) => void): () => void;
  /** Hangs up all calls, waits for their records, stops calls and (if it opened it) the endpoint. */
  shutdown(): Promise<void>;
}

/** Options beyond the CLI configuration. */
export interface BotOptions {
  /** Where the bot logs; default stderr at `config.logLevel`. */
  logger?: Logger;
  /** Use this signed-in endpoint instead of signing in (it is not closed by shutdown). */
  endpoint?: Endpoint;
  /** Print a human summary of each call on stderr (default: when not `--json`). */
  summaries?: boolean;
}

/** Reads `--ca`. */
export async function readCa(config: CliConfig): Promise<string | undefined> {
  return config.ca ? await Deno.readTextFile(config.ca) : undefined;
}

/** Signs in `config`'s account (used by the bot and the dialler). */
export async function signIn(config: CliConfig, logger: Logger): Promise<Endpoint> {
  const caPem = await readCa(config);
  return await createEndpoint({
    jid: config.jid,
    password: config.password,
    server: config.server,
    ...(caPem ? { caPem } : {}),
    storeDir: config.storeDir,
    trust: config.trust,
    logger,
  });
}

/** Starts the answering bot. */
export async function startBot(config: CliConfig, options: BotOptions = {}): Promise<Bot> {
  const log = options.logger ?? stderrLogger(config.logLevel);
  const ownEndpoint = !options.endpoint;
  if (!config.echo) await checkPlay(config.play); // a bad --play file fails at start, not in the first call
  const endpoint = options.endpoint ?? await signIn(config, log);
  const allow = new Set(config.allow.map(bareJid));
  const allowed = (jid: string) => allow.size === 0 || allow.has(bareJid(jid));
  const active = new Map<string, CallRun>();
  const records: CallRecord[] = [];
  const recordCbs = new Set<(r: CallRecord) => void>();
  const pending = new Set<Promise<unknown>>();
  const summaries = options.summaries ?? !config.json;
  let stopping = false;

  const calls = await setupCalls(endpoint, {
    verify: config.verify,
    logger: log,
    ...(config.maxCalls !== undefined ? { maxCalls: config.maxCalls } : {}),
    accept: async (peer, media) => {
      if (stopping) return false;
      if (!allowed(peer)) {
        log.warn("call rejected: not on the allow-list", { peer });
        return false;
      }
      if (config.answerDelayMs > 0) await new Promise((r) => setTimeout(r, config.answerDelayMs));
      log.info("answering call", { peer, media });
      return !stopping;
    },
  });

  const track = (call: Call) => {
    const run = runCall(call, {
      play: config.play,
      echo: config.echo,
      ...(config.recordDir ? { recordDir: config.recordDir } : {}),
      logger: log,
      sourceLingerMs: 30_000, // the next call finds the --play encoders warm (media at once)
    });
    active.set(call.sid, run);
    let limit: ReturnType<typeof setTimeout> | undefined;
    if (config.maxCallSeconds) {
      limit = setTimeout(() => void run.hangup("max-call-seconds"), config.maxCallSeconds * 1000);
    }
    call.connected.then(
      () =>
        log.info("call connected", {
          sid: call.sid,
          peer: call.peerJid,
          omemo: call.verification.omemo,
          device: call.verification.deviceId,
        }),
      () => {},
    );
    const done = run.record.then(async (record) => {
      clearTimeout(limit);
      active.delete(call.sid);
      records.push(record);
      // A record directory that cannot take the file (full disk) is logged; the record is still announced.
      await emitRecord(record, {
        json: config.json,
        ...(config.recordDir ? { recordDir: config.recordDir } : {}),
      }).catch((e) => log.error("call record failed", { sid: call.sid, error: String(e) }));
      if (summaries) log.info(`call ended\n${summarize(record)}`);
      for (const cb of recordCbs) cb(record);
    }).catch((e) => log.error("call record failed", { sid: call.sid, error: String(e) }));
    pending.add(done);
    done.finally(() => pending.delete(done));
    return run;
  };

  if (config.downloadDir) await Deno.mkdir(config.downloadDir, { recursive: true, mode: 0o700 });
  if (config.filesDir && !(await Deno.stat(config.filesDir)).isDirectory) {
    throw new Error(`--files-dir ${config.filesDir} is not a directory`);
  }
  const files = config.downloadDir || config.filesDir
    ? await setupFileTransfer(endpoint, {
      logger: log,
      ...(config.downloadDir ? { downloadDir: config.downloadDir } : {}),
      maxFileSize: config.maxFileSize,
      encryption: config.filesUnencrypted === "accept" ? "prefer" : "require",
      accept: (offer, from) => {
        if (stopping) return false;
        if (!allowed(from)) {
          log.warn("file refused: not on the allow-list", { from, name: offer.file.name });
          return false;
        }
        return true;
      },
    })
    : undefined;
  const trackTransfer = (done: Promise<TransferRecord>) => {
    const p = done.then((record) => {
      if (config.json) console.log(JSON.stringify(record));
      else if (summaries) log.info(`file transfer ended\n${summarizeTransfer(record)}`);
    });
    pending.add(p);
    p.finally(() => pending.delete(p));
  };
  const offFiles = files?.onIncoming((t) => trackTransfer(t.done));

  const offIncoming = calls.onIncoming((call) => {
    const run = track(call);
    // Refused by accept(): the record says why.
    if (!allowed(call.peerJid)) run.noteCause("not on the allow-list");
    else if (stopping) run.noteCause("shutdown");
  });

  const offChat = endpoint.onChat((m) => {
    if (m.carbon || !allowed(m.peer)) return;
    const command = m.body.trim().toLowerCase();
    const reply = (text: string) =>
      endpoint.sendChat(m.peer, text).catch((e) => log.warn("cannot reply", { error: String(e) }));
    if (command === "status") {
      const lines = [...active.values()].map((r) =>
        `${r.call.sid}: ${r.call.direction} ${r.call.peerJid} ${r.call.media.join("+")} ${r.call.state}${
          r.call.verification.omemo ? " (OMEMO-verified)" : ""
        }`
      );
      void reply(
        lines.length ? `${lines.length} call(s) in progress:\n${lines.join("\n")}` : "no calls in progress",
      );
    } else if (command === "call me" || command === "call me video") {
      if (stopping) return;
      log.info("calling back", { peer: m.peer });
      calls.call(m.peer, { video: command.endsWith("video") }).then(track, (e) => {
        log.warn("call back failed", { peer: m.peer, error: String(e) });
        void reply(`cannot call you: ${e instanceof Error ? e.message : e}`);
      });
    } else if (config.filesDir && (command === "files" || command === "file")) {
      void listFiles(config.filesDir).then((names) =>
        reply(names.length ? `files:\n${names.join("\n")}` : "no files to send")
      );
    } else if (config.filesDir && files && command.startsWith("send ")) {
      if (stopping || m.from === m.peer) return;
      const name = m.body.trim().slice(5).trim();
      void safeLookup(config.filesDir, name).then(async (path) => {
        if (!path) return void reply(`no file "${name}" (ask "files" for the list)`);
        log.info("sending file on request", { peer: m.from, name });
        try {
          const t = await files.send(m.from, path);
          trackTransfer(t.done);
        } catch (e) {
          log.warn("cannot send file", { peer: m.from, error: String(e) });
          void reply(`cannot send ${name}: ${e instanceof Error ? e.message : e}`);
        }
      });
    } else if (command === "help") {
      void reply(
        `commands: "status", "call me", "call me video"${config.filesDir ? ', "files", "send NAME"' : ""}`,
      );
    }
  });

  log.info("bot online", {
    jid: endpoint.conn.jid,
    device: endpoint.deviceId,
    verify: config.verify,
    allow: [...allow],
  });

  let shutdownP: Promise<void> | undefined;
  return {
    endpoint,
    calls,
    ...(files ? { files } : {}),
    active,
    records,
    onRecord(cb) {
      recordCbs.add(cb);
      return () => recordCbs.delete(cb);
    },
    shutdown() {
      return shutdownP ??= (async () => {
        stopping = true;
        offIncoming();
        offChat();
        offFiles?.();
        await files?.stop().catch(() => {});
        await Promise.all([...active.values()].map((r) => r.hangup("shutdown").catch(() => {})));
        // Calls still ringing (not tracked) end through calls.stop().
        while (pending.size) await Promise.all([...pending]);
        await calls.stop().catch(() => {});
        await stopIdleSources();
        if (ownEndpoint) await endpoint.close().catch(() => {});
      })();
    },
  };
}

/** Regular files directly in `dir` (what "send NAME" can send). */
async function listFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.isFile && !e.name.startsWith(".")) names.push(e.name);
  return names.sort();
}

/**
 * The path of `name` inside `dir`, or undefined: a plain name only (no separators, no `..`, no hidden
 * files), and the resolved file (after symlinks) must still be a regular file inside `dir`.
 */
export async function safeLookup(dir: string, name: string): Promise<string | undefined> {
  if (!name || name.includes("/") || name.includes("\\") || name.startsWith(".") || name.includes("\0")) {
    return undefined;
  }
  try {
    const root = await Deno.realPath(dir);
    const real = await Deno.realPath(`${root}/${name}`);
    if (!real.startsWith(`${root}/`)) return undefined;
    return (await Deno.stat(real)).isFile ? real : undefined;
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const config = cliOrExit("bot");
  const log = stderrLogger(config.logLevel);
  let bot: Bot;
  try {
    bot = await startBot(config, { logger: log });
  } catch (e) {
    log.error(`cannot start: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
  const stop = (signal: string) => {
    log.info(`${signal}: hanging up ${bot.active.size} call(s) and exiting`);
    bot.shutdown().then(() => Deno.exit(0), (e) => {
      log.error("shutdown failed", { error: String(e) });
      Deno.exit(1);
    });
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}
