/**
 * WebRTC media-plane adapter. The ONLY module that imports werift.
 *
 * Seams patched in werift 0.25.2 (installed once, at module load, process-wide):
 *  1. `Connection.prototype.applyStunTurnServersFromOptions`: werift falls back to
 *     stun.l.google.com:19302 when no STUN server is configured. After the original runs we
 *     clear `stunServer` unless one was configured, so no srflx gathering / DNS lookup happens.
 *  2. `DtlsSocket.prototype.setupExtensions` (called from the DtlsSocket constructor) is used as a
 *     per-socket construction hook that installs:
 *     a. an early ClientHello: `RTCDtlsTransport.start()` sleeps 100 ms before `DtlsClient.connect()`.
 *        We call connect() in a microtask right after construction (the transport has subscribed to
 *        onConnect/onError by then) and make werift's later call return the same promise. Because
 *        the remote DTLS server may not exist yet (its ICE side may finish a little later), the
 *        ClientHello is re-sent after 10/20/40/80/160 ms while nothing has come back.
 *     b. duplicate HelloVerifyRequest filter: werift's Flight3 throws ("flight === 3") or resets the
 *        transcript on a retransmitted HVR, killing the handshake; a client ignores HVR after flight 1.
 *     c. the peer-authentication guard (security-checklist §1.1b): `onConnect.execute` is wrapped;
 *        before werift may signal "connected" we verify CertificateVerify (we are server) or the
 *        ServerKeyExchange signature (we are client), the peer Finished, and that the certificate /
 *        ECDH key werift used are the transcript's (media/dtls_verify.ts). On failure the socket is
 *        closed and `onError` fires, so RTCDtlsTransport goes to "failed" and never starts SRTP.
 *  3. `RTCDtlsTransport.prototype.updateSrtpSession`: wraps the SRTP/SRTCP decrypt of the new
 *     session to count packets dropped for a bad auth tag (werift drops them but counts nothing)
 *     and adds the SRTP replay window werift lacks (64 packets per SSRC; SRTCP: none yet).
 *  4. `UdpTransport.prototype.init`: Deno's node:dgram does not keep the order of back-to-back
 *     `socket.send()` calls (measured: ~50 % inversions for 2000 sends; Node keeps order). werift
 *     sends each DTLS flight as several datagrams without waiting, so under load the client's
 *     CertificateVerify overtakes its Certificate and werift's server throws "client certificate
 *     missing before certificate verify" -> DTLS failed (the 10–40 % failures with 50 concurrent
 *     setups on Deno). We give every werift UDP socket a FIFO send queue (next send is issued from
 *     the previous one's completion callback). In addition (2d) a DTLS server holds back a
 *     CertificateVerify that arrives before the client Certificate (real networks reorder too), and
 *     (2e) retransmitted ServerKeyExchange/ClientKeyExchange are not re-processed (werift would
 *     re-derive keys; seen at 100 concurrent setups as "peer Finished verify_data mismatch").
 *     (2f) inbound DTLS record filter (see `filterRecords`): an off-path plaintext alert or a record
 *     with an unknown content type no longer closes an established transport.
 *     (2g) early DTLS records: werift creates the DTLS socket only after its own ICE `connect()` has
 *     returned, and drops DTLS that arrives before. A peer whose ICE finished first (aiortc/OpenSSL as
 *     DTLS client, we the server because we offered) then loses its ClientHello and resends it after
 *     OpenSSL's 1 s timer. Seam 5 keeps DTLS datagrams from the validated pair while no
 *     DTLS socket listens on the connection (at most `EARLY_DTLS_RECORDS_MAX`), and the socket
 *     construction hook replays them into the new socket (`PeerStats.earlyDtlsRecordsReplayed`).
 *  5. `Connection.prototype.ensureProtocol` (called once per ICE socket/protocol): werift hands every
 *     non-STUN datagram to DTLS/SRTP whatever its source address. We wrap the protocol's receive
 *     method (the one that still knows the source) so that non-STUN datagrams are delivered only
 *     from the remote address of a succeeded (valid) or the nominated ICE pair of that protocol
 *     (see `fromValidatedPair`); the others are dropped and counted (`PeerStats.foreignSourceDrops`).
 *     STUN always passes: connectivity checks, consent and a legit pair switch need it. A datagram from
 *     the address of a signalled candidate whose pair is still being checked is held until that check
 *     ends (`holdUntilValidated`): with aggressive nomination the peer may already send DTLS on it.
 *  6. `Connection.prototype.connect/checkComplete/close/setState`: ICE completion is reported when the
 *     nominated pair succeeds, not at werift's next 20 ms check-pacing tick (`installIceCompletionSeam`);
 *     a closed connection is not revived by the rest of werift's `connect()`.
 *  7. werift's tweetnacl `box.keyPair`/`scalarMult`: native X25519 for the DTLS ECDHE
 *     (`installNativeX25519`).
 *  8. `CipherContext.prototype.signatureData/generateKeySignature`: the DTLS CertificateVerify and
 *     ServerKeyExchange signatures with a parsed key object instead of a PEM parsed per signature.
 *  And the codecs we offer are spelt as Conversations/Dino write them (`offeredCodecs`: `opus`, not `OPUS`).
 *
 * Without BUNDLE (`bundle: false`, as Dino's sessions are) every m-line has its own ICE+DTLS transport: RTP of a
 * kind is sent and accepted only once the transport of that kind's own m-line has authenticated its peer, the
 * DTLS state reported is the aggregate over all transports (`StateChange.dtls`) and the security counters of
 * `stats()` are summed over all of them.
 *
 * Measured effect of 2g, 5 (held datagrams), 6, 7 and 8 (scripts/bench_calls.ts, 100 calls, 2-core machine,
 * medians): bare werift loopback handshake 35.7 → 9.8 ms, bot-to-bot OMEMO-verified call setup (propose →
 * first RTP both ways) 59.4 → 30.5 ms, the bot calling an aiortc peer 1043 → 42 ms (no more OpenSSL
 * ClientHello retransmission after 1 s).
 */
import {
  CandidatePairState,
  CipherContext,
  Connection,
  DtlsClient,
  DtlsSocket,
  parseMessage,
  RTCCertificate,
  RTCDtlsTransport,
  RTCPeerConnection,
  RtpPacket,
  SrtpAuthenticationError,
  StunProtocol,
  UdpTransport,
  useOPUS,
  usePCMU,
  useVP8,
} from "werift";
import { Buffer } from "node:buffer";
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  sign as cryptoSign,
} from "node:crypto";
import { createRequire } from "node:module";
import {
  fingerprintSha256,
  type PeerHandshakeEvidence,
  type TranscriptMessage,
  verifyPeerHandshake,
} from "./dtls_verify.ts";

export { fingerprintSha256, type PeerHandshakeEvidence } from "./dtls_verify.ts";

// ---------------------------------------------------------------- public types

/** A STUN/TURN server the peer may use (RTCIceServer shape); none is used unless listed. */
export interface IceServerConfig {
  /** `stun:` / `turn:` URL(s) of the server. */
  urls: string | string[];
  /** TURN user name. */
  username?: string;
  /** TURN password; never logged. */
  credential?: string;
}

/** Kind of media on an m-line / transceiver. */
export type MediaKind = "audio" | "video";
/** Signalling role: the initiator creates the offer, the responder the answer. */
export type PeerRole = "initiator" | "responder";
/** State of the ICE or the DTLS transport, as reported in {@link StateChange}. */
export type TransportState = "new" | "checking" | "connected" | "failed" | "closed";

/** Log sink of the media plane: a level, a message and optional structured data (no secrets). */
export interface PeerLogger {
  (level: "debug" | "info" | "warn" | "error", msg: string, data?: Record<string, unknown>): void;
}

/** A local ICE candidate gathered by werift, to be sent to the peer (e.g. as a Jingle transport-info). */
export interface LocalCandidate {
  /** "candidate:..." line without "a=" */
  candidate: string;
  /** The m-line's `mid` the candidate belongs to. */
  sdpMid?: string;
  /** Index of the m-line the candidate belongs to. */
  sdpMLineIndex?: number;
}

/** An ICE candidate received from the peer. */
export interface RemoteCandidate {
  /** "candidate:..." line without "a=". */
  candidate: string;
  /** The m-line's `mid` the candidate belongs to. */
  sdpMid?: string;
  /** Index of the m-line the candidate belongs to. */
  sdpMLineIndex?: number;
}

