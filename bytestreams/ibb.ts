/**
 * XEP-0047 In-Band Bytestreams over IQ stanzas, as used by the XEP-0261 Jingle IBB transport.
 *
 * - A pure codec ({@link parseIbb}, {@link buildIbbOpen}, {@link buildIbbData}, {@link buildIbbClose}).
 * - {@link ibbSend}: streams a `ReadableStream` as `<data/>` IQs with a window of IQs in flight.
 * - {@link ibbReceive}: a `ReadableStream` fed by the peer's IQs, registered for (sender, sid) before
 *   the peer opens. One shared IQ handler per connection routes `<open/>`, `<data/>` and `<close/>`
 *   by sid; a data IQ is only answered once its bytes are queued and the consumer keeps up, so a slow
 *   consumer slows the sender instead of filling memory.
 *
 * @module
 */
import { type Element, jidEquals, StanzaError, xml, type XmppConnection } from "../xmpp/mod.ts";

/** XEP-0047 namespace. */
export const NS_IBB = "http://jabber.org/protocol/ibb";

/** Largest block size XEP-0047 allows (`block-size` is an unsigned 16-bit integer). */
export const IBB_MAX_BLOCK_SIZE = 65535;

/** `seq` is a 16-bit counter that wraps from 65535 to 0. */
const SEQ_MODULO = 65536;

/** A decoded IBB payload element. */
export type IbbElement =
  | { kind: "open"; sid: string; blockSize: number; stanza: "iq" | "message" }
  | { kind: "data"; sid: string; seq: number; data: Uint8Array }
  | { kind: "close"; sid: string };

/** An IBB element that cannot be decoded; `condition` is the stanza error to answer with. */
export class IbbParseError extends Error {
  constructor(message: string, readonly condition: "bad-request" = "bad-request") {
    super(message);
    this.name = "IbbParseError";
  }
}

/** The receiving side refused the stream or the peer broke the protocol. */
export class IbbError extends Error {
  constructor(message: string, readonly condition?: string) {
    super(message);
    this.name = "IbbError";
  }
}

// The ES2026 base64 helpers exist in Deno's V8 but not yet in its TypeScript lib.
type Base64Decoder = (text: string, options: { lastChunkHandling: "strict" }) => Uint8Array;
const fromBase64 = (Uint8Array as unknown as { fromBase64: Base64Decoder }).fromBase64;
const toBase64 = (bytes: Uint8Array): string => (bytes as unknown as { toBase64(): string }).toBase64();

function parseUint(value: string | undefined, max: number, what: string): number {
  if (value === undefined || !/^[0-9]{1,6}$/.test(value)) {
    throw new IbbParseError(`${what} is not an unsigned integer: ${JSON.stringify(value)}`);
  }
  const n = Number(value);
  if (n > max) throw new IbbParseError(`${what} ${n} is larger than ${max}`);
  return n;
}

/**
 * Decodes an `<open/>`, `<data/>` or `<close/>` element in {@link NS_IBB}.
 * `block-size` is range checked against 65535 only (a receiver applies its own, lower limit).
 * @throws {IbbParseError} for anything malformed, including base64 garbage.
 */
export function parseIbb(el: Element): IbbElement {
  if (el.getNS() !== NS_IBB) throw new IbbParseError(`not an IBB element: ${el.name} ${el.getNS()}`);
  const sid = el.attrs.sid;
  if (!sid) throw new IbbParseError(`<${el.name}/> without sid`);
  switch (el.name) {
    case "open": {
      // block-size 0 is meaningless; the 16-bit limit is checked by the receiver (resource-constraint).
      const blockSize = parseUint(el.attrs["block-size"], Number.MAX_SAFE_INTEGER, "block-size");
      if (blockSize === 0) throw new IbbParseError("block-size is 0");
      const stanza = el.attrs.stanza ?? "iq";
      if (stanza !== "iq" && stanza !== "message") {
        throw new IbbParseError(`unknown stanza type ${JSON.stringify(stanza)}`);
      }
      return { kind: "open", sid, blockSize, stanza };
    }
    case "data": {
      const seq = parseUint(el.attrs.seq, SEQ_MODULO - 1, "seq");
      let data: Uint8Array;
      try {
        data = fromBase64(el.text(), { lastChunkHandling: "strict" });
      } catch {
        throw new IbbParseError("data is not valid base64");
      }
      return { kind: "data", sid, seq, data };
    }
    case "close":
      return { kind: "close", sid };
    default:
      throw new IbbParseError(`unknown IBB element <${el.name}/>`);
  }
}

