/**
 * Jingle file transfer (XEP-0234) with JET-OMEMO (XEP-0391/0396) over SOCKS5 (XEP-0260, direct and the
 * server's XEP-0065 proxy) or IBB (XEP-0261), with transport-replace from SOCKS5 to IBB — the I/O side.
 * The protocol codecs live in `jingle/` (file_transfer, jet, bytestream_transports), the session life cycle in
 * `jingle/transfer_session.ts`, the byte streams in `bytestreams/`, the stream cipher and the download sink
 * in `transfer/`, the stream plumbing (hash taps, exact-length reads, the IBB sender) in `bot/file_streams.ts`.
 *
 * Flow as Dino 0.4.2 does it (tests/fixtures/dino/filetransfer-jet-omemo-s5b-*.xml): session-initiate with
 * the file, the transport and `<security>` inside `<content>`; session-accept with the responder's transport;
 * for SOCKS5 each side reports candidate-used / candidate-error in transport-info; the bytes flow; the
 * receiver verifies and sends session-terminate `success`.
 *
 * Decisions:
 * - JET is used only when the peer advertises both `urn:xmpp:jingle:jet:0` and `urn:xmpp:jingle:jet-omemo:0`
 *   (like Dino); a send asked to be encrypted to a peer without them fails instead of falling back to plain.
 * - `<size>` is the plaintext size; on the wire come size + 16 bytes (the GCM tag at the end).
 * - Encrypted transfers carry no plaintext hash (neither in the offer nor in a checksum session-info): the
 *   description travels unencrypted through the server, and a plaintext hash there confirms the file's
 *   content to anyone holding a copy (OMEMO audit 2016). The GCM tag authenticates the bytes instead.
 *   Plain transfers put the sha-256 in the offer and also send the checksum after the data.
 * - Receiving, sha-256 and sha-1 are verified, from the offer or from a `<checksum>` session-info
 *   (Conversations sends sha-1 there right after its last byte); other algorithms are logged and ignored.
 *   When no hash is known once the bytes are in, the file stays an unpublished temp file until a checksum
 *   arrives or `checksum.waitMs` passes (plain transfers; encrypted ones do not wait by default, their GCM
 *   tag already authenticates every byte). A mismatch deletes it and ends with `media-error`.
 * - The key transport is read from JET `<security>` (in `<content>` or under `<jingle>`) or, from
 *   Conversations talking to a peer without JET, from the legacy `<file><encrypted>` whose `<size>` counts
 *   the 16-byte tag. We never send the legacy form.
 * - Sending, the `<security>` goes inside `<content>` (XEP-0391, Dino, Conversations 2.12) and a copy
 *   directly under `<jingle>` (newer Conversations reads only there, docs/protocol.md §5.3). Dino reads only
 *   `<content>` children and ignores other `<jingle>` children (`jingle.get_subnodes("content")`), and
 *   Conversations 2.12 reads inside `<content>`, so the copy costs them nothing.
 * - `send` to a bare JID picks one of the peer's available resources (from presence, probed when none is
 *   known; needs a presence subscription) that advertises file transfer, and JET-OMEMO when encrypting,
 *   the highest priority first.
 * - Incoming policy `encryption`: `require` (default) declines plain offers with reason `decline` and a text
 *   saying so (it is a policy, not an attack); `prefer` accepts both; `off` declines encrypted ones.
 * - The receiver writes to a temporary file and publishes it only after the size, the GCM tag and the hash
 *   (when one is known) check out; any failure deletes it.
 * - Reasons: `decline` (policy, too large, disk would fill), `security-error` (key transport not for us /
 *   untrusted / garbage, GCM tag mismatch), `media-error` (hash mismatch, more bytes than declared),
 *   `failed-transport` (no working transport, stream cut short), `failed-application` (local write error),
 *   `cancel`, `timeout` (no answer, stalled stream).
 *
 * @module
 */
import { basename } from "node:path";
import type { Endpoint } from "./endpoint.ts";
import { hasDescription, jingleRouter } from "./jingle_router.ts";
import {
  bare,
  type DiscoInfo,
  type Element,
  type IqHandler,
  jidEquals,
  type Logger,
  queryDiscoInfo,
  StanzaError,
  xml,
  type XmppConnection,
} from "../xmpp/mod.ts";
import {
  buildJingleIq,
  type Element as JingleElement,
  type Jingle,
  type JingleAction,
  type JingleContent,
  type JingleReason,
  NS_JINGLE,
  NS_JINGLE_ERRORS,
  parseJingle,
  type ReasonCondition,
} from "../jingle/mod.ts";
import {
  buildChecksum,
  buildFileDescription,
  type FileHash,
  type FileOffer,
  NS_JFT,
  parseChecksum,
  parseFileDescription,
} from "../jingle/file_transfer.ts";
import {
  buildJetSecurity,
  findJetSecurity,
  JET_CIPHER_AES128GCM,
  NS_JET,
  NS_JET_OMEMO,
} from "../jingle/jet.ts";
import {
  buildFileTransport,
  type FileTransport,
  NS_JIBB,
  NS_S5B,
  parseFileTransport,
  type S5bCandidate,
  s5bPriority,
} from "../jingle/bytestream_transports.ts";
import { isSupportedAction, type TransferState, TransferStateMachine } from "../jingle/transfer_session.ts";
import { createGcmDecryptStream, createGcmEncryptStream } from "../transfer/gcm.ts";
import { type Download, DownloadRefusedError, openDownload, safeFileName } from "../transfer/download.ts";
import { ibbReceive, ibbSend } from "../bytestreams/ibb.ts";
import {
  boundedSource,
  classify,
  faultInjector,
  hashTap,
  sha256File,
  TransferError,
} from "./file_streams.ts";
import {
  activateProxy,
  connectS5b,
  discoverProxy,
  listenS5b,
  type S5bConnection,
  s5bDstAddr,
  type S5bListener,
} from "../bytestreams/socks5.ts";
import { NS_OMEMO_AXOLOTL } from "../jingle/namespaces.ts";
import type { DeviceAddress } from "../omemo/mod.ts";

/** XEP-0047 In-Band Bytestreams (disco feature). */
const NS_IBB_FEATURE = "http://jabber.org/protocol/ibb";
/** XEP-0065 SOCKS5 Bytestreams (disco feature). */
const NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams";
/** The content name Dino and the XEP examples use. */
const CONTENT_NAME = "a-file-offer";
/** GCM tag length appended to the stream. */
const TAG_BYTES = 16;
const GIB = 1024 ** 3;
/** XEP-0300 algorithms the receiver computes (sha-1 for Conversations' checksum). */
const COMPUTED_HASHES = ["sha-256", "sha-1"];

/** A transport kind. */
export type TransportKind = "s5b" | "ibb";

/** Options for {@link setupFileTransfer}. */
export interface FileTransferOptions {
  /** Where received files go; without it every offer is declined. */
  downloadDir?: string;
  /** Largest file accepted (plaintext bytes). Default 1 GiB. */
  maxFileSize?: number;
  /** Incoming policy: `require` (default) declines plain offers, `prefer` takes both, `off` declines JET. */
  encryption?: "require" | "prefer" | "off";
  /** Transports we offer, in preference order. Default `["s5b", "ibb"]`. */
  transports?: TransportKind[];
  /** Decides on an incoming offer after the built-in checks (allow-list etc.). Default: accept. */
  accept?: (offer: IncomingOffer, from: string) => boolean | Promise<boolean>;
  /** Where the service logs. */
  logger?: Logger;
  /** IBB block size we offer (default 8192 like Conversations) and the largest we accept (≤ 65535). */
  ibb?: { blockSize?: number; maxBlockSize?: number; window?: number };
  /** SOCKS5: which candidates we offer and how long a connection attempt may take. */
  s5b?: {
    /** Offer direct candidates (default true). */
    direct?: boolean;
    /** Offer the server's proxy65 (default true, when the server has one). */
    proxy?: boolean;
    /** Host addresses for direct candidates (default: what `listenS5b` picks). */
    hostnames?: string[];
    /** Per-candidate connect timeout, default 5000 ms. */
    connectTimeoutMs?: number;
    /**
     * Connect to the peer's loopback / private-address candidates (default true, as tests and LANs need).
     * A bot reachable by untrusted peers should pass false so a candidate cannot aim it at a local
     * service (security checklist F7); the server's proxy is always allowed.
     */
    allowLoopback?: boolean;
    allowPrivate?: boolean;
    /** Rewrites our candidates before they are offered (tests: point them at a closed port). */
    rewriteCandidates?: (candidates: S5bCandidate[]) => S5bCandidate[];
  };
  /** Waiting for a `<checksum>` session-info when the bytes are in and no hash is known. */
  checksum?: {
    /** Plain transfers (default 2000 ms). */
    waitMs?: number;
    /** Encrypted transfers (default 0: the GCM tag authenticates them; a checksum already there is checked). */
    waitEncryptedMs?: number;
  };
  /** Time limits (ms). */
  timeouts?: {
    /** Waiting for the peer to accept an offer (default 120 s). */
    acceptMs?: number;
    /** Transport negotiation (default 30 s). */
    negotiateMs?: number;
    /** No byte moved for this long (default 60 s). */
    idleMs?: number;
    /** Sender: all bytes sent, waiting for the receiver's session-terminate (default 60 s). */
    confirmMs?: number;
  };
}