/** PEM certificate + private key (werift's `RTCCertificate` inputs). */
export interface DtlsCertificate {
  /** Certificate, PEM. */
  certPem: string;
  /** Private key, PEM; never logged. */
  keyPem: string;
  /** Key algorithm of the certificate. */
  signature: "ecdsa" | "rsa";
}

/** Options of {@link createPeer}. */
export interface PeerOptions {
  /** default: none. Nothing is ever sent to a STUN/TURN server that is not listed here. */
  iceServers?: IceServerConfig[];
  /** Who creates the offer: the initiator; the responder answers. */
  role: PeerRole;
  /** Offer/accept an audio m-line. */
  audio: boolean;
  /** Offer/accept a video m-line. */
  video: boolean;
  /** Where the media plane logs; default: nowhere. */
  logger?: PeerLogger;
  /** own DTLS certificate; default: one ECDSA P-256 cert per process (werift default). */
  certificate?: DtlsCertificate;
  /** gather IPv6 host candidates (default true) */
  ipv6?: boolean;
  /** BUNDLE all media on one transport (default true). `false` = one ICE/DTLS transport per m-line, as Dino's
   * offers are (used by tests that play Dino). */
  bundle?: boolean;
}

/** Packet and byte counters of one media kind (plaintext RTP bytes). */
export interface TrackCounters {
  /** RTP packets sent. */
  packetsSent: number;
  /** RTP bytes sent (plaintext). */
  bytesSent: number;
  /** RTP packets received (after SRTP decryption). */
  packetsReceived: number;
  /** RTP bytes received (plaintext). */
  bytesReceived: number;
}

/** Counters of a {@link Peer}: media per kind and the packets the security checks dropped. */
export interface PeerStats {
  /** Audio RTP counters. */
  audio: TrackCounters;
  /** Video RTP counters. */
  video: TrackCounters;
  /** SRTP/SRTCP packets dropped because the auth tag did not verify */
  srtpAuthFailures: number;
  /** authenticated SRTP packets dropped as replays (or older than the 64-packet window) */
  srtpReplays: number;
  /** non-STUN datagrams (DTLS, SRTP, SRTCP, anything else) dropped because their source address was
   * not the remote address of a succeeded or nominated ICE candidate pair */
  foreignSourceDrops: number;
  /** DTLS records that arrived from the validated pair before the DTLS layer listened, replayed into it
   * once it did (without this they were lost and the peer had to retransmit) */
  earlyDtlsRecordsReplayed: number;
  /** early DTLS records dropped because the bounded buffer ({@link EARLY_DTLS_RECORDS_MAX}) was full */
  earlyDtlsRecordsDropped: number;
  /** initial ClientHellos (no cookie) received from the validated pair: 1 per handshake when the peer,
   * as DTLS client, never retransmitted its first flight; 0 when we are the client */
  dtlsInitialClientHellos: number;
}

/** ICE and DTLS transport states of a {@link Peer}. */
export interface StateChange {
  /** State of the ICE transport. */
  ice: TransportState;
  /** State of the DTLS transports, aggregated over the current ones (one per m-line without BUNDLE): "failed"
   * once any failed (it stays so), "connected" only when every one is connected and its peer authenticated,
   * "new" before any started, "checking" otherwise; "closed" after {@link Peer.close}. */
  dtls: TransportState;
  /** set when dtls is "failed" (e.g. peer authentication failure): why the (first) failing transport failed */
  reason?: string;
}

/** One decrypted RTP packet received from the peer. */
export interface RtpEvent {
  /** Which media the packet belongs to. */
  kind: MediaKind;
  /** serialized (decrypted) RTP packet */
  packet: Uint8Array;
}

/** One WebRTC peer connection (werift) with ICE-UDP and DTLS-SRTP, driven by Jingle signalling. */
export interface Peer {
  /** Whether we created the offer (initiator) or answer it (responder). */
  readonly role: PeerRole;
  /** Creates the SDP offer (initiator, or on renegotiation). */
  createOffer(): Promise<string>;
  /** Creates the SDP answer to the remote offer. */
  createAnswer(): Promise<string>;
  /** Applies the peer's SDP offer or answer. */
  setRemoteDescription(type: "offer" | "answer", sdp: string): Promise<void>;
  /** Adds a peer ICE candidate; `null` = end of candidates. */
  addRemoteCandidate(c: RemoteCandidate | null): Promise<void>;
  /** Subscribes to gathered local candidates (`null` = gathering done); returns the unsubscribe function. */
  onLocalCandidate(cb: (c: LocalCandidate | null) => void): () => void;
  /** Subscribes to ICE/DTLS state changes; returns the unsubscribe function. */
  onStateChange(cb: (s: StateChange) => void): () => void;
  /** Subscribes to decrypted inbound RTP; returns the unsubscribe function. */
  onRtp(cb: (e: RtpEvent) => void): () => void;
  /** Current ICE and DTLS states. */
  state(): StateChange;
  /** resolves when ICE and every current DTLS transport are connected and their peers authenticated; rejects on
   * failure */
  waitConnected(timeoutMs?: number): Promise<void>;
  /** sha-256 (uppercase colon hex) of the certificate presented in the DTLS handshake, once verified. Only the
   * FIRST transport (the first m-line's); without BUNDLE each m-line has its own DTLS transport, see
   * {@link Peer.remoteCertificateFingerprints}. */
  remoteCertificateFingerprint(): string | undefined;
  /** sha-256 fingerprints (uppercase colon hex) of the certificates of every current DTLS transport that is
   * connected with its peer authenticated, in m-line order (one entry per transport: one with BUNDLE). */
  remoteCertificateFingerprints(): string[];
  /** Sha-256 fingerprint (uppercase colon hex) of our own DTLS certificate, as signalled in Jingle. */
  localFingerprint(): string;
  /** negotiated DTLS role (client sends the ClientHello) of the FIRST transport (the first m-line's), once its
   * handshake started */
  dtlsRole(): "client" | "server" | undefined;
  /** send one raw RTP packet; werift rewrites SSRC and payload type to the negotiated ones. false (nothing sent)
   * until the transport of that kind's m-line is connected with its peer authenticated.
   * Counters count plaintext RTP bytes. */
  sendRtp(kind: MediaKind, packet: Uint8Array): Promise<boolean>;
  /** Renegotiation (video upgrade, XEP-0166 content-add): media of `kind` is wanted from now on. With
   * `addTransceiver` (we create the next offer) a sendrecv transceiver is added for it; otherwise the
   * transceiver comes from the next remote offer. */
  enableMedia(kind: MediaKind, addTransceiver: boolean): void;
  /** Undoes {@link Peer.enableMedia} after a refused renegotiation: `kind` is no longer sent. */
  disableMedia(kind: MediaKind): void;
  /** Packet counters, including the security drops (summed over every DTLS transport / ICE connection the peer
   * had, those of removed contents included). */
  stats(): PeerStats;
  /** Closes ICE, DTLS and SRTP; idempotent. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------- werift seams (internal types)

interface HandshakeLike {
  msg_type: number;
  message_seq: number;
  fragment: Uint8Array;
}
interface DtlsContextLike {
  flight: number;
  handshakeCache: Record<string, { data: HandshakeLike[]; flight: number }>;
}
interface CipherContextLike {
  masterSecret?: Uint8Array;
  remoteCertificate?: Uint8Array;
  remoteKeyPair?: { publicKey?: Uint8Array };
}
interface EventLike {
  execute: (...args: unknown[]) => void;
}
interface DtlsSocketLike {
  dtls: DtlsContextLike;
  cipher: CipherContextLike;
  connected: boolean;
  onConnect: EventLike;
  onError: EventLike;
  onHandleHandshakes: (h: HandshakeLike[]) => Promise<void>;
  transport: {
    send: (buf: Uint8Array, addr?: unknown) => unknown;
    /** werift's ICE-backed DTLS transport; `ice` is the ICE `Connection` */
    socket: { onData: (d: Uint8Array) => void; ice?: object };
  };
  connect?: () => Promise<void>;
  close(): void;
  remoteCertificate?: Uint8Array;
}

interface GuardInfo {
  verified: boolean;
  failure?: string;
}
const guardInfo = new WeakMap<object, GuardInfo>();
const srtpFailures = new WeakMap<object, { count: number; replays: number }>();

