/**
 * Where received files land, built against the CVE-2021-33896 class (Dino saved files under the peer-chosen
 * name: `../` escaped the download directory).
 *
 * - The peer's name becomes a plain, harmless basename ({@link safeFileName}); it is never decoded.
 * - Offers larger than the caller's limit, or than the free disk space minus a reserve, are refused before a
 *   byte is written ({@link DownloadRefusedError}).
 * - Bytes go to a hidden temp file (O_EXCL, mode 0600) in the target directory; more bytes than declared abort
 *   the download. Only {@link Download.commit} — after the caller verified tag/hash, with exactly the declared
 *   size — fsyncs and links it to a fresh final name (`name`, `name (1)`, …), never replacing a file.
 * - Any failure (write error such as ENOSPC, abort) deletes the temp file: a download is published whole or
 *   not at all.
 * @module
 */
import { randomBytes } from "node:crypto";
import { statfs } from "node:fs/promises";
import { join } from "node:path";

/** Why an offer was refused before writing. */
export type DownloadRefusal = "too-large" | "disk-full";

/** The offer cannot be accepted (nothing was written). */
export class DownloadRefusedError extends Error {
  /** Which refusal. */
  readonly reason: DownloadRefusal;
  /** Creates the error. */
  constructor(reason: DownloadRefusal, message: string) {
    super(message);
    this.name = "DownloadRefusedError";
    this.reason = reason;
  }
}

/** Why a started download failed (its temp file is already deleted). */
export type DownloadFailure = "oversize" | "incomplete" | "write-failed" | "closed";

/** A started download failed; the temp file has been deleted. */
export class DownloadError extends Error {
  /** Which failure. */
  readonly code: DownloadFailure;
  /** Creates the error; `options.cause` keeps the underlying error. */
  constructor(code: DownloadFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DownloadError";
    this.code = code;
  }
}

/** Options of {@link openDownload}. */
export interface DownloadOptions {
  /** Existing directory the file lands in. */
  dir: string;
  /** Peer-supplied name; sanitised again here. */
  name?: string;
  /** Exact number of bytes that will be written (plaintext size). */
  expectedSize: number;
  /** Largest file the caller accepts. */
  maxSize: number;
  /** Disk space to keep free, default 64 MiB. */
  reserveBytes?: number;
  /** @internal tests only: write the bytes to this file instead of the temp file (e.g. `/dev/full`). */
  writeTargetForTests?: string;
}

/** A file being received. */
export interface Download {
  /** The hidden temp file (inside `dir`) the bytes go to until commit. */
  readonly tempPath: string;
  /** Sink for the bytes; errors on a write failure or when more than `expectedSize` bytes arrive. */
  writable: WritableStream<Uint8Array>;
  /** Counted bytes so far. */
  bytes(): number;
  /** Publish: requires exactly `expectedSize` bytes; fsyncs, picks a unique name, returns the final path. */
  commit(): Promise<string>;
  /** Drop the download and delete the temp file (idempotent; a no-op after commit). */
  abort(reason?: string): Promise<void>;
}

const DEFAULT_RESERVE = 64 * 1024 * 1024;
const MAX_NAME_BYTES = 200;
const MAX_EXT_BYTES = 16;
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$)$/i;
// Controls (C0, DEL, C1), bidi overrides/isolates (extension spoofing: "gpj.exe"), and zero-width/BOM.
const INVISIBLE = /[\p{Cc}\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/gu;
// Path separators and characters Windows (and SMB shares) refuse; `%` so that nothing downstream can URL-decode
// a traversal out of the name.
const UNSAFE = /[/\\<>:"|?*%]/g;

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** Cut `s` to at most `max` UTF-8 bytes without splitting a code point. */
function truncateUtf8(s: string, max: number): string {
  let out = "";
  let used = 0;
  for (const ch of s) {
    const n = utf8Length(ch);
    if (used + n > max) break;
    out += ch;
    used += n;
  }
  return out;
}

function splitExtension(name: string): { stem: string; ext: string } {
  const dot = name.lastIndexOf(".");
  if (dot <= 0 || utf8Length(name.slice(dot)) > MAX_EXT_BYTES) return { stem: name, ext: "" };
  return { stem: name.slice(0, dot), ext: name.slice(dot) };
}

/**
 * A harmless local file name for a peer-supplied one: its last path component only, with separators, `%` and
 * Windows-forbidden characters replaced by `_`, control/invisible/bidi characters removed, no leading or trailing
 * dots or spaces, reserved device names (CON, NUL, COM1, …) and a leading `-` prefixed with `_`, at most 200
 * UTF-8 bytes (extension kept). Empty → `"file"`. Never `.`/`..`, never a hidden name; idempotent.
 */
export function safeFileName(name: string | undefined): string {
  let s = (name ?? "").normalize("NFC");
  // Basename: whatever follows the last separator of either flavour.
  s = s.split(/[/\\]/).pop() ?? "";
  s = s.replace(INVISIBLE, "").replace(UNSAFE, "_");
  s = s.replace(/^[\s.]+/u, "").replace(/[\s.]+$/u, "");
  if (s === "") return "file";
  // Device names are reserved on Windows with any extension ("CON.txt"); a leading '-' reads as an option.
  if (WINDOWS_RESERVED.test(s.split(".")[0]!.trimEnd()) || s.startsWith("-")) s = "_" + s;
  if (utf8Length(s) > MAX_NAME_BYTES) {
    const { stem, ext } = splitExtension(s);
    s = truncateUtf8(stem, MAX_NAME_BYTES - utf8Length(ext)).replace(/[\s.]+$/u, "") + ext;
  }
  return s;
}

function checkSize(n: number, what: string): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new RangeError(`${what} must be a non-negative integer, got ${n}`);
  }
}