/** What the policy hook sees of an incoming offer. */
export interface IncomingOffer {
  /** Jingle session id. */
  sid: string;
  /** The offering party (full JID). */
  from: string;
  /** The `<file>` offered (name, size, hashes… as the sender put them; untrusted). */
  file: FileOffer;
  /** Whether the offer is JET-OMEMO encrypted. */
  encrypted: boolean;
  /** The transport the sender offered. */
  transport: TransportKind;
  /** OMEMO sender device and trust (encrypted offers). */
  omemo?: { deviceId: number; identityFingerprint: string; trust: string };
}

/** Per-send options. */
export interface SendOptions {
  /** Default `auto`: SOCKS5 when the peer has it (IBB as fallback), else IBB. */
  transport?: "auto" | TransportKind;
  /** Default true: JET-OMEMO; fails when the peer does not support it. */
  encrypted?: boolean;
  /** File name offered (default: the path's base name). */
  name?: string;
  /** MIME type offered (default: none). */
  mediaType?: string;
  /** Description offered (default: none). */
  desc?: string;
  /** Plaintext bytes sent so far, of the total. */
  onProgress?: (bytes: number, total: number) => void;
  /** Fault injection for tests (never use otherwise). */
  testHooks?: SendTestHooks;
}

/** Test-only fault injection on the sending side. */
export interface SendTestHooks {
  /** Flip one bit of the wire byte at this offset (ciphertext for JET: breaks the GCM tag). */
  flipByteAt?: number;
  /** Stop after this many wire bytes and close the stream (a truncated transfer). */
  stopAfter?: number;
  /** Offer this sha-256 (base64) instead of the file's (plain transfers: a hash mismatch at the receiver). */
  offerSha256?: string;
  /** Encrypt the key transport for exactly these devices (e.g. not the recipient's). */
  keyDevices?: DeviceAddress[];
}

/** The JSON-able record of a finished (or failed) transfer. */
export interface TransferRecord {
  /** The other party's JID. */
  peer: string;
  /** Jingle session id. */
  sid: string;
  /** Whether we sent or received the file. */
  direction: "outgoing" | "incoming";
  /** The file: name, plaintext size (bytes), MIME type and sha-256 (base64) when known. */
  file: { name: string; size: number; mediaType?: string; sha256?: string };
  /** How the bytes moved: SOCKS5 or IBB (`none` when no transport connected), proxy, fallback, IBB block size. */
  transport: {
    kind: TransportKind | "none";
    /** The SOCKS5 connection went through the server's proxy. */
    proxy: boolean;
    /** SOCKS5 failed and the transfer moved to IBB (transport-replace). */
    replaced: boolean;
    blockSize?: number;
  };
  /** Whether the transfer was JET-OMEMO encrypted. */
  encrypted: boolean;
  /** Incoming: the key came in Conversations' legacy `<file><encrypted>` instead of JET `<security>`. */
  legacyEncryption?: boolean;
  /** Incoming: the XEP-0300 algorithms checked against the stored file (offer or checksum), e.g. `sha-1`. */
  hashesVerified?: string[];
  /** The OMEMO side of an encrypted transfer: devices, identity fingerprint, trust. */
  omemo?: {
    /** Outgoing: the devices the key was encrypted for; incoming: the sender's device. */
    deviceIds: number[];
    identityFingerprint?: string;
    trust?: string;
  };
  /** Plaintext bytes moved. */
  bytes: number;
  /** Wall clock of the offer (ISO 8601). */
  offeredAt: string;
  /** ms after the offer. */
  times: { accepted?: number; transportConnected?: number; finished: number };
  /** Plaintext MB/s (10^6) from transport connected to finished. */
  mbPerSecond?: number;
  /** How the session ended: Jingle reason condition, its text, and who ended it. */
  ended: { reason: ReasonCondition; text?: string; by: "local" | "remote" };
  /** Ended with `success`: the file arrived complete and verified (incoming), or the receiver confirmed it (outgoing). */
  ok: boolean;
  /** Incoming: where the file was stored. */
  path?: string;
}

/** One transfer in progress. */
export interface Transfer {
  /** Jingle session id. */
  readonly sid: string;
  /** The other party's JID. */
  readonly peer: string;
  /** Whether we send or receive the file. */
  readonly direction: "outgoing" | "incoming";
  /** The `<file>` offered. */
  readonly file: FileOffer;
  /** Whether the transfer is JET-OMEMO encrypted. */
  readonly encrypted: boolean;
  /** The current state of the transfer. */
  readonly state: TransferState;
  /** Resolves with the record when the transfer ends, whatever the outcome (never rejects). */
  readonly done: Promise<TransferRecord>;
  /** Ends the transfer with `cancel`. */
  cancel(why?: string): Promise<void>;
}

/** The file-transfer service of one endpoint. */
export interface FileTransfers {
  /**
   * Offers the file at `path` to `to`: a full JID, or a bare JID whose best available resource is picked
   * (see {@link resolveFileTransferPeer}). Rejects before any offer when it cannot be sent.
   */
  send(to: string, path: string, options?: SendOptions): Promise<Transfer>;
  /** Subscribes to incoming transfers (called for every offer, before the decision). */
  onIncoming(cb: (transfer: Transfer) => void): () => void;
  /** Transfers in progress, by sid. */
  readonly active: ReadonlyMap<string, Transfer>;
  /** Cancels every transfer, unregisters the Jingle app and the disco features. */
  stop(): Promise<void>;
}

export { sha256File, TransferError };

/** Disco features of the file-transfer service. */
export function fileTransferFeatures(encryption: "require" | "prefer" | "off" = "require"): string[] {
  return [
    NS_JINGLE,
    NS_JFT,
    NS_S5B,
    NS_JIBB,
    NS_IBB_FEATURE,
    NS_BYTESTREAMS,
    ...(encryption === "off" ? [] : [NS_JET, NS_JET_OMEMO]),
  ];
}

function iqError(condition: string, type: "cancel" | "wait" | "modify", jingle?: string, text?: string) {
  return new StanzaError(condition, type, {
    ...(text ? { text } : {}),
    ...(jingle ? { application: xml(jingle, { xmlns: NS_JINGLE_ERRORS }) } : {}),
  });
}

const message = (e: unknown) => e instanceof Error ? e.message : String(e);
const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const b64ToHex = (v: string) => {
  try {
    return hex(Uint8Array.from(atob(v), (c) => c.charCodeAt(0)));
  } catch {
    return "";
  }
};
const hexToB64 = (h: string) =>
  btoa(String.fromCharCode(...(h.match(/../g) ?? []).map((x) => parseInt(x, 16))));

/** A promise with its resolvers (no rejection: failures are values). */
function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** SOCKS5 negotiation state of one session (XEP-0260). */
interface S5bState {
  /** Transport sid (not the Jingle sid). */
  sid: string;
  /** Hash for connections to our candidates: SHA-1(sid + us + peer). */
  ourDstaddr: string;
  /** Hash for connections to the peer's candidates (theirs as sent, else SHA-1(sid + peer + us)). */
  peerDstaddr: string;
  ours: S5bCandidate[];
  theirs: S5bCandidate[];
  listener?: S5bListener;
  /** The first connection completed on our listener. */
  accepted?: Promise<S5bConnection>;
  ourProxy?: { jid: string; host: string; port: number; cid: string };
  /** Our attempt on their candidates: the cid and connection, or "error". */
  mine?: { cid: string; conn: S5bConnection } | "error";
  /** Their report on our candidates. */
  theirsUsed?: { cid: string } | "error";
  /** `<activated cid>` received for a proxy candidate of theirs. */
  activated: ReturnType<typeof deferred<string>>;
  selected?: boolean;
}