/** Per-SSRC 64-packet replay window over the estimated 48-bit SRTP index (RFC 3711 §3.3.2, App. A). */
export class ReplayWindow {
  #streams = new Map<number, { roc: number; sl: number; mask: bigint }>();
  static readonly SIZE = 64n;
  /** true = new packet (and it is recorded); false = replayed or too old */
  accept(ssrc: number, seq: number): boolean {
    const st = this.#streams.get(ssrc);
    if (!st) {
      this.#streams.set(ssrc, { roc: 0, sl: seq, mask: 1n });
      return true;
    }
    let v = st.roc;
    if (st.sl < 32768) {
      if (seq - st.sl > 32768) v = st.roc - 1;
    } else if (st.sl - 32768 > seq) v = st.roc + 1;
    const idx = BigInt(v) * 65536n + BigInt(seq);
    const top = BigInt(st.roc) * 65536n + BigInt(st.sl);
    if (idx > top) {
      const shift = idx - top;
      st.mask = shift >= ReplayWindow.SIZE
        ? 1n
        : ((st.mask << shift) | 1n) & ((1n << ReplayWindow.SIZE) - 1n);
      st.roc = v;
      st.sl = seq;
      return true;
    }
    const back = top - idx;
    if (back >= ReplayWindow.SIZE) return false;
    const bit = 1n << back;
    if (st.mask & bit) return false;
    st.mask |= bit;
    return true;
  }
}

/** Tunables for tests/measurements. */
export const mediaTuning = {
  /** disable the early ClientHello (restores werift's 100 ms sleep) — for before/after measurement */
  earlyClientHello: true,
  /** re-send delays for the early ClientHello while the peer has not answered */
  clientHelloResendMs: [10, 20, 40, 80, 160],
  /** replay DTLS records that arrived before the DTLS layer listened (seam 2g); false = werift's
   * behaviour (they are lost) — for before/after measurement and for the test that shows the loss */
  replayEarlyDtls: true,
  /** tests only: delay werift's `RTCDtlsTransport.start()` by this many ms, so that the peer's first
   * DTLS flight surely arrives before the DTLS layer exists (0 = no delay) */
  dtlsStartDelayMs: 0,
  /** report ICE completion when the nominated pair succeeds, not at werift's next 20 ms tick (seam 6);
   * false = werift's behaviour, for before/after measurement */
  earlyIceCompletion: true,
};

/** Test hooks. `enforce: false`: the guard only records its verdict but lets the handshake complete.
 * `mutateEvidence`: lets a test tamper with what the guard sees (e.g. a forged peer Finished). */
export const guardTesting: {
  enforce: boolean;
  mutateEvidence?: (ev: PeerHandshakeEvidence) => void;
} = { enforce: true };

const fail = (sock: DtlsSocketLike, reason: string) => {
  guardInfo.set(sock, { verified: false, failure: reason });
  sock.connected = false;
  try {
    sock.onError.execute(new Error(`DTLS peer authentication failed: ${reason}`));
  } finally {
    try {
      sock.close();
    } catch { /* already closed */ }
  }
};

function transcriptOf(sock: DtlsSocketLike, isClient: boolean): TranscriptMessage[] {
  // Same order werift hashes in: by flight, then message_seq (stable).
  const entries = Object.values(sock.dtls.handshakeCache).sort((a, b) => a.flight - b.flight);
  const out: TranscriptMessage[] = [];
  for (const e of entries) {
    const msgs = [...e.data].sort((a, b) => a.message_seq - b.message_seq);
    for (const m of msgs) {
      const fromPeer = isClient ? e.flight === 4 : (e.flight === 5 || m.msg_type === 1);
      out.push({ type: m.msg_type, seq: m.message_seq, body: new Uint8Array(m.fragment), fromPeer });
    }
  }
  return out;
}

function installSocketHooks(sock: DtlsSocketLike) {
  const isClient = (sock as object) instanceof DtlsClient;
  let peerFinished: Uint8Array | undefined;
  let peerAnswered = false;

  // (b)+(capture): wrap the handshake dispatcher the subclass constructor assigns after us.
  let inner: ((h: HandshakeLike[]) => Promise<void>) | undefined;
  let stashedCv: HandshakeLike | undefined;
  const wrapped = (assembled: HandshakeLike[]) => {
    peerAnswered = true;
    let list = assembled;
    if (isClient && sock.dtls.flight >= 3) list = list.filter((h) => h.msg_type !== 3);
    // (e) retransmitted key exchange messages: werift re-runs their handlers, which regenerates our
    // ECDH key (client, dup ServerKeyExchange) or re-derives the extended master secret over a
    // transcript that by then also holds CertificateVerify/Finished (server, dup ClientKeyExchange)
    // -> corrupted session. A message type already in the transcript of that flight is ignored.
    const dupType = isClient ? 12 : 16;
    const dupFlight = isClient ? 4 : 5;
    if (sock.dtls.handshakeCache[dupFlight]?.data.some((h) => h.msg_type === dupType)) {
      list = list.filter((h) => h.msg_type !== dupType);
    }
    if (!isClient) {
      // (d) CertificateVerify before Certificate (reordered datagrams): hold it back.
      const hasCert = list.some((h) => h.msg_type === 11) ||
        (sock.dtls.handshakeCache[5]?.data.some((h) => h.msg_type === 11) ?? false);
      if (!hasCert && list.some((h) => h.msg_type === 15)) {
        stashedCv = list.find((h) => h.msg_type === 15);
        list = list.filter((h) => h.msg_type !== 15);
      } else if (hasCert && stashedCv && !list.some((h) => h.msg_type === 15)) {
        const i = list.findIndex((h) => h.msg_type === 11);
        list = i >= 0 ? [...list.slice(0, i + 1), stashedCv, ...list.slice(i + 1)] : [stashedCv, ...list];
        stashedCv = undefined;
      }
    }
    for (const h of list) {
      if (h.msg_type === 1) peerFinished = undefined; // (re)negotiation restarts
      if (h.msg_type === 20) peerFinished = new Uint8Array(h.fragment);
    }
    return inner ? inner(list) : Promise.resolve();
  };
  Object.defineProperty(sock, "onHandleHandshakes", {
    configurable: true,
    enumerable: true,
    get: () => wrapped,
    set: (v) => {
      inner = v;
    },
  });

  // (c) guard before "connected"
  const origExecute = sock.onConnect.execute;
  sock.onConnect.execute = (...args: unknown[]) => {
    const evidence: PeerHandshakeEvidence = {
      role: isClient ? "client" : "server",
      transcript: transcriptOf(sock, isClient),
      peerFinished,
      masterSecret: sock.cipher.masterSecret,
      remoteCertificate: sock.cipher.remoteCertificate,
      remoteEcdhPublicKey: sock.cipher.remoteKeyPair?.publicKey,
    };
    guardTesting.mutateEvidence?.(evidence);
    const res = verifyPeerHandshake(evidence);
    if (res.ok) {
      guardInfo.set(sock, { verified: true });
      origExecute(...args);
    } else if (!guardTesting.enforce) {
      guardInfo.set(sock, { verified: false, failure: res.reason });
      origExecute(...args);
    } else {
      fail(sock, `${res.reason} (local DTLS role: ${isClient ? "client" : "server"})`);
    }
  };

  // (g) from now on this ICE connection has a DTLS listener: stop buffering early records.
  const ice = sock.transport.socket.ice;
  const early = ice ? earlyDtlsOf(ice) : undefined;
  if (early) early.attached = true;

  // (f) inbound record filter + "peer answered" tracking. The subclass constructor has set
  // transport.socket.onData (= werift's udpOnMessage) by the time the microtask runs; RTCDtlsTransport
  // has subscribed to onConnect/onError too, so the replayed records (g) may complete the handshake.
  queueMicrotask(() => {
    const origOnData = sock.transport.socket.onData;
    const onData = (d: Uint8Array) => {
      peerAnswered = true;
      const kept = filterRecords(d, sock.connected);
      if (kept) origOnData(kept);
    };
    sock.transport.socket.onData = onData;
    for (const d of early?.queue.splice(0) ?? []) {
      if (!mediaTuning.replayEarlyDtls) continue;
      early!.replayed++;
      onData(d);
    }
  });

  // (a) early ClientHello
  if (isClient && mediaTuning.earlyClientHello) {
    const origConnect = DtlsClient.prototype.connect;
    let started: Promise<void> | undefined;
    sock.connect = () => (started ??= origConnect.call(sock as unknown as InstanceType<typeof DtlsClient>));
    let firstHello: Uint8Array | undefined;
    const origSend = sock.transport.send;
    sock.transport.send = (buf, addr) => {
      if (!firstHello && sock.dtls.flight === 1) firstHello = buf;
      return origSend(buf, addr);
    };
    queueMicrotask(() => {
      sock.connect!().catch(() => {/* werift's own caller reports it */});
      let elapsed = 0;
      for (const at of mediaTuning.clientHelloResendMs) {
        setTimeout(() => {
          if (!peerAnswered && sock.dtls.flight === 1 && firstHello) {
            try {
              Promise.resolve(origSend(firstHello)).catch(() => {});
            } catch { /* closed */ }
          }
        }, elapsed + at);
        elapsed += at;
      }
    });
  }
}

