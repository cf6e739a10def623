/**
 * A headless XMPP call bot and media endpoint: OMEMO 0.3 end-to-end encryption on a real XMPP
 * connection, Jingle codecs for calls and file transfer, a werift media plane and ffmpeg media.
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
 * @module
 */

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
/** The XMPP client layer. */
export {
  AuthError,
  type ConnectOptions,
  connectXmpp,
  type Element,
  IqTimeoutError,
  type Logger,
  StanzaError,
  xml,
  type XmppConnection,
} from "./xmpp/mod.ts";
/** OMEMO 0.3 (`eu.siacs.conversations.axolotl`). */
export {
  formatFingerprint,
  NotForThisDeviceError,
  OmemoDecryptionError,
  OmemoManager,
  type OmemoPepTransport,
  OmemoStore,
  OmemoStoreCorruptError,
  OmemoStoreLockedError,
  type TrustState,
  UntrustedDeviceError,
} from "./omemo/mod.ts";
/** ffmpeg discovery. */
export { type FfmpegBinary, FfmpegNotFoundError, resolveFfmpeg } from "./media/ffmpeg.ts";
/** A real Prosody on loopback, for tests and demos. */
export { type ProsodyOptions, type ProsodyServer, startProsody } from "./scripts/prosody.ts";