/** Registers the file-transfer app and features on `endpoint`. */
export async function setupFileTransfer(
  endpoint: Endpoint,
  options: FileTransferOptions = {},
): Promise<FileTransfers> {
  const conn = endpoint.conn;
  const log = options.logger ?? conn.logger;
  const encryption = options.encryption ?? "require";
  const maxFileSize = options.maxFileSize ?? GIB;
  const transports = options.transports ?? ["s5b", "ibb"];
  const ibbBlockSize = Math.min(options.ibb?.blockSize ?? 8192, 65535);
  const ibbMaxBlockSize = Math.min(options.ibb?.maxBlockSize ?? 65535, 65535);
  const ibbWindow = options.ibb?.window ?? 8;
  const s5bConnectMs = options.s5b?.connectTimeoutMs ?? 5000;
  const acceptMs = options.timeouts?.acceptMs ?? 120_000;
  const negotiateMs = options.timeouts?.negotiateMs ?? 30_000;
  const idleMs = options.timeouts?.idleMs ?? 60_000;
  const confirmMs = options.timeouts?.confirmMs ?? 60_000;
  const checksumWaitMs = options.checksum?.waitMs ?? 2000;
  const checksumWaitEncryptedMs = options.checksum?.waitEncryptedMs ?? 0;
  const sessions = new Map<string, Session>();
  const incomingCbs = new Set<(t: Transfer) => void>();
  let proxyLookup: Promise<{ jid: string; host: string; port: number } | undefined> | undefined;

  const presence = trackPresence(conn);
  const features = fileTransferFeatures(encryption);
  await endpoint.disco.addFeatures(...features);
  if (conn.state === "online") await conn.sendPresence().catch(() => {});

  const serverProxy = () =>
    proxyLookup ??= discoverProxy(conn).catch((e) => {
      log.info("no SOCKS5 proxy on the server", { error: message(e) });
      return undefined;
    });

  /** One file-transfer session (either direction). */
  class Session implements Transfer {
    readonly machine: TransferStateMachine;
    readonly started = performance.now();
    readonly offeredAt = new Date().toISOString();
    readonly abort = new AbortController();
    readonly #done = deferred<TransferRecord>();
    readonly done = this.#done.promise;
    readonly times: { accepted?: number; transportConnected?: number } = {};
    transportKind: TransportKind | "none" = "none";
    proxy = false;
    replaced = false;
    blockSize?: number;
    bytes = 0;
    sha256?: string;
    path?: string;
    omemo?: TransferRecord["omemo"];
    key?: Uint8Array;
    iv?: Uint8Array;
    s5b?: S5bState;
    /** Incoming: hashes from the offer or a checksum session-info. */
    knownHashes: FileHash[] = [];
    /** Incoming: algorithms verified against the received bytes. */
    hashesVerified: string[] = [];
    /** Incoming: Conversations' legacy `<file><encrypted>`; `offeredSize` is its `<size>` (with the tag). */
    legacy = false;
    offeredSize?: number;
    checksumArrived = deferred<void>();
    download?: Download;
    /** Settles when the peer (receiver) sends session-terminate. */
    peerTerminated = deferred<JingleReason>();
    /** Resolves when the data may start (transport settled). */
    ready = deferred<
      { kind: "s5b"; conn: S5bConnection } | { kind: "ibb"; sid: string; blockSize: number }
    >();
    idleTimer?: ReturnType<typeof setTimeout>;
    /** Initiator: handles the session-accept inside the IQ handler (throws a StanzaError to refuse it). */
    onAccept?: (j: Jingle) => void;
    /** Initiator: the IBB transport offered in a transport-replace, until accepted. */
    pendingReplace?: { sid: string; blockSize: number };
    /** Responder: the content as the initiator named it. */
    contentName?: string;
    /** Responder: the IBB reception once registered. */
    ibbReadable?: ReadableStream<Uint8Array>;
    readonly timers = new Set<ReturnType<typeof setTimeout>>();

    constructor(
      readonly sid: string,
      readonly peer: string,
      readonly direction: "outgoing" | "incoming",
      readonly file: FileOffer,
      readonly encrypted: boolean,
      readonly initiator: string,
      readonly responder: string,
    ) {
      this.machine = new TransferStateMachine(direction === "outgoing" ? "initiator" : "responder");
      this.machine.onTransition((t) =>
        log.debug("file transfer state", { sid, from: t.from, to: t.to, why: t.why })
      );
    }

    get state(): TransferState {
      return this.machine.state;
    }

    get size(): number {
      return this.file.size ?? 0;
    }

    /** ms since the offer. */
    at(): number {
      return Math.round(performance.now() - this.started);
    }

    move(to: TransferState, why: string) {
      if (this.machine.ended || !this.machine.can(to)) return false;
      this.machine.transition(to, why);
      return true;
    }

    timer(ms: number, fn: () => void) {
      const t = setTimeout(() => {
        this.timers.delete(t);
        fn();
      }, ms);
      this.timers.add(t);
      return t;
    }

    /** Re-arms the stall watchdog; called for every chunk. */
    progress(n: number) {
      this.bytes += n;
      if (this.idleTimer) clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => {
        void this.fail(new TransferError("timeout", `no data for ${idleMs} ms`));
      }, idleMs);
    }

    /** Sends a Jingle action to the peer; `topLevel` elements go directly under `<jingle>`. */
    async sendJingle(
      j: Omit<Jingle, "sid" | "groups"> & { groups?: Jingle["groups"] },
      topLevel: JingleElement[] = [],
    ): Promise<void> {
      const full: Jingle = { groups: [], ...j, sid: this.sid };
      const iq = buildJingleIq(full, { to: this.peer, id: crypto.randomUUID() });
      if (topLevel.length) {
        const jingle = iq.getChild("jingle", NS_JINGLE)!;
        for (const e of topLevel) jingle.append(e);
      }
      await conn.iq(iq as unknown as Element);
    }

    content(transport?: FileTransport, extra?: JingleElement[]): JingleContent {
      return {
        creator: "initiator",
        name: this.contentName ?? CONTENT_NAME,
        senders: "initiator",
        ...(transport ? { transport: { kind: "unknown", element: buildFileTransport(transport) } } : {}),
        ...(extra?.length ? { extra } : {}),
      };
    }

    /** Ends the transfer locally: session-terminate with the reason (unless `quiet`), cleanup, record. */
    async fail(err: unknown, quiet = false): Promise<void> {
      if (this.machine.ended) return;
      const e = classify(err, this.direction === "outgoing" ? "send" : "receive");
      const reason: JingleReason = { condition: e.condition, text: e.message };
      this.machine.transition("failed", reason);
      // Local storage errors name our paths: the peer gets a generic text, the log the detail.
      const peerReason: JingleReason = e.condition === "failed-application"
        ? { condition: e.condition, text: "the file could not be read or stored" }
        : reason;
      const level = e.condition === "cancel" || e.condition === "decline" ? "info" : "warn";
      log[level]("file transfer failed", {
        sid: this.sid,
        peer: this.peer,
        reason: e.condition,
        why: e.message,
      });
      // The terminate goes out before the streams are torn down, so the peer learns why before transport errors.
      const terminate = quiet ? Promise.resolve() : this.sendJingle({
        action: "session-terminate",
        contents: [],
        reason: peerReason,
      }).catch((x) => log.debug("session-terminate not acknowledged", { sid: this.sid, error: message(x) }));
      this.teardown();
      await this.download?.abort(e.message).catch(() => {});
      await terminate;
      this.finish("local");
    }

    /** The peer ended the session. */
    onPeerTerminate(reason: JingleReason) {
      this.peerTerminated.resolve(reason);
      if (this.machine.ended) return;
      // The sender's success arrives only via the receiver's terminate (handled in runSend); with IBB it can
      // overtake the result of our last IQ, so it is also taken while still transferring.
      if (
        this.direction === "outgoing" && reason.condition === "success" &&
        (this.machine.state === "verifying" || this.machine.state === "transferring")
      ) {
        return;
      }
      const r: JingleReason = reason.condition === "success"
        ? { ...reason, condition: "general-error" }
        : reason;
      if (reason.condition === "success") r.text = `peer ended with success in state ${this.machine.state}`;
      this.machine.transition("failed", r);
      const level = reason.condition === "cancel" || reason.condition === "decline" ? "info" : "warn";
      log[level]("file transfer ended by peer", {
        sid: this.sid,
        peer: this.peer,
        reason: reason.condition,
        text: reason.text,
      });
      this.teardown();
      void this.download?.abort(`peer: ${reason.condition}`).catch(() => {});
      this.finish("remote");
    }

    complete() {
      if (this.machine.ended) return;
      this.machine.transition("completed");
      this.teardown();
      this.finish("local");
    }

    teardown() {
      this.abort.abort(new TransferError(this.machine.reason?.condition ?? "cancel", "transfer ended"));
      if (this.idleTimer) clearTimeout(this.idleTimer);
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      const s = this.s5b;
      if (s) {
        s.listener?.close();
        if (s.mine && s.mine !== "error") s.mine.conn.close();
        s.accepted?.then((c) => c.close(), () => {});
      }
      this.ready.reject(new TransferError("cancel", "transfer ended"));
    }

    finish(by: "local" | "remote") {
      sessions.delete(this.sid);
      const reason = this.machine.reason ?? { condition: "general-error" as const };
      const finished = this.at();
      const seconds = this.times.transportConnected !== undefined
        ? (finished - this.times.transportConnected) / 1000
        : 0;
      const record: TransferRecord = {
        peer: this.peer,
        sid: this.sid,
        direction: this.direction,
        file: {
          name: this.file.name ?? "",
          size: this.size,
          ...(this.file.mediaType ? { mediaType: this.file.mediaType } : {}),
          ...(this.sha256 ? { sha256: this.sha256 } : {}),
        },
        transport: {
          kind: this.transportKind,
          proxy: this.proxy,
          replaced: this.replaced,
          ...(this.blockSize ? { blockSize: this.blockSize } : {}),
        },
        encrypted: this.encrypted,
        ...(this.legacy ? { legacyEncryption: true } : {}),
        ...(this.hashesVerified.length ? { hashesVerified: [...this.hashesVerified] } : {}),
        ...(this.omemo ? { omemo: this.omemo } : {}),
        bytes: this.bytes,
        offeredAt: this.offeredAt,
        times: { ...this.times, finished },
        ...(seconds > 0 && reason.condition === "success"
          ? { mbPerSecond: Math.round(this.bytes / seconds / 1e4) / 100 }
          : {}),
        ended: { reason: reason.condition, ...(reason.text ? { text: reason.text } : {}), by },
        ok: reason.condition === "success",
        ...(this.path ? { path: this.path } : {}),
      };
      this.#done.resolve(record);
    }

    async cancel(why = "cancelled"): Promise<void> {
      await this.fail(new TransferError("cancel", why));
    }
  }

  /* ------------------------------------------------ SOCKS5 ------------------------------------------------ */

  /** Opens our listener and builds our candidates (direct + proxy as configured). */
  async function prepareS5b(s: Session, transportSid: string, theirDstaddr?: string): Promise<S5bState> {
    const us = conn.jid;
    const state: S5bState = {
      sid: transportSid,
      ourDstaddr: s5bDstAddr(transportSid, us, s.peer),
      peerDstaddr: theirDstaddr ?? s5bDstAddr(transportSid, s.peer, us),
      ours: [],
      theirs: [],
      activated: deferred<string>(),
    };
    s.s5b = state;
    if (options.s5b?.direct !== false) {
      try {
        state.listener = await listenS5b({
          dstaddr: state.ourDstaddr,
          ...(options.s5b?.hostnames ? { hostnames: options.s5b.hostnames } : {}),
        });
        state.accepted = state.listener.accept(s.abort.signal);
        state.accepted.catch(() => {});
        state.listener.candidates.forEach((c, i) =>
          state.ours.push({
            cid: crypto.randomUUID(),
            host: c.host,
            port: c.port,
            jid: us,
            priority: s5bPriority("direct", Math.max(0, 65535 - i)),
            type: "direct",
          })
        );
      } catch (e) {
        log.warn("cannot listen for SOCKS5", { sid: s.sid, error: message(e) });
      }
    }
    if (options.s5b?.proxy !== false) {
      const proxy = await serverProxy();
      if (proxy) {
        state.ourProxy = { ...proxy, cid: crypto.randomUUID() };
        state.ours.push({
          cid: state.ourProxy.cid,
          host: proxy.host,
          port: proxy.port,
          jid: proxy.jid,
          priority: s5bPriority("proxy"),
          type: "proxy",
        });
      }
    }
    if (options.s5b?.rewriteCandidates) state.ours = options.s5b.rewriteCandidates(state.ours);
    return state;
  }

  const s5bTransport = (st: S5bState): FileTransport => ({
    kind: "s5b",
    sid: st.sid,
    mode: "tcp",
    dstaddr: st.ourDstaddr,
    candidates: st.ours,
  });

  /** Tries the peer's candidates by priority and reports candidate-used or candidate-error. */
  async function tryTheirCandidates(s: Session, st: S5bState): Promise<void> {
    const ordered = [...st.theirs].sort((a, b) => b.priority - a.priority);
    for (const c of ordered) {
      if (s.machine.ended || st.mine) return;
      try {
        const sock = await connectS5b(c.host, c.port, st.peerDstaddr, {
          timeoutMs: s5bConnectMs,
          signal: s.abort.signal,
          ...(c.type === "proxy" && c.jid === (await serverProxy())?.jid ? {} : {
            allowLoopback: options.s5b?.allowLoopback ?? true,
            allowPrivate: options.s5b?.allowPrivate ?? true,
          }),
        });
        if (s.machine.ended || st.mine) {
          sock.close();
          return;
        }
        st.mine = { cid: c.cid, conn: sock };
        log.debug("SOCKS5 connected to peer candidate", {
          sid: s.sid,
          cid: c.cid,
          type: c.type,
          host: c.host,
        });
        break;
      } catch (e) {
        log.debug("SOCKS5 candidate failed", { sid: s.sid, cid: c.cid, host: c.host, error: message(e) });
      }
    }
    if (s.machine.ended) return;
    st.mine ??= "error";
    const report: FileTransport = st.mine === "error"
      ? { kind: "s5b", sid: st.sid, mode: "tcp", candidates: [], candidateError: true }
      : { kind: "s5b", sid: st.sid, mode: "tcp", candidates: [], candidateUsed: st.mine.cid };
    try {
      await s.sendJingle({
        action: "transport-info",
        initiator: s.initiator,
        contents: [s.content(report)],
      });
    } catch (e) {
      return s.fail(new TransferError("failed-transport", `transport-info refused: ${message(e)}`));
    }
    await maybeSelect(s, st);
  }

  /** Once both sides have reported, picks the pair (XEP-0260 §2.4) and makes it ready. */
  async function maybeSelect(s: Session, st: S5bState): Promise<void> {
    if (st.selected || !st.mine || !st.theirsUsed || s.machine.ended) return;
    st.selected = true;
    const mine = st.mine;
    const theirs = st.theirsUsed;
    if (mine === "error" && theirs === "error") {
      st.listener?.close();
      log.info("SOCKS5 failed both ways", { sid: s.sid });
      if (s.direction === "outgoing") await replaceWithIbb(s);
      // The responder waits for the initiator's transport-replace (or its terminate).
      return;
    }
    let useMine: boolean;
    if (mine === "error") useMine = false;
    else if (theirs === "error") useMine = true;
    else {
      const myPick = st.theirs.find((c) => c.cid === mine.cid)?.priority ?? 0;
      const theirPick = st.ours.find((c) => c.cid === theirs.cid)?.priority ?? 0;
      // Tie: the candidate the initiator nominated wins.
      useMine = myPick === theirPick ? s.direction === "outgoing" : myPick > theirPick;
    }
    try {
      let chosen: S5bConnection;
      if (useMine && mine !== "error") {
        const cand = st.theirs.find((c) => c.cid === mine.cid)!;
        if (cand.type === "proxy") {
          s.proxy = true;
          // Their proxy: they connect and activate it, then tell us.
          const cid = await withTimeout(st.activated.promise, negotiateMs, "proxy activation");
          if (cid !== mine.cid) {
            throw new TransferError("failed-transport", `activated ${cid}, used ${mine.cid}`);
          }
        }
        chosen = mine.conn;
        st.accepted?.then((c) => c.close(), () => {});
      } else if (theirs !== "error") {
        if (mine !== "error") mine.conn.close();
        if (st.ourProxy && theirs.cid === st.ourProxy.cid) {
          s.proxy = true;
          const p = st.ourProxy;
          chosen = await connectS5b(p.host, p.port, st.ourDstaddr, {
            timeoutMs: s5bConnectMs,
            signal: s.abort.signal,
          });
          await activateProxy(conn, p.jid, st.sid, s.peer);
          await s.sendJingle({
            action: "transport-info",
            initiator: s.initiator,
            contents: [
              s.content({ kind: "s5b", sid: st.sid, mode: "tcp", candidates: [], activated: p.cid }),
            ],
          });
        } else {
          if (!st.ours.some((c) => c.cid === theirs.cid) || !st.accepted) {
            throw new TransferError("failed-transport", `peer used an unknown candidate ${theirs.cid}`);
          }
          chosen = await withTimeout(st.accepted, negotiateMs, "the peer's SOCKS5 connection");
        }
      } else throw new TransferError("failed-transport", "no SOCKS5 pair");
      st.listener?.close();
      s.transportKind = "s5b";
      s.ready.resolve({ kind: "s5b", conn: chosen });
    } catch (e) {
      await s.fail(
        e instanceof TransferError ? e : new TransferError("failed-transport", `SOCKS5: ${message(e)}`),
      );
    }
  }

  /** Initiator: SOCKS5 failed both ways → transport-replace with IBB. */
  async function replaceWithIbb(s: Session): Promise<void> {
    if (!transports.includes("ibb")) {
      return s.fail(new TransferError("failed-transport", "SOCKS5 failed and IBB is disabled"));
    }
    const sid = crypto.randomUUID();
    s.replaced = true;
    log.info("replacing SOCKS5 with IBB", { sid: s.sid });
    s.pendingReplace = { sid, blockSize: ibbBlockSize };
    try {
      await s.sendJingle({
        action: "transport-replace",
        initiator: s.initiator,
        contents: [s.content({ kind: "ibb", sid, blockSize: ibbBlockSize })],
      });
    } catch (e) {
      await s.fail(new TransferError("failed-transport", `transport-replace refused: ${message(e)}`));
    }
  }

  function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let t: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new TransferError("timeout", `${what}: no answer in ${ms} ms`)), ms);
      }),
    ]).finally(() => clearTimeout(t));
  }

  /* ------------------------------------------------ sending ------------------------------------------------ */

  async function send(peer: string, path: string, opts: SendOptions = {}): Promise<Transfer> {
    const stat = await Deno.stat(path);
    if (!stat.isFile) throw new Error(`${path} is not a file`);
    const size = stat.size;
    const encrypted = opts.encrypted ?? true;
    let to = peer;
    let info: DiscoInfo;
    if (!peer.includes("/")) {
      ({ jid: to, info } = await resolveFileTransferPeer(conn, presence, peer, { encrypted }));
      log.info("picked a resource for the bare JID", { peer, to });
    } else {
      info = await queryDiscoInfo(conn, to).catch((e) => {
        throw new Error(`cannot query ${to}'s features: ${message(e)}`);
      });
    }
    const has = (f: string) => info.features.includes(f);
    if (!has(NS_JFT)) throw new Error(`${to} does not support Jingle file transfer (${NS_JFT})`);
    if (encrypted && !(has(NS_JET) && has(NS_JET_OMEMO))) {
      throw new Error(
        `${to} does not advertise JET-OMEMO (${NS_JET}, ${NS_JET_OMEMO}); send unencrypted or not at all`,
      );
    }
    const wanted = opts.transport ?? "auto";
    let kind: TransportKind;
    if (wanted === "auto") {
      const usable = transports.filter((t) => has(t === "s5b" ? NS_S5B : NS_JIBB));
      if (!usable.length) throw new Error(`${to} supports none of our transports (${transports.join(", ")})`);
      kind = usable[0]!;
    } else {
      if (!has(wanted === "s5b" ? NS_S5B : NS_JIBB)) throw new Error(`${to} does not support ${wanted}`);
      kind = wanted;
    }

    const name = opts.name ?? basename(path);
    const file: FileOffer = {
      name,
      size,
      hashes: [],
      ...(opts.mediaType ? { mediaType: opts.mediaType } : {}),
      ...(opts.desc ? { desc: opts.desc } : {}),
      date: stat.mtime?.toISOString(),
    };
    if (!file.date) delete file.date;
    let preHash: string | undefined;
    if (!encrypted) {
      // Plain transfers: the hash in the offer lets the receiver verify before publishing.
      preHash = await sha256File(path);
      file.hashes.push({ algo: "sha-256", value: opts.testHooks?.offerSha256 ?? hexToB64(preHash) });
    }

    const sid = crypto.randomUUID();
    const s = new Session(sid, to, "outgoing", file, encrypted, conn.jid, to);
    const extra: JingleElement[] = [];
    const topLevel: JingleElement[] = [];
    if (encrypted) {
      const keyDevices = opts.testHooks?.keyDevices;
      const enc = keyDevices
        ? await endpoint.omemo.encrypt([...new Set(keyDevices.map((d) => d.jid))], null, {
          devices: keyDevices,
        })
        : await endpoint.omemo.encrypt([bare(to)], null);
      const forPeer = enc.devices.filter((d) => jidEquals(d.jid, bare(to)) || keyDevices);
      if (forPeer.length === 0) {
        throw new Error(
          `cannot encrypt for ${bare(to)}: no usable OMEMO device (${
            enc.skipped.map((x) => `${x.deviceId}: ${x.reason}`).join(", ") || "none published"
          })`,
        );
      }
      s.key = enc.key;
      s.iv = enc.iv;
      s.omemo = { deviceIds: enc.devices.map((d) => d.deviceId) };
      extra.push(buildJetSecurity(CONTENT_NAME, enc.element as unknown as JingleElement));
      // The copy for newer Conversations, which reads <security> only under <jingle> (module doc).
      topLevel.push(buildJetSecurity(CONTENT_NAME, enc.element as unknown as JingleElement));
    }

    let transport: FileTransport;
    if (kind === "s5b") {
      const st = await prepareS5b(s, crypto.randomUUID());
      transport = s5bTransport(st);
    } else {
      transport = { kind: "ibb", sid: crypto.randomUUID(), blockSize: ibbBlockSize };
    }
    sessions.set(sid, s);
    const description = buildFileDescription(file);
    log.info("offering file", {
      sid,
      peer: to,
      name,
      size,
      encrypted,
      transport: kind,
      ...(s.s5b ? { candidates: s.s5b.ours.length } : {}),
    });
    void runSend(s, path, transport, description, extra, topLevel, opts, preHash);
    return s;
  }

  async function runSend(
    s: Session,
    path: string,
    transport: FileTransport,
    description: JingleElement,
    extra: JingleElement[],
    topLevel: JingleElement[],
    opts: SendOptions,
    preHash: string | undefined,
  ): Promise<void> {
    try {
      const accepted = deferred<void>();
      // Runs inside the IQ handler, so the state is "accepted" before the peer's next stanza is processed.
      s.onAccept = (j) => {
        let t: FileTransport | undefined;
        try {
          t = acceptedTransport(j);
          if (!t || t.kind !== transport.kind) throw new Error("session-accept without a matching transport");
          if (t.kind === "ibb" && (t.blockSize > ibbBlockSize || t.blockSize < 1)) {
            throw new Error(`responder's block-size ${t.blockSize} is not within 1..${ibbBlockSize}`);
          }
        } catch (e) {
          queueMicrotask(() => void s.fail(new TransferError("failed-transport", message(e))));
          throw iqError("bad-request", "modify", undefined, message(e));
        }
        s.times.accepted = s.at();
        s.move("accepted", "session-accept received");
        if (t.kind === "ibb") {
          s.transportKind = "ibb";
          s.ready.resolve({ kind: "ibb", sid: t.sid, blockSize: t.blockSize });
        } else {
          const st = s.s5b!;
          st.theirs = t.candidates;
          if (t.dstaddr) st.peerDstaddr = t.dstaddr;
          s.move("negotiating", "s5b");
          s.timer(negotiateMs, () => {
            if (s.machine.state === "negotiating") {
              void s.fail(new TransferError("failed-transport", `no transport after ${negotiateMs} ms`));
            }
          });
          setTimeout(() => void tryTheirCandidates(s, st), 0);
        }
        accepted.resolve();
      };
      await s.sendJingle({
        action: "session-initiate",
        initiator: conn.jid,
        contents: [{
          ...s.content(transport, extra),
          description: { kind: "unknown", element: description },
        }],
      }, topLevel).catch((e) => {
        throw new TransferError("failed-application", `session-initiate refused: ${message(e)}`);
      });
      const ok = await Promise.race([
        withTimeout(accepted.promise, acceptMs, "session-accept").then(() => true),
        s.peerTerminated.promise.then(() => false),
      ]);
      if (!ok || s.machine.ended) return;
      const ready = await s.ready.promise;
      if (s.machine.ended) return;
      s.times.transportConnected = s.at();
      s.move("transferring", ready.kind);
      if (ready.kind === "ibb") {
        s.transportKind = "ibb";
        s.blockSize = ready.blockSize;
      }
      log.info("sending file", { sid: s.sid, transport: ready.kind, proxy: s.proxy, replaced: s.replaced });

      const file = await Deno.open(path, { read: true });
      const tap = hashTap((n) => {
        s.progress(n);
        opts.onProgress?.(s.bytes, s.size);
      }, s.size);
      let stream = file.readable.pipeThrough(tap.stream);
      if (s.encrypted) stream = stream.pipeThrough(createGcmEncryptStream(s.key!, s.iv!));
      if (
        opts.testHooks && (opts.testHooks.flipByteAt !== undefined || opts.testHooks.stopAfter !== undefined)
      ) {
        stream = stream.pipeThrough(faultInjector(opts.testHooks));
      }
      try {
        if (ready.kind === "ibb") {
          await ibbSend(conn, {
            to: s.peer,
            sid: ready.sid,
            blockSize: ready.blockSize,
            source: stream,
            window: ibbWindow,
            signal: s.abort.signal,
          });
        } else {
          await stream.pipeTo(ready.conn.writable, { signal: s.abort.signal });
        }
      } catch (e) {
        if (s.machine.ended) return;
        stream.cancel().catch(() => {});
        // The receiver already confirmed every byte (its terminate overtook our last IQ's result).
        const confirmed = await Promise.race([s.peerTerminated.promise, Promise.resolve(undefined)]);
        if (confirmed?.condition !== "success" || tap.bytes() !== s.size) throw e;
        log.debug("transport error after the receiver confirmed", { sid: s.sid, error: message(e) });
      }
      if (s.idleTimer) clearTimeout(s.idleTimer);
      s.sha256 = tap.digest();
      if (preHash && s.sha256 && preHash !== s.sha256) {
        throw new TransferError("failed-application", "file changed between hashing and sending");
      }
      if (s.machine.ended) return;
      s.move("verifying", "all bytes sent");
      if (!s.encrypted && s.sha256) {
        // Like Conversations' FT:5: the checksum after the data (plain transfers only, see the module doc).
        await s.sendJingle({
          action: "session-info",
          contents: [],
          infoUnknown: buildChecksum(CONTENT_NAME, [{ algo: "sha-256", value: hexToB64(s.sha256) }]),
        }).catch((e) => log.debug("checksum not acknowledged", { sid: s.sid, error: message(e) }));
      }
      const reason = await Promise.race([
        s.peerTerminated.promise,
        new Promise<null>((r) => s.timer(confirmMs, () => r(null))),
      ]);
      if (s.machine.ended) return;
      if (reason === null) {
        throw new TransferError("timeout", `the receiver did not confirm in ${confirmMs} ms`);
      }
      if (reason.condition === "success") {
        log.info("file sent", { sid: s.sid, peer: s.peer, bytes: s.bytes });
        if (ready.kind === "s5b") ready.conn.close();
        s.machine.transition("completed");
        s.teardown();
        s.finish("remote");
      }
    } catch (e) {
      await s.fail(e);
    }
  }

  function acceptedTransport(j: Jingle): FileTransport | undefined {
    const c = j.contents.find((x) => x.name === CONTENT_NAME) ?? j.contents[0];
    const t = c?.transport;
    if (!t || t.kind !== "unknown") return undefined;
    return parseFileTransport(t.element);
  }

  /* ----------------------------------------------- receiving ----------------------------------------------- */

  /** A session-initiate for a file: acknowledged at once, then decided and run in the background. */
  function onInitiate(j: Jingle, raw: JingleElement, from: string): null {
    const content = j.contents[0];
    if (j.contents.length !== 1 || !content) {
      throw iqError("feature-not-implemented", "cancel", undefined, "one file per session");
    }
    const desc = content.description;
    if (!desc || desc.kind !== "unknown") {
      throw iqError("bad-request", "modify", undefined, "no file description");
    }
    let file: FileOffer;
    let transport: FileTransport;
    try {
      file = parseFileDescription(desc.element);
      if (!content.transport || content.transport.kind !== "unknown") throw new Error("no transport");
      transport = parseFileTransport(content.transport.element);
    } catch (e) {
      log.warn("malformed file offer", { sid: j.sid, from, error: message(e) });
      throw iqError("bad-request", "modify", undefined, message(e));
    }
    const initiator = j.initiator ?? from;
    if (!jidEquals(initiator, from)) {
      throw iqError("bad-request", "modify", undefined, "initiator is not the sender");
    }
    let security: ReturnType<typeof findJetSecurity>;
    try {
      security = findJetSecurity(raw, content.name);
    } catch (e) {
      throw iqError("bad-request", "modify", undefined, message(e));
    }
    const offeredSize = file.size;
    const legacy = file.legacyEncrypted !== undefined;
    if (legacy) {
      // Conversations without JET on our side (docs/protocol.md §5.2): the key transport sits in <file> and
      // <size> counts the GCM tag. Both forms at once leave the size ambiguous.
      if (security) {
        throw iqError("bad-request", "modify", undefined, "both JET <security/> and <file><encrypted/>");
      }
      if (file.size !== undefined && file.size < TAG_BYTES) {
        throw iqError("bad-request", "modify", undefined, `legacy encrypted <size/> ${file.size} < tag`);
      }
      security = { cipher: JET_CIPHER_AES128GCM, type: NS_OMEMO_AXOLOTL, encrypted: file.legacyEncrypted! };
      file = { ...file };
      if (file.size !== undefined) file.size -= TAG_BYTES;
    }
    const s = new Session(j.sid, from, "incoming", file, security !== undefined, from, conn.jid);
    s.legacy = legacy;
    if (offeredSize !== undefined) s.offeredSize = offeredSize;
    s.contentName = content.name;
    s.knownHashes = [...file.hashes];
    sessions.set(j.sid, s);
    for (const cb of incomingCbs) {
      try {
        cb(s);
      } catch (e) {
        log.error("onIncoming callback failed", { error: message(e) });
      }
    }
    void runReceive(s, content, transport, security);
    return null;
  }

  async function decline(s: Session, condition: ReasonCondition, text: string) {
    await s.fail(new TransferError(condition, text));
  }

  async function runReceive(
    s: Session,
    content: JingleContent,
    transport: FileTransport,
    security: ReturnType<typeof findJetSecurity>,
  ): Promise<void> {
    try {
      // Who decides: requests (senders=responder) are not offers.
      if (content.senders && content.senders !== "initiator") {
        return decline(s, "unsupported-applications", "only file offers are supported (no requests)");
      }
      if (!options.downloadDir) return decline(s, "decline", "this account does not receive files");
      if (s.file.size === undefined) return decline(s, "decline", "offer without a size");
      if (s.file.size > maxFileSize) {
        return decline(s, "decline", `file too large: ${s.file.size} bytes > limit ${maxFileSize}`);
      }
      if (transport.kind === "s5b" && transport.mode !== "tcp") {
        return decline(s, "unsupported-transports", "SOCKS5 over UDP is not supported");
      }
      if (!security) {
        if (encryption === "require") {
          return decline(s, "decline", "unencrypted file transfer refused by policy");
        }
      } else {
        if (encryption === "off") return decline(s, "decline", "encrypted file transfer is switched off");
        if (security.type !== NS_OMEMO_AXOLOTL || security.cipher !== JET_CIPHER_AES128GCM) {
          return decline(s, "security-error", `unsupported JET ${security.type} / ${security.cipher}`);
        }
        try {
          const r = await endpoint.omemo.decrypt(bare(s.peer), security.encrypted as unknown as Element);
          if (!r.key || r.plaintext !== null) throw new Error("not a key-transport element");
          if (r.key.length !== 16 && r.key.length !== 32) throw new Error(`key of ${r.key.length} bytes`);
          if (r.iv.length !== 12) throw new Error(`IV of ${r.iv.length} bytes (AES-128-GCM here takes 12)`);
          s.key = r.key.subarray(0, 16);
          s.iv = r.iv;
          s.omemo = {
            deviceIds: [r.senderDeviceId],
            identityFingerprint: r.identityFingerprint,
            trust: r.trust,
          };
        } catch (e) {
          return decline(
            s,
            "security-error",
            `cannot use the JET key transport: ${e instanceof Error ? `${e.name}: ${e.message}` : e}`,
          );
        }
      }
      const offer: IncomingOffer = {
        sid: s.sid,
        from: s.peer,
        file: s.file,
        encrypted: s.encrypted,
        transport: transport.kind,
        ...(s.omemo
          ? {
            omemo: {
              deviceId: s.omemo.deviceIds[0]!,
              identityFingerprint: s.omemo.identityFingerprint ?? "",
              trust: s.omemo.trust ?? "",
            },
          }
          : {}),
      };
      if (options.accept && !(await options.accept(offer, s.peer))) {
        return decline(s, "decline", "refused by policy");
      }
      if (s.machine.ended) return;
      try {
        s.download = await openDownload({
          dir: options.downloadDir,
          name: safeFileName(s.file.name),
          expectedSize: s.file.size,
          maxSize: maxFileSize,
        });
      } catch (e) {
        if (e instanceof DownloadRefusedError) return decline(s, "decline", message(e));
        throw new TransferError("failed-application", `cannot store the file: ${message(e)}`);
      }
      if (s.machine.ended) {
        await s.download.abort("ended");
        return;
      }

      // Accept with our transport: IBB with a block size ≤ theirs and ours; SOCKS5 with our candidates.
      let ours: FileTransport;
      if (transport.kind === "ibb") {
        const blockSize = Math.min(transport.blockSize, ibbMaxBlockSize);
        startIbbReception(s, transport.sid, blockSize);
        ours = { kind: "ibb", sid: transport.sid, blockSize };
      } else {
        const st = await prepareS5b(s, transport.sid, transport.dstaddr);
        st.theirs = transport.candidates;
        ours = s5bTransport(st);
      }
      // The state moves before the accept goes out: the initiator's transport-info can arrive in the same
      // read as the IQ result, before this function resumes.
      s.times.accepted = s.at();
      s.move("accepted", "session-accept sent");
      if (transport.kind === "s5b") s.move("negotiating", "s5b");
      await s.sendJingle({
        action: "session-accept",
        initiator: s.initiator,
        responder: conn.jid,
        contents: [{
          creator: "initiator",
          name: s.contentName ?? CONTENT_NAME,
          senders: "initiator",
          // The description as offered (legacy: the size with the tag, as the sender counts it).
          description: {
            kind: "unknown",
            element: buildFileDescription({ ...s.file, size: s.offeredSize, hashes: [] }),
          },
          transport: { kind: "unknown", element: buildFileTransport(ours) },
        }],
      }).catch((e) => {
        throw new TransferError("failed-application", `session-accept refused: ${message(e)}`);
      });
      if (s.machine.ended) return;
      log.info("accepted file", {
        sid: s.sid,
        peer: s.peer,
        name: s.file.name,
        size: s.file.size,
        encrypted: s.encrypted,
        transport: transport.kind,
      });
      if (transport.kind === "s5b") {
        s.timer(negotiateMs, () => {
          if (s.machine.state === "negotiating" || s.machine.state === "accepted") {
            void s.fail(new TransferError("failed-transport", `no transport after ${negotiateMs} ms`));
          }
        });
        void tryTheirCandidates(s, s.s5b!);
      }
      const ready = await s.ready.promise;
      if (s.machine.ended) return;
      await receiveData(s, ready);
    } catch (e) {
      await s.fail(e);
    }
  }

  /** Registers the IBB reception for `sid` (before the accept goes out, so the peer's `<open/>` finds it). */
  function startIbbReception(s: Session, sid: string, blockSize: number) {
    const rx = ibbReceive(conn, { from: s.peer, sid, maxBlockSize: blockSize, signal: s.abort.signal });
    s.transportKind = "ibb";
    s.blockSize = blockSize;
    s.ibbReadable = rx.readable;
    s.ready.resolve({ kind: "ibb", sid, blockSize });
    rx.opened.catch(() => {});
  }

  async function receiveData(
    s: Session,
    ready: { kind: "s5b"; conn: S5bConnection } | { kind: "ibb"; sid: string; blockSize: number },
  ): Promise<void> {
    const download = s.download!;
    const wire = s.size + (s.encrypted ? TAG_BYTES : 0);
    const source = ready.kind === "ibb" ? s.ibbReadable! : ready.conn.readable;
    s.move("transferring", ready.kind);
    s.times.transportConnected = s.at();
    let wireBytes = 0;
    // The watchdog runs from the start: a sender that never writes a byte must not hold us forever.
    s.idleTimer = setTimeout(
      () => void s.fail(new TransferError("timeout", `no data for ${idleMs} ms`)),
      idleMs,
    );
    let stream = boundedSource(source, wire, ready.kind === "s5b", (n) => {
      wireBytes += n;
      if (s.idleTimer) clearTimeout(s.idleTimer);
      s.idleTimer = setTimeout(
        () => void s.fail(new TransferError("timeout", `no data for ${idleMs} ms`)),
        idleMs,
      );
    });
    if (s.encrypted) stream = stream.pipeThrough(createGcmDecryptStream(s.key!, s.iv!));
    const tap = hashTap(
      (n) => {
        s.bytes += n;
      },
      undefined,
      ["sha-1"],
    );
    try {
      await stream.pipeThrough(tap.stream).pipeTo(download.writable, { signal: s.abort.signal });
    } catch (e) {
      if (s.machine.ended) return;
      throw e;
    } finally {
      if (s.idleTimer) clearTimeout(s.idleTimer);
      if (ready.kind === "s5b") ready.conn.close();
    }
    if (s.machine.ended) return;
    s.move("verifying", `${wireBytes} bytes received`);
    if (s.bytes !== s.size) {
      throw new TransferError("failed-transport", `received ${s.bytes} of ${s.size} bytes`);
    }
    s.sha256 = tap.digest();
    // No hash yet: Conversations sends its checksum right after its last byte, so the file stays an
    // unpublished temp file for a moment (see the module doc for why encrypted transfers do not wait).
    const wait = s.encrypted ? checksumWaitEncryptedMs : checksumWaitMs;
    const verifiable = s.knownHashes.some((h) => COMPUTED_HASHES.includes(h.algo.toLowerCase()));
    if (!verifiable && wait > 0) {
      await Promise.race([s.checksumArrived.promise, new Promise((r) => s.timer(wait, () => r(null)))]);
    }
    if (s.machine.ended) return;
    verifyHashes(s, tap.digests());
    s.path = await download.commit();
    log.info("file received", {
      sid: s.sid,
      peer: s.peer,
      path: s.path,
      bytes: s.bytes,
      encrypted: s.encrypted,
      legacy: s.legacy,
      hashesVerified: s.hashesVerified,
    });
    await s.sendJingle({ action: "session-terminate", contents: [], reason: { condition: "success" } })
      .catch((e) => log.debug("session-terminate not acknowledged", { sid: s.sid, error: message(e) }));
    s.complete();
  }

  /**
   * Checks the offered / checksum hashes we compute (sha-256, sha-1) against the received bytes; a mismatch
   * throws media-error. Other algorithms are logged and ignored.
   */
  function verifyHashes(s: Session, digests: ReadonlyMap<string, string>) {
    for (const h of s.knownHashes) {
      const ours = digests.get(h.algo.toLowerCase());
      if (ours === undefined) {
        log.info("hash not verified (algorithm not computed)", { sid: s.sid, algo: h.algo });
        continue;
      }
      if (b64ToHex(h.value) !== ours) {
        throw new TransferError("media-error", `${h.algo} of the received file does not match the sender's`);
      }
      if (!s.hashesVerified.includes(h.algo)) s.hashesVerified.push(h.algo);
    }
  }

  /* -------------------------------------------- Jingle routing -------------------------------------------- */

  const handleJingle: IqHandler = (payload, ctx) => {
    let j: Jingle;
    try {
      j = parseJingle(payload as unknown as JingleElement);
    } catch (e) {
      log.warn("malformed jingle", { from: ctx.from, error: message(e) });
      throw iqError("bad-request", "modify", undefined, message(e));
    }
    const s = sessions.get(j.sid);
    if (!s && j.action === "session-initiate") {
      return onInitiate(j, payload as unknown as JingleElement, ctx.from);
    }
    if (!s || !jidEquals(ctx.from, s.peer)) {
      log.warn("file-transfer jingle for unknown session", {
        sid: j.sid,
        action: j.action,
        from: ctx.from,
        reason: s ? "wrong sender" : "unknown sid",
      });
      throw iqError("item-not-found", "cancel", "unknown-session");
    }
    if (!isSupportedAction(j.action)) {
      log.warn("unsupported jingle action", { sid: j.sid, action: j.action });
      throw iqError("feature-not-implemented", "cancel");
    }
    if (!s.machine.accepts(j.action as JingleAction)) {
      log.warn("file-transfer jingle action out of order", { sid: j.sid, action: j.action, state: s.state });
      throw iqError("unexpected-request", "wait", "out-of-order");
    }
    switch (j.action) {
      case "session-accept":
        if (!s.onAccept) throw iqError("unexpected-request", "wait", "out-of-order");
        s.onAccept(j);
        s.onAccept = undefined;
        break;
      case "session-terminate":
        s.onPeerTerminate(j.reason ?? { condition: "success" });
        break;
      case "session-info":
        onSessionInfo(s, j);
        break;
      case "transport-info":
        onTransportInfo(s, j);
        break;
      case "transport-replace":
        onTransportReplace(s, j);
        break;
      case "transport-accept":
        onTransportAccept(s, j);
        break;
      case "transport-reject":
        void s.fail(
          new TransferError("failed-transport", "the peer rejected IBB after SOCKS5 failed"),
          false,
        );
        break;
    }
    return null;
  };

  function onSessionInfo(s: Session, j: Jingle) {
    const info = j.infoUnknown;
    if (!info) return; // a ping
    if (info.name === "checksum" && info.getNS()?.startsWith("urn:xmpp:jingle:apps:file-transfer:")) {
      let hashes: FileHash[];
      try {
        hashes = parseChecksum(info).hashes;
      } catch (e) {
        throw iqError("bad-request", "modify", undefined, message(e));
      }
      if (s.direction === "incoming") {
        if (s.encrypted) {
          log.debug("checksum on an encrypted transfer (the GCM tag already authenticates it)", {
            sid: s.sid,
          });
        }
        if (s.machine.state === "completed") return;
        s.knownHashes.push(...hashes);
        s.checksumArrived.resolve();
      }
      return;
    }
    if (info.name === "received") return;
    throw iqError("feature-not-implemented", "modify", "unsupported-info");
  }

  function parseContentTransport(j: Jingle): FileTransport {
    const c = j.contents[0];
    if (!c?.transport || c.transport.kind !== "unknown") {
      throw iqError("bad-request", "modify", undefined, "no transport");
    }
    try {
      return parseFileTransport(c.transport.element);
    } catch (e) {
      throw iqError("bad-request", "modify", undefined, message(e));
    }
  }

  function onTransportInfo(s: Session, j: Jingle) {
    const t = parseContentTransport(j);
    const st = s.s5b;
    if (t.kind !== "s5b" || !st || t.sid !== st.sid) {
      throw iqError("bad-request", "modify", undefined, "transport-info for another transport");
    }
    if (t.candidateUsed !== undefined) {
      if (!st.ours.some((c) => c.cid === t.candidateUsed)) {
        throw iqError("bad-request", "modify", undefined, `unknown candidate ${t.candidateUsed}`);
      }
      if (st.theirsUsed) throw iqError("unexpected-request", "wait", "out-of-order");
      st.theirsUsed = { cid: t.candidateUsed };
      void maybeSelect(s, st);
    } else if (t.candidateError) {
      if (st.theirsUsed) throw iqError("unexpected-request", "wait", "out-of-order");
      st.theirsUsed = "error";
      void maybeSelect(s, st);
    } else if (t.activated !== undefined) {
      st.activated.resolve(t.activated);
    } else if (t.proxyError) {
      void s.fail(new TransferError("failed-transport", "the peer could not activate its proxy"));
    }
  }

  /** Responder: the initiator gave up SOCKS5; we take IBB (or reject anything else). */
  function onTransportReplace(s: Session, j: Jingle) {
    // Only a SOCKS5 session that has not started moving bytes can be replaced.
    if (!s.s5b) throw iqError("unexpected-request", "wait", "out-of-order");
    const t = parseContentTransport(j);
    if (t.kind !== "ibb") {
      void s.sendJingle({
        action: "transport-reject",
        initiator: s.initiator,
        contents: [s.content(t)],
      }).catch(() => {});
      return;
    }
    const st = s.s5b;
    if (st) {
      st.selected = true;
      st.listener?.close();
      if (st.mine && st.mine !== "error") st.mine.conn.close();
    }
    s.replaced = true;
    const blockSize = Math.min(t.blockSize, ibbMaxBlockSize);
    log.info("peer replaced SOCKS5 with IBB", { sid: s.sid, blockSize });
    // The reception is registered before transport-accept goes out (the IQ result of this handler is first).
    const rx = ibbReceive(conn, {
      from: s.peer,
      sid: t.sid,
      maxBlockSize: blockSize,
      signal: s.abort.signal,
    });
    rx.opened.catch(() => {});
    s.ibbReadable = rx.readable;
    s.transportKind = "ibb";
    s.blockSize = blockSize;
    queueMicrotask(() => {
      s.sendJingle({
        action: "transport-accept",
        initiator: s.initiator,
        contents: [s.content({ kind: "ibb", sid: t.sid, blockSize })],
      }).then(
        () => s.ready.resolve({ kind: "ibb", sid: t.sid, blockSize }),
        (e) => s.fail(new TransferError("failed-transport", `transport-accept refused: ${message(e)}`)),
      );
    });
  }

  /** Initiator: the responder took our IBB replacement. */
  function onTransportAccept(s: Session, j: Jingle) {
    const t = parseContentTransport(j);
    const pending = s.pendingReplace;
    if (!pending || t.kind !== "ibb" || t.sid !== pending.sid) {
      throw iqError("bad-request", "modify", undefined, "transport-accept for another transport");
    }
    if (t.blockSize < 1 || t.blockSize > pending.blockSize) {
      throw iqError("bad-request", "modify", undefined, `block-size ${t.blockSize} larger than offered`);
    }
    s.pendingReplace = undefined;
    s.transportKind = "ibb";
    s.ready.resolve({ kind: "ibb", sid: t.sid, blockSize: t.blockSize });
  }

  const stopRouter = jingleRouter(conn, log).register({
    name: "files",
    owns: (sid) => sessions.has(sid),
    takesInitiate: (jingle) =>
      hasDescription(jingle, (ns) => ns.startsWith("urn:xmpp:jingle:apps:file-transfer:")),
    handle: handleJingle,
  });

  return {
    send,
    onIncoming(cb) {
      incomingCbs.add(cb);
      return () => incomingCbs.delete(cb);
    },
    active: sessions,
    async stop() {
      await Promise.all([...sessions.values()].map((s) => s.cancel("shutdown").catch(() => {})));
      stopRouter();
      presence.stop();
      // urn:xmpp:jingle:1 stays: calls share it.
      await endpoint.disco.removeFeatures(...features.filter((f) => f !== NS_JINGLE)).catch(() => {});
    },
  };
}