/**
 * werift closes the DTLS transport on any plaintext warning alert and on any record with an unknown
 * content type, from any source address (it also reads the alert level/description from the
 * *ciphertext* of an encrypted alert). After the handshake, legitimate peers only send encrypted
 * records; once connected we drop alert records and every epoch-0 record (plaintext), and always
 * drop unknown content types. Epoch-0 handshake records after the handshake would otherwise let
 * anyone trigger werift's server-side "renegotiation" (a plaintext ClientHello resets the DTLS
 * context); a retransmitted client flight 5 still gets our flight 6 re-sent because its Finished is
 * epoch 1. Cost: a peer's close_notify is ignored; calls end via signalling / ICE consent anyway.
 * Returns the datagram with the remaining records, or undefined when nothing is left.
 */
export function filterRecords(d: Uint8Array, connected: boolean): Uint8Array | undefined {
  const keep: Uint8Array[] = [];
  let changed = false;
  let off = 0;
  while (off + 13 <= d.length) {
    const type = d[off]!;
    const epoch = (d[off + 3]! << 8) | d[off + 4]!;
    const len = (d[off + 11]! << 8) | d[off + 12]!;
    const end = off + 13 + len;
    if (end > d.length) break;
    const rec = d.subarray(off, end);
    const known = type >= 20 && type <= 23;
    const drop = !known || (connected && (type === 21 || epoch === 0));
    if (drop) changed = true;
    else keep.push(rec);
    off = end;
  }
  if (off !== d.length) changed = true; // trailing garbage
  if (!changed) return d;
  if (keep.length === 0) return undefined;
  const out = new Uint8Array(keep.reduce((n, r) => n + r.length, 0));
  let o = 0;
  for (const r of keep) {
    out.set(r, o);
    o += r.length;
  }
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** An ICE transport address as werift passes it around: [host, port]. */
export type IceAddress = readonly [string, number];

/** What `fromValidatedPair` needs of a werift ICE `Connection` and its candidate pairs. */
export interface IcePairsLike {
  nominated?: { protocol: unknown; remoteAddr: IceAddress };
  checkList: readonly {
    protocol: unknown;
    remoteAddr: IceAddress;
    state: number;
    remoteCandidate?: { type?: string };
  }[];
}

/**
 * True when `addr`, received on `protocol`, is the remote address of the nominated pair or of a
 * succeeded pair (RFC 8445 "valid list") on that same protocol. A pair only succeeds after the
 * peer answered our check with a MESSAGE-INTEGRITY made from its ICE password, so this is the set
 * of addresses proven to belong to the peer; a later pair switch lands on such a pair too.
 * werift does not authenticate incoming binding requests, so "sent us a check" is not enough.
 */
export function fromValidatedPair(conn: IcePairsLike, protocol: unknown, addr: IceAddress): boolean {
  const same = (p: { protocol: unknown; remoteAddr: IceAddress }) =>
    p.protocol === protocol && p.remoteAddr[0] === addr[0] && p.remoteAddr[1] === addr[1];
  if (conn.nominated && same(conn.nominated)) return true;
  return conn.checkList.some((p) => p.state === CandidatePairState.SUCCEEDED && same(p));
}

const foreignDrops = new WeakMap<object, { count: number }>();

/**
 * DTLS records that reached an ICE connection (from a validated pair) before werift created the DTLS
 * socket that listens on it (seam 2g/5). werift only starts DTLS once its own ICE `connect()` has
 * returned; a peer whose ICE finished first (aiortc/OpenSSL as DTLS client) sends its ClientHello into
 * the void and retransmits it only after OpenSSL's 1 s timer. We keep them and replay them into the
 * DTLS socket as soon as it exists.
 */
interface EarlyDtls {
  /** a werift DTLS socket listens on this connection: nothing is buffered any more */
  attached: boolean;
  queue: Uint8Array[];
  replayed: number;
  /** dropped because the buffer was full */
  overflow: number;
  /** ClientHello records without a cookie (a DTLS client's first flight, RFC 6347 §4.2.1) received */
  initialClientHellos: number;
}
/** Bound of the early-record buffer (a whole client flight is 1–5 records; more is not a handshake). */
export const EARLY_DTLS_RECORDS_MAX = 32;
const earlyDtls = new WeakMap<object, EarlyDtls>();
function earlyDtlsOf(conn: object): EarlyDtls {
  let e = earlyDtls.get(conn);
  if (!e) {
    earlyDtls.set(conn, e = { attached: false, queue: [], replayed: 0, overflow: 0, initialClientHellos: 0 });
  }
  return e;
}

/** werift's test for "this datagram is DTLS" (RFC 7983 demultiplexing: first byte 20..63). */
const isDtlsDatagram = (d: Uint8Array) => d.length > 0 && d[0]! >= 20 && d[0]! <= 63;

/**
 * Number of ClientHello handshake records with an empty cookie in one datagram: a DTLS client's flight 1
 * (its cookie-bearing repeat after a HelloVerifyRequest is not counted). Each retransmission of
 * flight 1 counts again, so 1 per handshake means the peer never had to retransmit it.
 */
export function countInitialClientHellos(d: Uint8Array): number {
  let n = 0;
  let off = 0;
  while (off + 13 <= d.length) {
    const type = d[off]!;
    const epoch = (d[off + 3]! << 8) | d[off + 4]!;
    const len = (d[off + 11]! << 8) | d[off + 12]!;
    const body = off + 13;
    const end = body + len;
    if (end > d.length) break;
    // handshake header (12) + client_version (2) + random (32) + session_id <1> + cookie <1>
    if (type === 22 && epoch === 0 && len >= 12 + 35 && d[body] === 1) {
      const fragOffset = (d[body + 6]! << 16) | (d[body + 7]! << 8) | d[body + 8]!;
      const sidAt = body + 12 + 34;
      const cookieAt = sidAt + 1 + d[sidAt]!;
      if (fragOffset === 0 && cookieAt < end && d[cookieAt] === 0) n++;
    }
    off = end;
  }
  return n;
}

/** Seam 5 / 2g: a datagram from a validated pair that looks like DTLS. Counted, and kept while no
 * DTLS socket listens on the connection (werift drops it then). */
function noteDtlsDatagram(conn: object, data: Uint8Array): void {
  const e = earlyDtlsOf(conn);
  e.initialClientHellos += countInitialClientHellos(data);
  if (e.attached) return;
  if (e.queue.length >= EARLY_DTLS_RECORDS_MAX) {
    e.overflow++;
    return;
  }
  e.queue.push(Buffer.from(data)); // a copy: the runtime may reuse its receive buffer
}
/** werift protocol methods that receive one datagram/frame together with its source address. */
const RECEIVE_METHODS = ["datagramReceived", "handleStunMessage", "handleFrame"] as const;

/** Wraps the receive method of one werift ICE protocol with the source-address filter (seam 5). */
function filterBySource(conn: IcePairsLike, protocol: Record<string, unknown>): void {
  let counter = foreignDrops.get(conn);
  if (!counter) foreignDrops.set(conn, counter = { count: 0 });
  const drops = counter;
  const name = RECEIVE_METHODS.find((m) => typeof protocol[m] === "function");
  if (!name) {
    // Unknown protocol kind (werift changed): fail closed, its data never reaches DTLS/SRTP.
    const ev = protocol.onDataReceived as { execute?: (...a: unknown[]) => void } | undefined;
    if (ev?.execute) ev.execute = () => void drops.count++;
    return;
  }
  const inner = (protocol[name] as (d: Buffer, a: IceAddress) => unknown).bind(protocol);
  const receive = (data: Buffer, addr: IceAddress): unknown => {
    // werift's own rule: whatever parses as STUN is STUN, everything else is application data.
    if (!parseMessage(data)) {
      if (!fromValidatedPair(conn, protocol, addr)) {
        if (!holdUntilValidated(conn, protocol, addr, () => receive(data, addr))) drops.count++;
        return;
      }
      if (isDtlsDatagram(data)) noteDtlsDatagram(conn, data);
    }
    return inner(data, addr);
  };
  protocol[name] = receive;
}

/** A datagram from the address of a candidate pair whose check is still running (see holdUntilValidated). */
interface HeldDatagram {
  protocol: unknown;
  addr: IceAddress;
  /** runs it through the source filter again */
  redeliver: () => void;
}
const heldDatagrams = new WeakMap<object, HeldDatagram[]>();
/** Bound of the held datagrams per connection (a client's first DTLS flight is one to a few datagrams). */
export const HELD_DATAGRAMS_MAX = 32;

/** The candidate pair of `protocol` towards `addr`, if there is one. */
function pairTo(conn: IcePairsLike, protocol: unknown, addr: IceAddress) {
  return conn.checkList.find((p) =>
    p.protocol === protocol && p.remoteAddr[0] === addr[0] && p.remoteAddr[1] === addr[1]
  );
}

/**
 * With aggressive nomination (werift as controlling agent puts USE-CANDIDATE in every check) the two sides
 * may settle on different pairs: the controlled side nominates the first pair whose checks both ways
 * succeeded on its side and starts DTLS on it at once, while our check of that very pair is still waiting
 * for its response (seen with one IPv4 and one IPv6 pair: the peer's ClientHello on IPv4 arrived while our
 * IPv4 check was in progress and we had nominated IPv6). Dropping it costs the peer a retransmission. A
 * datagram from the remote address of a pair of ours that is still frozen, waiting or in progress is held
 * instead (at most HELD_DATAGRAMS_MAX per connection) and passed through the filter again whenever a check
 * completes: delivered once that pair has succeeded, dropped and counted once it has failed. Nothing from an
 * address outside the check list, or of a peer-reflexive pair, is held. Returns false when the datagram is not
 * held (the caller drops it).
 */
export function holdUntilValidated(
  conn: IcePairsLike,
  protocol: unknown,
  addr: IceAddress,
  redeliver: () => void,
): boolean {
  const pair = pairTo(conn, protocol, addr);
  if (!pair || pair.state === CandidatePairState.SUCCEEDED || pair.state === CandidatePairState.FAILED) {
    return false;
  }
  // A peer-reflexive pair exists because someone sent us a check from there (werift does not check its
  // integrity): only signalled candidates count.
  if (pair.remoteCandidate?.type === "prflx") return false;
  let held = heldDatagrams.get(conn);
  if (!held) heldDatagrams.set(conn, held = []);
  if (held.length >= HELD_DATAGRAMS_MAX) return false;
  held.push({ protocol, addr, redeliver });
  return true;
}

/** Seam 6 calls this after every completed check: held datagrams whose pair is decided go on. */
export function releaseHeld(conn: IcePairsLike): void {
  const held = heldDatagrams.get(conn);
  if (!held?.length) return;
  const keep: HeldDatagram[] = [];
  const go: HeldDatagram[] = [];
  for (const h of held) {
    const pair = pairTo(conn, h.protocol, h.addr);
    const pending = pair !== undefined && pair.state !== CandidatePairState.SUCCEEDED &&
      pair.state !== CandidatePairState.FAILED && !fromValidatedPair(conn, h.protocol, h.addr);
    (pending ? keep : go).push(h);
  }
  heldDatagrams.set(conn, keep);
  // through the filter again: delivered if validated now, otherwise dropped and counted
  for (const h of go) h.redeliver();
}

let patched = false;
function installPatches() {
  if (patched) return;
  patched = true;

  // 1. no default STUN server
  type ConnProto = { applyStunTurnServersFromOptions(): void };
  const cp = Connection.prototype as unknown as ConnProto;
  const origApply = cp.applyStunTurnServersFromOptions;
  if (typeof origApply !== "function") {
    throw new Error("werift seam changed: applyStunTurnServersFromOptions");
  }
  cp.applyStunTurnServersFromOptions = function (
    this: { options: { stunServer?: unknown }; stunServer?: unknown },
  ) {
    origApply.call(this);
    if (!this.options.stunServer) this.stunServer = undefined;
  };

  // 2. per-DTLS-socket hooks
  type SockProto = { setupExtensions(): void };
  const sp = DtlsSocket.prototype as unknown as SockProto;
  const origSetup = sp.setupExtensions;
  if (typeof origSetup !== "function") throw new Error("werift seam changed: setupExtensions");
  sp.setupExtensions = function (this: DtlsSocketLike) {
    origSetup.call(this);
    if (!guardInfo.has(this)) {
      guardInfo.set(this, { verified: false });
      installSocketHooks(this);
    }
  };

  // 3. count SRTP auth failures; SRTP replay window (RFC 3711 §3.3.2, werift has none)
  type Decryptor = { decrypt: (d: Buffer) => Buffer };
  type TransportProto = { updateSrtpSession(): void; start(): Promise<void> };
  const tp = RTCDtlsTransport.prototype as unknown as TransportProto;
  const origStart = tp.start;
  if (typeof origStart !== "function") throw new Error("werift seam changed: RTCDtlsTransport.start");
  tp.start = async function (this: unknown) {
    const delay = mediaTuning.dtlsStartDelayMs;
    if (delay > 0) await new Promise((r) => setTimeout(r, delay));
    return await origStart.call(this);
  };
  const origUpdate = tp.updateSrtpSession;
  if (typeof origUpdate !== "function") throw new Error("werift seam changed: updateSrtpSession");
  tp.updateSrtpSession = function (this: { srtp: Decryptor; srtcp: Decryptor }) {
    origUpdate.call(this);
    let c = srtpFailures.get(this);
    if (!c) srtpFailures.set(this, c = { count: 0, replays: 0 });
    const counter = c;
    const replay = new ReplayWindow();
    for (const [s, isRtp] of [[this.srtp, true], [this.srtcp, false]] as const) {
      const dec = s.decrypt.bind(s);
      s.decrypt = (d: Buffer) => {
        let out: Buffer;
        try {
          out = dec(d);
        } catch (e) {
          if (e instanceof SrtpAuthenticationError) counter.count++;
          throw e;
        }
        // authenticated; now reject replays (header fields are covered by the auth tag)
        if (isRtp && d.length >= 12 && !replay.accept(d.readUInt32BE(8), d.readUInt16BE(2))) {
          counter.replays++;
          // werift's receive path drops SrtpAuthenticationError silently
          throw new SrtpAuthenticationError("SRTP replay");
        }
        return out;
      };
    }
  };

  // 4. in-order UDP sends on Deno
  type UdpProto = { init(): Promise<void> };
  const up = UdpTransport.prototype as unknown as UdpProto;
  const origInit = up.init;
  if (typeof origInit !== "function") throw new Error("werift seam changed: UdpTransport.init");
  up.init = async function (this: { socket: unknown }) {
    await origInit.call(this);
    orderedSends(this.socket as DgramLike);
  };

  // 5. DTLS/SRTP only from the address of a validated ICE pair
  type EnsureProto = { ensureProtocol(p: unknown): void };
  const ep = Connection.prototype as unknown as EnsureProto;
  const origEnsure = ep.ensureProtocol;
  if (typeof origEnsure !== "function") throw new Error("werift seam changed: ensureProtocol");
  if (typeof (StunProtocol.prototype as unknown as Record<string, unknown>).datagramReceived !== "function") {
    throw new Error("werift seam changed: StunProtocol.datagramReceived");
  }
  ep.ensureProtocol = function (this: IcePairsLike, protocol: unknown) {
    filterBySource(this, protocol as Record<string, unknown>);
    origEnsure.call(this, protocol);
  };

  // 6. ICE completion noticed when it happens, not at the next 20 ms check-pacing tick
  installIceCompletionSeam();

  // 7. native X25519 for the DTLS key exchange
  nativeX25519 = installNativeX25519();

  // 8. DTLS signatures with a parsed key, not a PEM string parsed again for every signature
  type CipherProto = {
    signatureData(data: Uint8Array, hash: string): Buffer;
    generateKeySignature(hash: string): Buffer;
    valueKeySignature(cr: Buffer, sr: Buffer, pub: Uint8Array, curve: number): Buffer;
  };
  const cip = CipherContext.prototype as unknown as CipherProto;
  const { signatureData, generateKeySignature, valueKeySignature } = cip;
  for (const [n, f] of Object.entries({ signatureData, generateKeySignature, valueKeySignature })) {
    if (typeof f !== "function") throw new Error(`werift seam changed: CipherContext.${n}`);
  }
  cip.signatureData = function (this: CipherWithKey, data: Uint8Array, hash: string) {
    return cryptoSign(hash, data, privateKeyObject(this.localPrivateKey));
  };
  cip.generateKeySignature = function (this: CipherWithKey & CipherProto, hash: string) {
    const client = this.sessionType === CLIENT_SESSION ? this.localRandom : this.remoteRandom;
    const server = this.sessionType === CLIENT_SESSION ? this.remoteRandom : this.localRandom;
    const signed = this.valueKeySignature(
      client.serialize(),
      server.serialize(),
      this.localKeyPair.publicKey,
      this.namedCurve,
    );
    return cryptoSign(hash, signed, privateKeyObject(this.localPrivateKey));
  };
}

/** werift's `SessionType.CLIENT` (1; SERVER is 2). */
const CLIENT_SESSION = 1;
/** What seam 8 uses of a werift `CipherContext`. */
interface CipherWithKey {
  sessionType: number;
  localRandom: { serialize(): Buffer };
  remoteRandom: { serialize(): Buffer };
  localKeyPair: { publicKey: Uint8Array };
  namedCurve: number;
  /** @fidm/x509 PrivateKey */
  localPrivateKey: { toDER(): Buffer };
}
/** Parsed signing keys by the SHA-256 of their PKCS#8 DER (werift parses the key again for every DTLS
 * socket, each signs once: the gain is across sockets). One per certificate in use, a handful per process. */
const signingKeys = new Map<string, KeyObject>();
function privateKeyObject(k: { toDER(): Buffer }): KeyObject {
  const der = Buffer.from(k.toDER());
  const id = createHash("sha256").update(der).digest("base64");
  let key = signingKeys.get(id);
  if (!key) {
    key = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    if (signingKeys.size >= 64) signingKeys.delete(signingKeys.keys().next().value!);
    signingKeys.set(id, key);
  }
  return key;
}

/** Whether seam 7 is active (werift's tweetnacl found and replaced); see installNativeX25519. */
export let nativeX25519 = false;

const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

/**
 * 7. werift's DTLS does its ECDHE in pure JavaScript: X25519 (the curve every client offers first: werift,
 * OpenSSL, libwebrtc) with tweetnacl, ~1.4 ms per key pair and ~1.2 ms per shared secret on Deno, on the
 * critical path of both handshake sides. werift calls `nacl.box.keyPair()` and `nacl.scalarMult()` through
 * the tweetnacl module object it imports; we replace those two functions on that same object (reached with
 * `require` from werift's own location, so it is werift's pinned copy, no new dependency) with
 * node:crypto's native X25519 (~0.1 + 0.2 ms). Same results (RFC 7748, clamping included), except that a
 * low-order peer key, whose shared secret is all zeros, now throws and so fails the handshake as
 * RFC 7748 §6.1 recommends instead of yielding a known key. When tweetnacl cannot be found (werift changed
 * its dependencies) nothing is patched and werift stays correct, only slower.
 */
function installNativeX25519(): boolean {
  let nacl: {
    box: { keyPair: () => { publicKey: Uint8Array; secretKey: Uint8Array } };
    scalarMult: (n: Uint8Array, p: Uint8Array) => Uint8Array;
  };
  try {
    nacl = createRequire(import.meta.resolve("werift"))("tweetnacl");
  } catch {
    return false;
  }
  if (typeof nacl?.box?.keyPair !== "function" || typeof nacl.scalarMult !== "function") return false;
  // werift wraps the results with `Buffer.from(x.buffer)`: each array must own exactly its 32 bytes.
  const own = (b: Uint8Array) => new Uint8Array(b.subarray(b.length - 32));
  const scalarMultBase = nacl.scalarMult;
  const patchedScalarMult = (n: Uint8Array, p: Uint8Array): Uint8Array => {
    if (n?.length !== 32 || p?.length !== 32) return scalarMultBase(n, p); // tweetnacl throws its own error
    const privateKey = createPrivateKey({
      key: Buffer.concat([X25519_PKCS8_PREFIX, n]),
      format: "der",
      type: "pkcs8",
    });
    const publicKey = createPublicKey({
      key: Buffer.concat([X25519_SPKI_PREFIX, p]),
      format: "der",
      type: "spki",
    });
    return own(diffieHellman({ privateKey, publicKey }));
  };
  Object.assign(patchedScalarMult, scalarMultBase); // keeps scalarMult.base and the length constants
  nacl.scalarMult = patchedScalarMult;
  const keyPair = () => {
    const k = generateKeyPairSync("x25519");
    return {
      secretKey: own(k.privateKey.export({ format: "der", type: "pkcs8" })),
      publicKey: own(k.publicKey.export({ format: "der", type: "spki" })),
    };
  };
  Object.assign(keyPair, nacl.box.keyPair);
  nacl.box.keyPair = keyPair;
  return true;
}

/** What seam 6 uses of a werift ICE `Connection`. */
interface IceConnectionLike {
  iceLite: boolean;
  checkListDone: boolean;
  nominated?: unknown;
  state: string;
  queryConsent: () => void;
  stopConsentLifecycle(): void;
  setState(state: string): void;
}

/** Seam 6: resolves the running `connect()` of a connection early (see installIceCompletionSeam). */
const iceCompleted = new WeakMap<object, () => void>();
/** Connections whose close() was called: nothing may bring them back to life. */
const closedIce = new WeakSet<object>();

/**
 * 6. werift's `Connection.connect()` paces its checks in a loop that sleeps 20 ms (Ta) per round and only
 * looks at the check list again after the sleep: a pair that succeeds and is nominated 1 ms into a round
 * is reported ~19 ms later, and DTLS cannot start before. (aioice has the same loop.) We let `connect()`
 * return as soon as `checkComplete()` has a nominated pair and the check list is done, and report the
 * state "connected" then (RTCIceTransport ignores the repeat the original loop sends later). The original
 * `connect()` keeps running to its end; if the connection is closed before it gets there, its late
 * `setState("connected")` and consent checks are suppressed (werift would revive a closed connection).
 */
function installIceCompletionSeam(): void {
  type Proto = {
    connect(): Promise<void>;
    checkComplete(pair: unknown): void;
    close(): Promise<void>;
    setState(state: string): void;
  };
  const cp = Connection.prototype as unknown as Proto;
  const { connect, checkComplete, close, setState } = cp;
  for (const [n, f] of Object.entries({ connect, checkComplete, close, setState })) {
    if (typeof f !== "function") throw new Error(`werift seam changed: Connection.${n}`);
  }
  cp.checkComplete = function (this: IceConnectionLike & IcePairsLike, pair: unknown) {
    checkComplete.call(this, pair);
    if (this.checkListDone && this.nominated) iceCompleted.get(this)?.();
    releaseHeld(this);
  };
  cp.close = function (this: IceConnectionLike) {
    closedIce.add(this);
    heldDatagrams.delete(this);
    return close.call(this);
  };
  cp.setState = function (this: IceConnectionLike, state: string) {
    if (closedIce.has(this) && state !== "closed") return;
    setState.call(this, state);
  };
  cp.connect = function (this: IceConnectionLike) {
    const full = connect.call(this);
    if (this.iceLite || !mediaTuning.earlyIceCompletion) return full;
    if (!Object.hasOwn(this, "queryConsent") || typeof this.queryConsent !== "function") return full;
    const consent = this.queryConsent;
    this.queryConsent = () => {
      if (!closedIce.has(this)) consent();
    };
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err?: unknown) => {
        if (settled) return;
        settled = true;
        iceCompleted.delete(this);
        if (err === undefined) resolve();
        else reject(err);
      };
      const completed = () => {
        if (closedIce.has(this) || this.state === "closed") return;
        // what the original does after its loop, minus cancelling checks still in flight (it does that)
        this.queryConsent();
        this.setState("connected");
        settle();
      };
      iceCompleted.set(this, completed);
      full.then(() => settle(), (e) => settle(e ?? new Error("ICE negotiation failed")));
      // the early checks the original handled before its first await may have completed it already
      if (this.checkListDone && this.nominated) completed();
    });
  };
}