async function freeBytes(dir: string): Promise<number> {
  const st = await statfs(dir);
  return Number(st.bavail) * Number(st.bsize);
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Write all of `data` (FsFile.write may be partial). */
async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}

/** Link `temp` to the first free `name`, `name (1)`, … in `dir`; never replaces an existing entry. */
async function publish(dir: string, name: string, temp: string): Promise<string> {
  const { stem, ext } = splitExtension(name);
  for (let i = 0; i < 10_000; i++) {
    const candidate = join(dir, i === 0 ? name : `${stem} (${i})${ext}`);
    try {
      // link(2) fails with EEXIST instead of overwriting: atomic "rename if absent".
      await Deno.link(temp, candidate);
      await Deno.remove(temp);
      return candidate;
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) continue;
      if (!(e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotSupported)) throw e;
      // File systems without hard links: claim the name with O_EXCL, then rename over our own placeholder.
      try {
        (await Deno.open(candidate, { write: true, createNew: true, mode: 0o600 })).close();
      } catch (e2) {
        if (e2 instanceof Deno.errors.AlreadyExists) continue;
        throw e2;
      }
      await Deno.rename(temp, candidate);
      return candidate;
    }
  }
  throw new DownloadError("write-failed", `no free file name for '${name}' in ${dir}`);
}

/**
 * Start receiving a file into `opts.dir`. Throws {@link DownloadRefusedError} (nothing written) when the
 * declared size exceeds `maxSize` or the free space minus the reserve.
 */
export async function openDownload(opts: DownloadOptions): Promise<Download> {
  checkSize(opts.expectedSize, "expectedSize");
  checkSize(opts.maxSize, "maxSize");
  const reserve = opts.reserveBytes ?? DEFAULT_RESERVE;
  checkSize(reserve, "reserveBytes");
  if (opts.expectedSize > opts.maxSize) {
    throw new DownloadRefusedError(
      "too-large",
      `file of ${opts.expectedSize} bytes exceeds the limit of ${opts.maxSize} bytes`,
    );
  }
  const info = await Deno.stat(opts.dir);
  if (!info.isDirectory) throw new Error(`download directory ${opts.dir} is not a directory`);
  const free = await freeBytes(opts.dir);
  if (free - reserve < opts.expectedSize) {
    throw new DownloadRefusedError(
      "disk-full",
      `file of ${opts.expectedSize} bytes does not fit: ${free} bytes free, ${reserve} kept in reserve`,
    );
  }

  const name = safeFileName(opts.name);
  const expected = opts.expectedSize;
  // Hidden (leading dot) so that it can never collide with a published name (safeFileName strips dots).
  const tempPath = join(opts.dir, `.incoming-${randomBytes(12).toString("hex")}.part`);
  const temp = await Deno.open(tempPath, { write: true, createNew: true, mode: 0o600 });
  let file = temp;
  if (opts.writeTargetForTests !== undefined) {
    temp.close();
    file = await Deno.open(opts.writeTargetForTests, { write: true });
  }

  let state: "open" | "committing" | "committed" | "aborted" = "open";
  let count = 0;
  let failure: DownloadError | undefined;
  let pending: Promise<void> = Promise.resolve();

  const cleanUp = async (): Promise<void> => {
    try {
      file.close();
    } catch {
      // already closed
    }
    await removeQuietly(tempPath);
  };
  const fail = async (err: DownloadError): Promise<never> => {
    if (state === "open" || state === "committing") {
      state = "aborted";
      failure = err;
      await cleanUp();
    }
    throw err;
  };

  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      const step = (async () => {
        if (state !== "open") {
          throw failure ?? new DownloadError("closed", `download is ${state}; write refused`);
        }
        if (count + chunk.length > expected) {
          await fail(
            new DownloadError(
              "oversize",
              `peer sent more than the declared ${expected} bytes; download aborted`,
            ),
          );
        }
        try {
          await writeAll(file, chunk);
        } catch (e) {
          await fail(
            new DownloadError("write-failed", `writing ${tempPath} failed: ${(e as Error).message}`, {
              cause: e,
            }),
          );
        }
        count += chunk.length;
      })();
      pending = step.catch(() => {});
      return step;
    },
    async abort(reason) {
      await pending;
      if (state === "open") {
        state = "aborted";
        failure = new DownloadError("closed", `download aborted: ${String(reason)}`);
        await cleanUp();
      }
    },
  });

  return {
    tempPath,
    writable,
    bytes: () => count,
    async commit() {
      await pending;
      if (state !== "open") {
        throw failure ?? new DownloadError("closed", `download is ${state}; cannot commit`);
      }
      state = "committing";
      if (count !== expected) {
        await fail(
          new DownloadError("incomplete", `received ${count} of ${expected} bytes; download discarded`),
        );
      }
      try {
        await file.sync();
        file.close();
        const finalPath = await publish(opts.dir, name, tempPath);
        state = "committed";
        return finalPath;
      } catch (e) {
        if (e instanceof DownloadError) return await fail(e);
        return await fail(
          new DownloadError("write-failed", `publishing ${tempPath} failed: ${(e as Error).message}`, {
            cause: e,
          }),
        );
      }
    },
    async abort(reason?: string) {
      await pending;
      if (state === "open" || state === "committing") {
        state = "aborted";
        failure = new DownloadError("closed", `download aborted${reason ? `: ${reason}` : ""}`);
        await cleanUp();
      }
    },
  };
}