/** `<open xmlns=NS_IBB block-size sid stanza='iq'/>`. */
export function buildIbbOpen(sid: string, blockSize: number): Element {
  if (!Number.isInteger(blockSize) || blockSize < 1 || blockSize > IBB_MAX_BLOCK_SIZE) {
    throw new RangeError(`IBB block-size must be 1..${IBB_MAX_BLOCK_SIZE}, got ${blockSize}`);
  }
  return xml("open", { xmlns: NS_IBB, "block-size": blockSize, sid, stanza: "iq" });
}

/** `<data xmlns=NS_IBB seq sid>base64</data>`; `seq` is taken modulo 65536. */
export function buildIbbData(sid: string, seq: number, data: Uint8Array): Element {
  return xml(
    "data",
    { xmlns: NS_IBB, seq: ((seq % SEQ_MODULO) + SEQ_MODULO) % SEQ_MODULO, sid },
    toBase64(data),
  );
}

/** `<close xmlns=NS_IBB sid/>`. */
export function buildIbbClose(sid: string): Element {
  return xml("close", { xmlns: NS_IBB, sid });
}

/* ------------------------------------------------------------------------------------------------ */
/* Sending                                                                                           */

/** Options for {@link ibbSend}. */
export interface IbbSendOptions {
  /** Full JID of the receiver. */
  to: string;
  sid: string;
  /** Raw bytes per `<data/>` (1..65535; XEP-0261 peers such as Conversations accept up to 8192). */
  blockSize: number;
  source: ReadableStream<Uint8Array>;
  /** Data IQs awaiting their result at once (default 8). */
  window?: number;
  signal?: AbortSignal;
  /** Called with the number of bytes the receiver acknowledged so far. */
  onProgress?: (bytes: number) => void;
  /** Timeout per IQ (default 30 s; generous because a slow consumer delays the receiver's answers). */
  iqTimeoutMs?: number;
}

function abortReason(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : new DOMException(String(reason ?? "aborted"), "AbortError");
}

/**
 * `promise`, or a rejection as soon as `signal` aborts. The listener lives only as long as this one wait:
 * racing every read against one long-lived abort promise would leave a reaction per race on it, each
 * keeping its chunk reachable until the transfer ends (the whole file in memory).
 */
function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * Sends `source` to `to` over IBB: `<open/>`, `<data/>` IQs of exactly `blockSize` bytes (the last may
 * be shorter) with up to `window` awaiting their result, then `<close/>`. Rejects on the first IQ error
 * or timeout (a `<close/>` is still sent, best effort), and on abort.
 * The source is read only as fast as the receiver acknowledges.
 */