interface DgramLike {
  send: (...args: unknown[]) => void;
}
/** Make `socket.send` FIFO: each datagram is handed to the runtime after the previous one completed. */
export function orderedSends(sock: DgramLike): void {
  const orig = sock.send.bind(sock);
  let tail: Promise<void> = Promise.resolve();
  sock.send = (...args: unknown[]) => {
    const cb = typeof args[args.length - 1] === "function"
      ? args.pop() as (err: unknown, n?: number) => void
      : undefined;
    tail = tail.then(() =>
      new Promise<void>((done) => {
        try {
          orig(...args, (err: unknown, n?: number) => {
            done();
            cb?.(err, n);
          });
        } catch (err) {
          done();
          if (cb) cb(err);
        }
      })
    );
  };
}
installPatches();

// ---------------------------------------------------------------- certificates

/** Create a fresh self-signed DTLS certificate (ECDSA P-256 or RSA-2048, SHA-256). */
export async function createDtlsCertificate(signature: "ecdsa" | "rsa" = "ecdsa"): Promise<DtlsCertificate> {
  const { createSelfSignedCertificate } = await import("werift");
  const r = await createSelfSignedCertificate(
    { hash: 4, signature: signature === "ecdsa" ? 3 : 1 },
    23,
  );
  return { certPem: r.certPem, keyPem: r.keyPem, signature };
}

