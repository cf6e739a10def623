/**
 * A headless XMPP call bot and media endpoint: OMEMO 0.3 end-to-end encryption on a real XMPP
 * connection, 1:1 audio/video calls the way Conversations and Dino place them (XEP-0353 JMI, Jingle RTP
 * over ICE-UDP with DTLS-SRTP, the DTLS fingerprint verified through OMEMO), JET-OMEMO encrypted Jingle
 * file transfer over IBB and SOCKS5, a werift media plane and ffmpeg media.
 *
 * Layers, from the top (each builds on the ones below):
 * - the apps: {@link startBot} (`deno task bot`), {@link dial} (`deno task call`), {@link sendFile}
 *   (`deno task send-file`), all configured by {@link parseCli};
 * - calls: {@link setupCalls} (signalling, verification, the media plane) and {@link runCall} (what to send,
 *   what to record, the {@link CallRecord});
 * - file transfer: {@link setupFileTransfer} (JET-OMEMO, IBB / SOCKS5 / proxy65, the {@link TransferRecord});
 * - {@link createEndpoint}: one signed-in account with disco/caps, carbons and OMEMO;
 * - the XMPP client ({@link connectXmpp}), OMEMO ({@link OmemoManager}), media ({@link createPeer},
 *   {@link startSource}, {@link startRecorder}) and the pure Jingle codecs ({@link jingle}).
 *
 * @example Send an OMEMO-encrypted message
 * ```ts
 * import { createEndpoint } from "./mod.ts";
 *
 * const bot = await createEndpoint({
 *   jid: "bot@example.org/callbot",
 *   password: Deno.env.get("XMPP_PASSWORD")!,
 *   storeDir: "./omemo-store",
 * });
 * bot.onChat((m) => console.log(`${m.peer}: ${m.body}`));
 * await bot.sendChat("alice@example.org", "hello");
 * ```
 *
 * @example Answer calls, play a tone and record what arrives
 * ```ts
 * import { createEndpoint, runCall, setupCalls } from "./mod.ts";
 *
 * const endpoint = await createEndpoint({
 *   jid: "bot@example.org/callbot",
 *   password: Deno.env.get("XMPP_PASSWORD")!,
 *   storeDir: "./omemo-store",
 * });
 * const calls = await setupCalls(endpoint, { verify: "require" });
 * calls.onIncoming((call) => {
 *   const run = runCall(call, {
 *     play: { audio: { type: "tone", frequency: 440 }, video: { type: "testvideo" } },
 *     recordDir: "./recordings",
 *     logger: endpoint.conn.logger,
 *   });
 *   run.record.then((record) => console.log(JSON.stringify(record)));
 * });
 * ```
 *
 * @example Send a file, JET-OMEMO encrypted
 * ```ts
 * import { createEndpoint, setupFileTransfer } from "./mod.ts";
 *
 * const endpoint = await createEndpoint({
 *   jid: "bot@example.org/files",
 *   password: Deno.env.get("XMPP_PASSWORD")!,
 *   storeDir: "./omemo-store",
 * });
 * const files = await setupFileTransfer(endpoint);
 * const transfer = await files.send("alice@example.org/phone", "./report.pdf");
 * const record = await transfer.done;
 * console.log(record.ok ? `sent at ${record.mbPerSecond} MB/s` : `failed: ${record.ended.reason}`);
 * ```
 *
 * @module
 */

// ---- The apps: bot, dialler, send-file, and their command line --------------------------------------

/**
 * The answering bot of `deno task bot` as a library: allow-list, answer delay, busy beyond `maxCalls`,
 * `--play` or echo, recordings, OMEMO chat commands, file reception; {@link Bot.shutdown} hangs up cleanly.
 */
export { type Bot, type BotOptions, readCa, safeLookup, signIn, startBot } from "./bot/main.ts";
/** The dialler of `deno task call` as a library: one call, for a duration or until the peer hangs up. */
export { dial, type DialOptions, type DialResult } from "./bot/dial.ts";
/** `deno task send-file` as a library: one file to a full JID, waiting for the receiver's confirmation. */
export { progressLine, sendFile, type SendFileOptions } from "./bot/send_file.ts";
/**
 * The command line shared by the bot, the dialler and send-file: one flag table for parsing, validation and
 * `--help` (flags, then `--config` JSON, then `XMPP_JID` / `XMPP_PASSWORD` / `XMPP_SERVER`, then defaults).
 */
export {
  bareJid,
  type CliConfig,
  CliError,
  type CliInputs,
  cliOrExit,
  type FlagDef,
  type FlagKind,
  FLAGS,
  helpText,
  type LogLevel,
  parseCli,
  parsePlay,
  parseServer,
  parseSize,
  type PlaySpec,
  redacted,
  type SourceSpec as PlaySourceSpec,
  stderrLogger,
  type Tool,
} from "./bot/cli.ts";