/* ----------------------------------------- bare JID → full JID ----------------------------------------- */

/** The available resources of contacts as their presence announced them. */
export interface PresenceTracker {
  /** Full JID → priority, of the available resources of `bareJid`. */
  resources(bareJid: string): Map<string, number>;
  /** Resolves when presence from `bareJid` (any resource, or the bare JID itself) next arrives. */
  next(bareJid: string): Promise<void>;
  stop(): void;
}

/** Tracks contacts' available resources from incoming presence (at most 4096 bare JIDs, 32 resources each). */
export function trackPresence(conn: XmppConnection): PresenceTracker {
  const MAX_CONTACTS = 4096;
  const MAX_RESOURCES = 32;
  const byBare = new Map<string, Map<string, number>>();
  const waiters = new Map<string, Set<() => void>>();
  const off = conn.onPresence((p, from) => {
    let b: string;
    try {
      b = bare(from).toLowerCase();
    } catch {
      return;
    }
    const type = p.attrs.type;
    if (from.includes("/") && (type === undefined || type === "unavailable")) {
      const m = byBare.get(b) ?? new Map<string, number>();
      if (type === "unavailable") m.delete(from);
      else if (!m.has(from) && (m.size >= MAX_RESOURCES || (!byBare.has(b) && byBare.size >= MAX_CONTACTS))) {
        // Anyone can send us directed presence: bounded, so a flood of invented JIDs cannot grow it.
        return;
      } else {
        // RFC 6121 §4.7.2.3: -128..127, absent = 0.
        const n = Number(p.getChildText("priority") ?? "0");
        m.set(from, Number.isInteger(n) && n >= -128 && n <= 127 ? n : 0);
      }
      if (m.size) byBare.set(b, m);
      else byBare.delete(b);
    } else if (type === "unavailable") byBare.delete(b);
    for (const w of waiters.get(b) ?? []) w();
    waiters.delete(b);
  });
  return {
    resources: (b) => new Map(byBare.get(b.toLowerCase()) ?? []),
    next(b) {
      const key = b.toLowerCase();
      return new Promise((resolve) => {
        const set = waiters.get(key) ?? new Set();
        set.add(resolve);
        waiters.set(key, set);
      });
    },
    stop() {
      off();
      for (const set of waiters.values()) for (const w of set) w();
      waiters.clear();
    },
  };
}