/**
 * The sha-256 fingerprint (uppercase colon hex) that a peer created with the same `certificate` option will present,
 * known before any peer exists (default: the process-wide certificate every default peer uses). A caller can
 * OMEMO-encrypt it for the callee while its propose is still on the way.
 */
export async function localDtlsFingerprint(certificate?: DtlsCertificate): Promise<string> {
  return certificateFingerprint(
    certificate ? toWeriftCert(certificate) : await RTCDtlsTransport.SetupCertificate(),
  );
}

const fingerprints = new WeakMap<RTCCertificate, string>();

/** Sha-256 fingerprint (uppercase colon hex) of a werift certificate, computed once (werift parses the PEM on
 * every getFingerprints(), and a call asks for it several times). */
function certificateFingerprint(cert: RTCCertificate): string {
  let fp = fingerprints.get(cert);
  if (fp === undefined) fingerprints.set(cert, fp = cert.getFingerprints()[0]!.value.toUpperCase());
  return fp;
}

function toWeriftCert(c: DtlsCertificate): RTCCertificate {
  return new RTCCertificate(c.keyPem, c.certPem, { hash: 4, signature: c.signature === "ecdsa" ? 3 : 1 });
}

// ---------------------------------------------------------------- adapter

type WeriftDtls = InstanceType<typeof RTCDtlsTransport>;