// ---- Calls -------------------------------------------------------------------------------------------

/**
 * 1:1 audio/video calls: XEP-0353 JMI, XEP-0166/0167 Jingle RTP, XEP-0176 ICE-UDP, XEP-0320 DTLS-SRTP, the
 * OMEMO-verified DTLS fingerprint draft, XEP-0215 STUN/TURN, the video upgrade (content-add).
 */
export {
  type Call,
  CALL_FEATURES,
  type CallEnd,
  type CallPhases,
  type Calls,
  type CallsOptions,
  type CallVerification,
  NS_EXTDISCO,
  octetCompare,
  parseExternalServices,
  type RemoteInfo,
  setupCalls,
  type VerifyPolicy,
} from "./bot/calls.ts";
/** Load tests of call setups (SIPp-style: rate, concurrency cap, per-phase percentiles); `deno task load`. */
export {
  callPhaseDurations,
  formatLoadReport,
  LOAD_PHASES,
  type LoadOptions,
  type LoadPhase,
  type LoadProgress,
  type LoadReport,
  type LoadStats,
  loadStats,
  runLoad,
} from "./bot/load.ts";
/** The explicit call state machine (pure): states, legal transitions, which Jingle actions each state takes. */
export {
  acceptsAction,
  CALL_STATES,
  type CallDirection,
  type CallState,
  CallStateMachine,
  type CallTransition,
  canTransition,
  IllegalTransitionError,
  initialState,
  TRANSITIONS,
} from "./jingle/session.ts";
/** What the apps do with one call: feed it media (`--play` or echo), record it, and build its record. */
export {
  type CallFfmpegPids,
  type CallMediaTimings,
  type CallRun,
  checkPlay,
  runCall,
  type RunOptions,
} from "./bot/call_runner.ts";
/** The JSON call record every call leaves (`--json`, `<record-dir>/<sid>.json`). */
export {
  buildRecord,
  callCodecs,
  type CallRecord,
  DEFAULT_CODECS,
  emitRecord,
  type Negotiation,
  type RecordFile,
  type RecordTraffic,
  safeName,
  summarize,
} from "./bot/records.ts";
/** The one `<jingle/>` IQ handler of a connection, shared by calls and file transfer (apps route by sid). */
export { hasDescription, type JingleApp, type JingleRouter, jingleRouter } from "./bot/jingle_router.ts";

// ---- File transfer -----------------------------------------------------------------------------------

/**
 * Jingle file transfer (XEP-0234) with JET-OMEMO (XEP-0391/0396) over SOCKS5 (XEP-0260: direct and the
 * server's XEP-0065 proxy) or IBB (XEP-0261), with transport-replace from SOCKS5 to IBB.
 */
export {
  fileTransferFeatures,
  type FileTransferOptions,
  type FileTransfers,
  type IncomingOffer,
  type SendOptions,
  type SendTestHooks,
  setupFileTransfer,
  sha256File,
  summarizeTransfer,
  type Transfer,
  TransferError,
  type TransferRecord,
  type TransportKind,
} from "./bot/files.ts";
/** The explicit file-transfer state machine (pure). */
export {
  canTransferTransition,
  IllegalTransferTransitionError,
  isTerminal,
  TRANSFER_STATES,
  TRANSFER_TRANSITIONS,
  type TransferRole,
  type TransferState,
  TransferStateMachine,
  type TransferTransition,
} from "./jingle/transfer_session.ts";
/** The streamed AES-128-GCM of JET (one GCM operation over the whole stream, the tag at its end). */
export {
  createGcmDecryptStream,
  createGcmEncryptStream,
  GCM_IV_BYTES,
  GCM_KEY_BYTES,
  GCM_TAG_BYTES,
  GcmAuthError,
} from "./transfer/gcm.ts";
/** The download sink: safe file names, size and disk-space limits, published only once verified. */
export {
  type Download,
  DownloadError,
  type DownloadFailure,
  type DownloadOptions,
  type DownloadRefusal,
  DownloadRefusedError,
  openDownload,
  safeFileName,
} from "./transfer/download.ts";
/** Byte streams: XEP-0047 In-Band Bytestreams and XEP-0065 SOCKS5 Bytestreams (direct and proxy65). */
export * as bytestreams from "./bytestreams/mod.ts";

// ---- The account: XMPP, disco/caps, carbons, OMEMO ---------------------------------------------------