/**
 * Picks the full JID to offer a file to, for a bare JID: XEP-0234 sessions go to one resource. Candidates are
 * the available resources seen in presence; when none is known a presence probe asks the server for them
 * (it answers only if we are subscribed to the peer's presence). Each is asked for its disco#info; the
 * highest-priority one that advertises file transfer (and JET + JET-OMEMO when `encrypted`) wins. Throws
 * with what was found when none fits.
 */
export async function resolveFileTransferPeer(
  conn: XmppConnection,
  presence: PresenceTracker,
  bareJid: string,
  options: { encrypted: boolean; probeMs?: number },
): Promise<{ jid: string; info: DiscoInfo }> {
  let resources = presence.resources(bareJid);
  if (resources.size === 0) {
    const answered = presence.next(bareJid);
    await conn.sendPresence({ type: "probe", to: bareJid });
    let t: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([answered, new Promise<void>((r) => t = setTimeout(r, options.probeMs ?? 3000))]);
    clearTimeout(t);
    // The server sends every resource's presence in one burst: let the rest of it arrive.
    await new Promise((r) => setTimeout(r, 200));
    resources = presence.resources(bareJid);
  }
  if (resources.size === 0) {
    throw new Error(
      `${bareJid} has no available resource (offline, or we are not subscribed to its presence); ` +
        `give a full JID (user@domain/resource)`,
    );
  }
  const ordered = [...resources].sort((a, b) => b[1] - a[1]);
  const infos = await Promise.all(
    ordered.map(([jid]) =>
      queryDiscoInfo(conn, jid).then((info) => ({ jid, info }), (e) => ({ jid, error: message(e) }))
    ),
  );
  const why: string[] = [];
  for (const r of infos) {
    if ("error" in r) {
      why.push(`${r.jid}: disco failed (${r.error})`);
      continue;
    }
    const has = (f: string) => r.info.features.includes(f);
    if (!has(NS_JFT)) why.push(`${r.jid}: no Jingle file transfer`);
    else if (options.encrypted && !(has(NS_JET) && has(NS_JET_OMEMO))) why.push(`${r.jid}: no JET-OMEMO`);
    else return r;
  }
  throw new Error(`no resource of ${bareJid} can take this file: ${why.join("; ")}`);
}

/** A human summary of a record (stderr of send-file, the bot's log). */
export function summarizeTransfer(r: TransferRecord): string {
  const how = `${r.transport.kind}${r.transport.proxy ? " via proxy" : ""}${
    r.transport.replaced ? " (after SOCKS5 failed)" : ""
  }`;
  const crypto = r.encrypted
    ? `JET-OMEMO${r.omemo?.deviceIds.length ? ` (devices ${r.omemo.deviceIds.join(", ")})` : ""}`
    : "unencrypted";
  return [
    `${r.direction === "outgoing" ? "sent" : "received"} ${r.file.name} (${r.file.size} bytes) ${
      r.direction === "outgoing" ? "to" : "from"
    } ${r.peer}`,
    `transport ${how}, ${crypto}`,
    r.ok
      ? `ok: ${r.bytes} bytes${r.mbPerSecond !== undefined ? `, ${r.mbPerSecond} MB/s` : ""}${
        r.file.sha256 ? `, sha-256 ${r.file.sha256}` : ""
      }`
      : `failed: ${r.ended.reason}${r.ended.text ? ` (${r.ended.text})` : ""}, ended by ${r.ended.by}`,
  ].join("\n");
}