export async function ibbSend(conn: XmppConnection, opts: IbbSendOptions): Promise<{ bytes: number }> {
  const { to, sid, blockSize, signal } = opts;
  const window = Math.max(1, opts.window ?? 8);
  const timeoutMs = opts.iqTimeoutMs ?? 30_000;
  const openEl = buildIbbOpen(sid, blockSize);
  const reader = opts.source.getReader();
  const set = (payload: Element) => conn.iq(xml("iq", { type: "set", to }, payload), { timeoutMs });
  let opened = false;
  let acked = 0;
  const inFlight: Promise<number>[] = [];
  try {
    if (signal?.aborted) throw abortReason(signal);
    await unlessAborted(set(openEl), signal);
    opened = true;
    let seq = 0;
    let block = new Uint8Array(blockSize);
    let filled = 0;
    const sendBlock = async (bytes: Uint8Array) => {
      if (inFlight.length >= window) {
        acked += await unlessAborted(inFlight.shift()!, signal);
        opts.onProgress?.(acked);
      }
      const sent = set(buildIbbData(sid, seq, bytes)).then(() => bytes.byteLength);
      sent.catch(() => {}); // observed when its turn comes; avoid an unhandled rejection meanwhile
      inFlight.push(sent);
      seq = (seq + 1) % SEQ_MODULO;
    };
    while (true) {
      const { value, done } = await unlessAborted(reader.read(), signal);
      if (done) break;
      let offset = 0;
      while (offset < value.byteLength) {
        // Whole blocks straight from the chunk need no copy; leftovers are gathered in `block`.
        if (filled === 0 && value.byteLength - offset >= blockSize) {
          await sendBlock(value.subarray(offset, offset + blockSize));
          offset += blockSize;
          continue;
        }
        const take = Math.min(blockSize - filled, value.byteLength - offset);
        block.set(value.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        if (filled === blockSize) {
          await sendBlock(block);
          block = new Uint8Array(blockSize);
          filled = 0;
        }
      }
    }
    if (filled > 0) await sendBlock(block.subarray(0, filled));
    while (inFlight.length > 0) {
      acked += await unlessAborted(inFlight.shift()!, signal);
      opts.onProgress?.(acked);
    }
    await unlessAborted(set(buildIbbClose(sid)), signal);
    return { bytes: acked };
  } catch (err) {
    reader.cancel(err).catch(() => {});
    if (opened) {
      // Tell the receiver the stream is over; it may already be gone, so errors are ignored.
      set(buildIbbClose(sid)).catch(() => {});
    }
    throw err;
  } finally {
    reader.releaseLock();
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Receiving                                                                                         */

/** Options for {@link ibbReceive}. */
export interface IbbReceiveOptions {
  /** Full JID of the sender; IQs from anyone else are refused with `item-not-found`. */
  from: string;
  sid: string;
  /** Largest `block-size` accepted in `<open/>` (default and maximum 65535). */
  maxBlockSize?: number;
  signal?: AbortSignal;
  /** Time allowed for the peer's `<open/>` (default 60 s); then the reception fails. */
  openTimeoutMs?: number;
  /** Bytes queued in the readable before data IQs are held back (default 256 KiB). */
  bufferBytes?: number;
}

/** A registered IBB reception. */
export interface IbbReception {
  /** The bytes; ends at the peer's `<close/>`, errors when the peer breaks the protocol. */
  readable: ReadableStream<Uint8Array>;
  /** Resolves when the peer's `<open/>` was accepted. */
  opened: Promise<void>;
  /** Stops receiving: the readable errors, the peer gets a `<close/>` (best effort) if it had opened. */
  cancel(reason?: string): void;
}

type ReceptionState = "waiting-open" | "open" | "ended";

interface Reception {
  readonly from: string;
  readonly sid: string;
  onOpen(open: Extract<IbbElement, { kind: "open" }>): void;
  onData(el: Element): Promise<void>;
  onClose(): void;
}

interface IbbRegistry {
  readonly receptions: Map<string, Reception>;
  add(reception: Reception): void;
  remove(reception: Reception): void;
}

const registries = new WeakMap<XmppConnection, IbbRegistry>();

/** The IBB routing table of `conn`; its three IQ handlers are installed with the first reception. */
function registryOf(conn: XmppConnection): IbbRegistry {
  const existing = registries.get(conn);
  if (existing) return existing;
  const receptions = new Map<string, Reception>();
  let installed = false;
  // Unknown sid and wrong sender get the same answer so a third party learns nothing (XEP-0047 §2.2).
  const find = (payload: Element, from: string): Reception => {
    const sid = payload.attrs.sid;
    const reception = sid === undefined ? undefined : receptions.get(sid);
    if (!reception || !jidEquals(reception.from, from)) {
      throw new StanzaError("item-not-found", "cancel", { text: "no such in-band bytestream" });
    }
    return reception;
  };
  const parsed = (payload: Element) => {
    try {
      return parseIbb(payload);
    } catch (err) {
      throw new StanzaError("bad-request", "modify", { text: (err as Error).message });
    }
  };
  // Installed on first use and kept: after a stream ended, its late IQs still get item-not-found.
  const install = () => {
    [
      conn.handleIq("set", "open", NS_IBB, (payload, ctx) => {
        const reception = find(payload, ctx.from);
        const open = parsed(payload);
        if (open.kind === "open") reception.onOpen(open);
      }),
      conn.handleIq("set", "data", NS_IBB, (payload, ctx) => find(payload, ctx.from).onData(payload)),
      conn.handleIq("set", "close", NS_IBB, (payload, ctx) => {
        find(payload, ctx.from).onClose();
      }),
    ];
    installed = true;
  };
  const registry: IbbRegistry = {
    receptions,
    add(reception) {
      if (receptions.has(reception.sid)) {
        throw new Error(`an IBB reception for sid ${reception.sid} is already registered`);
      }
      receptions.set(reception.sid, reception);
      if (!installed) install();
    },
    remove(reception) {
      if (receptions.get(reception.sid) !== reception) return;
      receptions.delete(reception.sid);
    },
  };
  registries.set(conn, registry);
  return registry;
}

/**
 * Registers to receive the IBB stream `sid` from the full JID `from` (call it before the peer opens,
 * e.g. before answering the Jingle session-initiate/transport-replace). Protocol violations are
 * answered with the XEP-0047 errors and fail the readable: wrong sender or unknown sid →
 * `item-not-found`; block-size above the limit → `resource-constraint` (the stream stays ready for
 * another `<open/>`); out-of-order or duplicate `seq` → `unexpected-request`; bad base64 or a chunk
 * larger than the block size → `bad-request`. An early `<close/>` just ends the readable: counting the
 * bytes is the consumer's job.
 * @throws {Error} when a reception for `sid` is already registered on `conn`.
 */
export function ibbReceive(conn: XmppConnection, opts: IbbReceiveOptions): IbbReception {
  const maxBlockSize = Math.min(opts.maxBlockSize ?? IBB_MAX_BLOCK_SIZE, IBB_MAX_BLOCK_SIZE);
  const registry = registryOf(conn);
  let state: ReceptionState = "waiting-open";
  let blockSize = 0;
  let expectedSeq = 0;
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  // Data handlers waiting for the consumer to make room in the queue.
  let drainWaiters: Array<() => void> = [];
  const wakeDrainWaiters = () => {
    const waiters = drainWaiters;
    drainWaiters = [];
    for (const wake of waiters) wake();
  };
  let resolveOpened!: () => void;
  let rejectOpened!: (err: Error) => void;
  const opened = new Promise<void>((resolve, reject) => {
    resolveOpened = resolve;
    rejectOpened = reject;
  });
  opened.catch(() => {}); // the consumer may only watch the readable

  const readable = new ReadableStream<Uint8Array>(
    {
      start(c) {
        controller = c;
      },
      pull() {
        wakeDrainWaiters();
      },
      cancel(reason) {
        stop(reason === undefined ? "cancelled by the consumer" : String(reason), true);
      },
    },
    { highWaterMark: opts.bufferBytes ?? 256 * 1024, size: (chunk) => chunk.byteLength },
  );

  let openTimer: ReturnType<typeof setTimeout> | undefined;
  // Set when the stream ended by error or local cancel (not by the peer's <close/>).
  let cancelled = false;
  const finish = () => {
    state = "ended";
    clearTimeout(openTimer);
    opts.signal?.removeEventListener("abort", onAbort);
    registry.remove(reception);
    wakeDrainWaiters();
  };
  /** Ends the reception with an error on the readable. */
  const fail = (err: Error) => {
    if (state === "ended") return;
    cancelled = true;
    finish();
    rejectOpened(err);
    try {
      controller.error(err);
    } catch { /* already closed */ }
  };
  /** Local cancel: fail the readable and tell the peer (best effort) to stop sending. */
  const stop = (reason: string, fromReadable = false) => {
    if (state === "ended") return;
    const wasOpen = state === "open";
    if (fromReadable) {
      cancelled = true;
      finish();
      rejectOpened(new IbbError(`IBB reception cancelled: ${reason}`));
    } else {
      fail(new IbbError(`IBB reception cancelled: ${reason}`));
    }
    if (wasOpen) {
      conn.iq(xml("iq", { type: "set", to: opts.from }, buildIbbClose(opts.sid)), { timeoutMs: 10_000 })
        .catch(() => {});
    }
  };
  const protocolError = (condition: string, type: "cancel" | "modify", text: string): StanzaError => {
    fail(new IbbError(`IBB stream ${opts.sid} from ${opts.from} broken: ${condition}: ${text}`, condition));
    return new StanzaError(condition, type, { text });
  };

  const reception: Reception = {
    from: opts.from,
    sid: opts.sid,
    onOpen(open) {
      if (state !== "waiting-open") {
        throw new StanzaError("unexpected-request", "cancel", { text: "stream already open" });
      }
      if (open.stanza !== "iq") {
        throw new StanzaError("feature-not-implemented", "cancel", { text: "only stanza='iq' is supported" });
      }
      if (open.blockSize > maxBlockSize) {
        // XEP-0047 §2.1: the initiator may retry with a smaller block size, so the reception stays.
        throw new StanzaError("resource-constraint", "modify", {
          text: `block-size ${open.blockSize} is larger than ${maxBlockSize}`,
        });
      }
      blockSize = open.blockSize;
      state = "open";
      clearTimeout(openTimer);
      resolveOpened();
    },
    async onData(el) {
      if (state !== "open") {
        throw new StanzaError("item-not-found", "cancel", { text: "stream not open" });
      }
      let data: IbbElement;
      try {
        data = parseIbb(el);
      } catch (err) {
        throw protocolError("bad-request", "modify", (err as Error).message);
      }
      if (data.kind !== "data") throw protocolError("bad-request", "modify", "not a data element");
      if (data.seq !== expectedSeq) {
        throw protocolError("unexpected-request", "cancel", `seq ${data.seq}, expected ${expectedSeq}`);
      }
      if (data.data.byteLength > blockSize) {
        throw protocolError(
          "bad-request",
          "modify",
          `chunk of ${data.data.byteLength} > block-size ${blockSize}`,
        );
      }
      expectedSeq = (expectedSeq + 1) % SEQ_MODULO;
      if (data.data.byteLength > 0) controller.enqueue(data.data);
      // Hold the answer (and so the sender's window) until the consumer has room again.
      while (state === "open" && (controller.desiredSize ?? 0) <= 0) {
        await new Promise<void>((wake) => drainWaiters.push(wake));
      }
      if (cancelled) throw new StanzaError("item-not-found", "cancel", { text: "stream cancelled" });
    },
    onClose() {
      if (state === "ended") return;
      const wasWaiting = state === "waiting-open";
      finish();
      if (wasWaiting) rejectOpened(new IbbError("peer closed the stream before opening it"));
      try {
        controller.close();
      } catch { /* already errored */ }
    },
  };

  const onAbort = () => stop(opts.signal?.reason === undefined ? "aborted" : String(opts.signal.reason));
  registry.add(reception);
  if (opts.signal?.aborted) {
    onAbort();
  } else {
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const openTimeoutMs = opts.openTimeoutMs ?? 60_000;
    openTimer = setTimeout(() => {
      if (state === "waiting-open") fail(new IbbError(`no IBB <open/> within ${openTimeoutMs} ms`));
    }, openTimeoutMs);
  }
  return { readable, opened, cancel: (reason) => stop(reason ?? "cancelled") };
}