/** An account with XMPP, disco/caps, carbons and OMEMO wired together. */
export {
  type ChatFailure,
  type ChatMessage,
  createEndpoint,
  type Endpoint,
  type EndpointOptions,
  type KeyTransport,
  OMEMO_FALLBACK_BODY,
} from "./bot/endpoint.ts";
/** The XMPP client layer (on `@xmpp/client`): connection, IQ and message routing, disco/caps, errors. */
export {
  AuthError,
  bare,
  type ConnectionState,
  type ConnectOptions,
  connectXmpp,
  type Disco,
  type DiscoForm,
  type DiscoIdentity,
  type DiscoInfo,
  type Element,
  type IqContext,
  type IqHandler,
  IqTimeoutError,
  jidEquals,
  type Logger,
  type MessageContext,
  type MessageHandler,
  type PresenceOptions,
  StanzaError,
  type StanzaErrorType,
  xml,
  type XmlAttrs,
  type XmlChild,
  type XmppConnection,
} from "./xmpp/mod.ts";
/** OMEMO 0.3 (`eu.siacs.conversations.axolotl`): device lists, bundles, sessions, encrypt/decrypt, trust. */
export {
  type DeviceAddress,
  formatFingerprint,
  type IdentityRecord,
  type KnownDevice,
  knownDevices,
  normalizeOmemoFingerprint,
  NotForThisDeviceError,
  OmemoDecryptionError,
  type OmemoDecryptResult,
  type OmemoEncryptResult,
  OmemoError,
  type OmemoKeyPair,
  type OmemoLogger,
  OmemoManager,
  type OmemoManagerOptions,
  type OmemoPepTransport,
  OmemoStore,
  OmemoStoreCorruptError,
  OmemoStoreLockedError,
  type OmemoStoreOptions,
  setTrustByFingerprint,
  type TrustState,
  UntrustedDeviceError,
} from "./omemo/mod.ts";

// ---- Media -------------------------------------------------------------------------------------------

/**
 * The media plane (werift with its fixes: DTLS peer authentication, no default STUN server, ordered sends,
 * source-address filter, SRTP replay window) and the ffmpeg side: sources, recorders, codec helpers.
 */
export {
  checkMediaFile,
  type CodecInfo,
  codecLabel,
  createDtlsCertificate,
  createPeer,
  type DtlsCertificate,
  type FfmpegBinary,
  FfmpegNotFoundError,
  type FfmpegSource,
  fingerprintSha256,
  type IceServerConfig,
  type LocalCandidate,
  type MediaFileInfo,
  type MediaKind,
  type MediaSource,
  MediaSourceError,
  type NegotiatedCodec,
  type Peer,
  type PeerLogger,
  type PeerOptions,
  type PeerRole,
  type PeerStats,
  type Recorder,
  type RecorderCodec,
  RecorderError,
  type RecorderOptions,
  type RecordingResult,
  type RemoteCandidate,
  resolveFfmpeg,
  type RtpEvent,
  sharedSource,
  type SharedSourceHandle,
  type SharedSourceOptions,
  type SourceExit,
  type SourceOptions,
  type SourceSpec,
  startRecorder,
  startSource,
  type StateChange,
  stopIdleSources,
  SUPPORTED_CODECS,
  type TrackCounters,
  type TransportState,
} from "./media/mod.ts";

// ---- Pure codecs --------------------------------------------------------------------------------------

/**
 * The pure Jingle codecs (XML element ⇄ typed object, no I/O): XEP-0353 JMI, XEP-0166 Jingle, XEP-0167 RTP
 * with XEP-0293/0294/0339, XEP-0176 ICE-UDP with XEP-0320 and the OMEMO-verified fingerprint, XEP-0338
 * grouping, the Jingle ⇄ SDP mapping, XEP-0234 file offers, XEP-0391 JET and the XEP-0260/0261 transports.
 * Malformed input raises `jingle.JingleProtocolError`.
 */
export * as jingle from "./jingle/mod.ts";
/** The codec types the call, record and transfer APIs above use (also in {@link jingle}). */
export {
  type CandidateType,
  type Creator,
  type DtlsSetup,
  type Element as JingleElement,
  type FileHash,
  type FileOffer,
  type Fingerprint,
  type HeaderExtension,
  type IceCandidate,
  type IceUdpTransport,
  type Jingle,
  JINGLE_ACTIONS,
  type JingleAction,
  type JingleContent,
  type JingleGroup,
  type JingleReason,
  type JmiMedia,
  type PayloadType,
  REASON_CONDITIONS,
  type ReasonCondition,
  type RtcpFeedback,
  type RtpContentMap,
  type RtpDescription,
  type RtpParameter,
  type S5bCandidate,
  type S5bCandidateType,
  type Senders,
  type SessionInfo,
  type Source,
  type SsrcGroup,
  type UnknownPayload,
} from "./jingle/mod.ts";

// ---- Test and demo infrastructure ----------------------------------------------------------------------

/** A real Prosody 0.12 on loopback (STARTTLS, PEP, carbons, proxy65), for tests, demos and benchmarks. */
export {
  type ExternalService,
  type ProsodyOptions,
  type ProsodyServer,
  startProsody,
} from "./scripts/prosody.ts";