function mapIce(s: string): TransportState {
  switch (s) {
    case "new":
      return "new";
    case "checking":
    case "disconnected":
      return "checking";
    case "connected":
    case "completed":
      return "connected";
    case "failed":
      return "failed";
    default:
      return "closed";
  }
}
function mapDtls(s: string): TransportState {
  switch (s) {
    case "new":
      return "new";
    case "connecting":
      return "checking";
    case "connected":
      return "connected";
    case "failed":
      return "failed";
    default:
      return "closed";
  }
}

/** The werift DTLS socket of a transport (key of the guard's verdict), once its handshake started. */
const dtlsSocketOf = (t: WeriftDtls | undefined): DtlsSocketLike | undefined =>
  (t as unknown as { dtls?: DtlsSocketLike } | undefined)?.dtls;

/** May `t` carry media: connected, and our guard verified the peer on its DTLS socket (seam 2c). */
function transportAuthenticated(t: WeriftDtls | undefined): boolean {
  const s = dtlsSocketOf(t);
  return t?.state === "connected" && !!s && guardInfo.get(s)?.verified === true;
}

/**
 * State of one DTLS transport as the peer reports it: werift's, except that "connected" needs the guard's verdict
 * too. werift cannot get there without it while the guard is enforced (the guard holds back `onConnect`), so this
 * only fails closed should werift change; with `guardTesting.enforce` off werift's own verdict shows (a test
 * documents that werift alone accepts an impostor), while media stays gated by {@link transportAuthenticated}.
 */
function transportStateOf(t: WeriftDtls): TransportState {
  const s = mapDtls(t.state);
  return s === "connected" && guardTesting.enforce && !transportAuthenticated(t) ? "checking" : s;
}

/**
 * The peer-level DTLS state over the states of the current transports (see {@link StateChange.dtls}): "failed" if
 * any failed, "connected" when all are, "new" when none started, "checking" otherwise. A closed transport among
 * live ones counts as done, as in werift's ICE aggregate; all closed is "closed", none at all "new".
 */
export function aggregateDtlsState(states: readonly TransportState[]): TransportState {
  if (states.includes("failed")) return "failed";
  if (states.length === 0) return "new";
  if (states.every((s) => s === "closed")) return "closed";
  if (states.every((s) => s === "new" || s === "closed")) return "new";
  if (states.every((s) => s === "connected" || s === "closed")) return "connected";
  return "checking";
}

/** The werift ICE connection under a DTLS transport (key of the foreign-source drop counter). */
const iceConnection = (t: WeriftDtls | undefined): object | undefined =>
  (t as unknown as { iceTransport?: { connection?: object } } | undefined)?.iceTransport?.connection;

const emptyCounters = (): TrackCounters => ({
  packetsSent: 0,
  bytesSent: 0,
  packetsReceived: 0,
  bytesReceived: 0,
});

/**
 * The codecs we offer, werift's defaults (payload types included) but named the way Conversations and Dino
 * (libwebrtc) write them: werift says `OPUS`, they say `opus`. SDP encoding names are case-insensitive
 * (RFC 4855 §3) and werift matches them so, but real clients compare some of them exactly. In an answer
 * werift repeats the offerer's spelling. VP8/PCMU are spelt as Conversations writes them already
 * (werift's `useH264` says `H264` too, should it ever be offered).
 */
export function offeredCodecs(): { audio: ReturnType<typeof useOPUS>[]; video: ReturnType<typeof useVP8>[] } {
  return { audio: [useOPUS({ mimeType: "audio/opus" }), usePCMU()], video: [useVP8()] };
}

