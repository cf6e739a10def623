/**
 * `deno task send-file JID PATH [--transport auto|s5b|ibb] [--no-encrypt] [--json]`: sends one file over
 * Jingle file transfer (JET-OMEMO encrypted unless `--no-encrypt`) with the same connection flags as the bot
 * and the dialler. JID is a full JID (user@domain/resource) or a bare one: file offers go to one device, so for
 * a bare JID the peer's available resource that advertises file transfer (and JET-OMEMO when encrypting) with
 * the highest priority is picked; that needs a presence subscription to the peer (else: a clear error). A
 * progress bar goes to stderr when it is a terminal; `--json` prints the transfer record on stdout. Exit status 0 when the receiver confirmed the
 * file, 1 on failure (with the reason), 2 on bad flags.
 *
 * {@link sendFile} is the same as a library.
 *
 * @module
 */
import type { Endpoint } from "./endpoint.ts";
import { type CliConfig, cliOrExit, stderrLogger } from "./cli.ts";
import { setupFileTransfer, summarizeTransfer, type TransferRecord } from "./files.ts";
import { signIn } from "./main.ts";
import type { Logger } from "../xmpp/mod.ts";

/** Options beyond the CLI configuration. */
export interface SendFileOptions {
  /** Where send-file logs; default stderr at `config.logLevel`. */
  logger?: Logger;
  /** Use this signed-in endpoint (left open) instead of signing in. */
  endpoint?: Endpoint;
  /** Resolves to cancel (e.g. on SIGINT). */
  abort?: Promise<string>;
  /** Progress callback (plaintext bytes, total). */
  onProgress?: (bytes: number, total: number) => void;
}

/** Sends `config.path` to `config.peer` and waits for the end; returns the record. */
export async function sendFile(config: CliConfig, options: SendFileOptions = {}): Promise<TransferRecord> {
  if (!config.peer || !config.path) throw new Error("send-file needs JID and PATH");
  const log = options.logger ?? stderrLogger(config.logLevel);
  const endpoint = options.endpoint ?? await signIn(config, log);
  const files = await setupFileTransfer(endpoint, { logger: log });
  try {
    const transfer = await files.send(config.peer, config.path, {
      transport: config.transport,
      encrypted: config.encrypt,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    options.abort?.then((why) => transfer.cancel(why)).catch(() => {});
    return await transfer.done;
  } finally {
    await files.stop().catch(() => {});
    if (!options.endpoint) await endpoint.close().catch(() => {});
  }
}

/** A one-line progress bar: `[#####.....]  45.2% 12.3 MB/s`. */
export function progressLine(bytes: number, total: number, seconds: number, width = 30): string {
  const fraction = total > 0 ? Math.min(1, bytes / total) : 1;
  const filled = Math.round(fraction * width);
  const rate = seconds > 0 ? bytes / seconds / 1e6 : 0;
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${(fraction * 100).toFixed(1).padStart(5)}% ` +
    `${(bytes / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB ${rate.toFixed(1)} MB/s`;
}

if (import.meta.main) {
  const config = cliOrExit("send-file");
  const log = stderrLogger(config.logLevel);
  let interrupted!: (why: string) => void;
  const abort = new Promise<string>((r) => interrupted = r);
  Deno.addSignalListener("SIGINT", () => interrupted("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => interrupted("SIGTERM"));
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  const started = performance.now();
  let lastDraw = 0;
  const onProgress = tty
    ? (bytes: number, total: number) => {
      const now = performance.now();
      if (now - lastDraw < 100 && bytes < total) return;
      lastDraw = now;
      Deno.stderr.writeSync(enc.encode(`\r${progressLine(bytes, total, (now - started) / 1000)}`));
    }
    : undefined;
  try {
    const record = await sendFile(config, { logger: log, abort, ...(onProgress ? { onProgress } : {}) });
    if (tty) Deno.stderr.writeSync(enc.encode("\n"));
    if (config.json) console.log(JSON.stringify(record));
    else console.error(summarizeTransfer(record));
    if (!record.ok) {
      log.error(`send failed: ${record.ended.reason}${record.ended.text ? `: ${record.ended.text}` : ""}`);
    }
    Deno.exit(record.ok ? 0 : 1);
  } catch (e) {
    if (tty) Deno.stderr.writeSync(enc.encode("\n"));
    log.error(`send failed: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