/** Creates a peer connection with no STUN/TURN unless configured, the werift seams of this module installed and the DTLS peer authenticated before "connected". */
export async function createPeer(opts: PeerOptions): Promise<Peer> {
  const log: PeerLogger = opts.logger ?? (() => {});
  const cert = opts.certificate ? toWeriftCert(opts.certificate) : await RTCDtlsTransport.SetupCertificate();
  const pc = new RTCPeerConnection(
    {
      iceServers: (opts.iceServers ?? []).map((s) => ({ ...s })),
      certificates: [cert],
      codecs: offeredCodecs(),
      bundlePolicy: opts.bundle === false ? "disable" : "max-bundle",
      iceUseIpv6: opts.ipv6 ?? true,
    } as ConstructorParameters<typeof RTCPeerConnection>[0],
  );

  const transceivers = new Map<MediaKind, ReturnType<RTCPeerConnection["addTransceiver"]>>();
  /** Which media we send/receive; grows on renegotiation (see enableMedia). */
  const wanted: Record<MediaKind, boolean> = { audio: opts.audio, video: opts.video };
  if (opts.role === "initiator") {
    if (opts.audio) transceivers.set("audio", pc.addTransceiver("audio", { direction: "sendrecv" }));
    if (opts.video) transceivers.set("video", pc.addTransceiver("video", { direction: "sendrecv" }));
  }

  const counters: Record<MediaKind, TrackCounters> = { audio: emptyCounters(), video: emptyCounters() };
  let ice: TransportState = "new";
  /** a DTLS transport failed: the call's media is compromised or gone, whatever the others do */
  let dtlsFailed = false;
  let reason: string | undefined;
  let closed = false;
  const stateCbs = new Set<(s: StateChange) => void>();
  const rtpCbs = new Set<(e: RtpEvent) => void>();
  const candCbs = new Set<(c: LocalCandidate | null) => void>();
  /** every DTLS transport the peer ever had (stats of removed contents are kept) */
  const watched = new Set<WeriftDtls>();

  /** The transports of the live m-lines (werift: of the transceivers not stopped), but not of an m-line left
   * inactive (a refused content-add keeps its transceiver: its transport never starts); one with BUNDLE. */
  const currentTransports = (): WeriftDtls[] => {
    const used = new Set<WeriftDtls>();
    for (const t of pc.getTransceivers()) {
      if (!t.stopped && t.direction !== "inactive" && t.dtlsTransport) used.add(t.dtlsTransport);
    }
    return pc.dtlsTransports.filter((t) => used.has(t));
  };
  const dtlsState = (): TransportState => {
    if (closed) return "closed";
    if (dtlsFailed) return "failed";
    return aggregateDtlsState(currentTransports().map(transportStateOf));
  };
  const current = (): StateChange => {
    const dtls = dtlsState();
    return reason ? { ice, dtls, reason } : { ice, dtls };
  };
  const emit = () => {
    const s = current();
    for (const cb of stateCbs) cb(s);
  };
  /** The first transport (the first m-line's): what the single-transport accessors report on. */
  const dtlsTransport = (): WeriftDtls | undefined => pc.dtlsTransports[0];
  /** Every current transport is connected with its peer authenticated. */
  const allAuthenticated = () => {
    const live = currentTransports().filter((t) => t.state !== "closed");
    return live.length > 0 && live.every(transportAuthenticated);
  };
  /** Every transport the peer had: for the counters, which must survive a content-remove. */
  const everyTransport = (): WeriftDtls[] => {
    const all = new Set<WeriftDtls>(watched);
    for (const t of currentTransports()) all.add(t);
    // werift keeps the transports of stopped transceivers here (not a public API: optional)
    const manager = (pc as unknown as { secureManager?: { allDtlsTransports?: (WeriftDtls | undefined)[] } })
      .secureManager;
    for (const t of manager?.allDtlsTransports ?? []) if (t) all.add(t);
    return [...all];
  };

  const watchTransports = () => {
    for (const t of pc.dtlsTransports) {
      if (watched.has(t)) continue;
      watched.add(t);
      t.onStateChange.subscribe((st: string) => {
        if (closed) return;
        if (mapDtls(st) === "failed") {
          dtlsFailed = true;
          const s = dtlsSocketOf(t);
          const why = (s && guardInfo.get(s)?.failure) ?? "DTLS handshake failed";
          reason ??= why; // the first failing transport's reason is the one reported
          log("warn", "dtls failed", { reason: why });
        }
        emit();
      });
    }
  };

  pc.iceConnectionStateChange.subscribe((st: string) => {
    if (closed) return;
    ice = mapIce(st);
    emit();
  });
  pc.onIceCandidate.subscribe((c) => {
    const out: LocalCandidate | null = c
      ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
      : null;
    for (const cb of candCbs) cb(out);
  });
  pc.onTrack.subscribe((track) => {
    const kind = track.kind as MediaKind;
    // werift adds the track to its transceiver's receiver before announcing it
    const owner = pc.getTransceivers().find((t) => t.receiver.tracks.includes(track));
    if (!owner) log("warn", "a remote track without a transceiver: its RTP is dropped", { kind });
    track.onReceiveRtp.subscribe((rtp) => {
      // Never accept media before the peer is authenticated on the transport of this track's own m-line (without
      // BUNDLE, video has its own transport: the audio transport's state says nothing about it). Looked up per
      // packet: renegotiation may move a transceiver to another transport.
      if (closed || !transportAuthenticated(owner?.dtlsTransport)) return;
      const bytes = new Uint8Array(rtp.serialize());
      counters[kind].packetsReceived++;
      counters[kind].bytesReceived += bytes.length;
      for (const cb of rtpCbs) cb({ kind, packet: bytes });
    });
  });

  const peer: Peer = {
    role: opts.role,
    async createOffer() {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      watchTransports();
      return pc.localDescription!.sdp;
    },
    async createAnswer() {
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      watchTransports();
      return pc.localDescription!.sdp;
    },
    async setRemoteDescription(type, sdp) {
      await pc.setRemoteDescription({ type, sdp });
      watchTransports();
      if (type === "offer") {
        for (const t of pc.getTransceivers()) {
          const kind = t.kind as MediaKind;
          if (wanted[kind]) {
            t.setDirection("sendrecv");
            if (!transceivers.has(kind)) transceivers.set(kind, t);
          } else {
            t.setDirection("inactive");
          }
        }
      }
    },
    async addRemoteCandidate(c) {
      if (!c) return;
      await pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex });
    },
    onLocalCandidate(cb) {
      candCbs.add(cb);
      return () => candCbs.delete(cb);
    },
    onStateChange(cb) {
      stateCbs.add(cb);
      return () => stateCbs.delete(cb);
    },
    onRtp(cb) {
      rtpCbs.add(cb);
      return () => rtpCbs.delete(cb);
    },
    state: current,
    waitConnected(timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const check = (s: StateChange) => {
          if (s.ice === "connected" && s.dtls === "connected" && allAuthenticated()) {
            return done(), resolve(), true;
          }
          if (s.dtls === "failed" || s.ice === "failed" || s.dtls === "closed" || s.ice === "closed") {
            return done(),
              reject(new Error(`connection failed: ice=${s.ice} dtls=${s.dtls} ${s.reason ?? ""}`)),
              true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`connect timeout: ice=${ice} dtls=${dtlsState()}`));
        }, timeoutMs);
        const off = peer.onStateChange((s) => void check(s));
        const done = () => {
          clearTimeout(timer);
          off();
        };
        check(current());
      });
    },
    remoteCertificateFingerprint() {
      const s = dtlsSocketOf(dtlsTransport());
      if (!s || guardInfo.get(s)?.verified !== true || !s.remoteCertificate) return undefined;
      return fingerprintSha256(s.remoteCertificate);
    },
    remoteCertificateFingerprints() {
      const out: string[] = [];
      for (const t of currentTransports()) {
        const cert = transportAuthenticated(t) ? dtlsSocketOf(t)?.remoteCertificate : undefined;
        if (cert) out.push(fingerprintSha256(cert));
      }
      return out;
    },
    dtlsRole() {
      const r = dtlsTransport()?.role;
      return r === "client" || r === "server" ? r : undefined;
    },
    localFingerprint() {
      return certificateFingerprint(cert);
    },
    async sendRtp(kind, packet) {
      const t = transceivers.get(kind);
      // the transport of this kind's m-line (without BUNDLE not the first one) must have authenticated its peer
      if (!t || closed || !transportAuthenticated(t.dtlsTransport)) return false;
      await t.sender.sendRtp(RtpPacket.deSerialize(Buffer.from(packet)));
      counters[kind].packetsSent++;
      counters[kind].bytesSent += packet.length;
      return true;
    },
    enableMedia(kind, addTransceiver) {
      wanted[kind] = true;
      if (!addTransceiver || transceivers.has(kind)) return;
      // Reuse the transceiver of an earlier refused renegotiation (its m-line stays in the SDP) before adding one.
      const idle = pc.getTransceivers().find((t) => t.kind === kind && !t.stopped);
      if (idle) idle.setDirection("sendrecv");
      transceivers.set(kind, idle ?? pc.addTransceiver(kind, { direction: "sendrecv" }));
    },
    disableMedia(kind) {
      wanted[kind] = false;
      transceivers.get(kind)?.setDirection("inactive");
      transceivers.delete(kind);
    },
    stats() {
      const out: PeerStats = {
        audio: { ...counters.audio },
        video: { ...counters.video },
        srtpAuthFailures: 0,
        srtpReplays: 0,
        foreignSourceDrops: 0,
        earlyDtlsRecordsReplayed: 0,
        earlyDtlsRecordsDropped: 0,
        dtlsInitialClientHellos: 0,
      };
      // Each transport and each ICE connection once: with BUNDLE every transceiver shares one.
      const connections = new Set<object>();
      for (const t of everyTransport()) {
        const srtp = srtpFailures.get(t);
        out.srtpAuthFailures += srtp?.count ?? 0;
        out.srtpReplays += srtp?.replays ?? 0;
        const conn = iceConnection(t);
        if (conn) connections.add(conn);
      }
      for (const conn of connections) {
        out.foreignSourceDrops += foreignDrops.get(conn)?.count ?? 0;
        const early = earlyDtls.get(conn);
        out.earlyDtlsRecordsReplayed += early?.replayed ?? 0;
        out.earlyDtlsRecordsDropped += early?.overflow ?? 0;
        out.dtlsInitialClientHellos += early?.initialClientHellos ?? 0;
      }
      return out;
    },
    async close() {
      if (closed) return;
      closed = true;
      ice = "closed";
      try {
        await pc.close();
      } catch (e) {
        log("debug", "close error", { error: String(e) });
      }
      for (const cb of stateCbs) cb(current());
    },
  };
  return peer;
}
