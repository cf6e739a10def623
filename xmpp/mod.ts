/**
 * Public API of the XMPP client layer. Other modules import XMPP things from here only.
 *
 * @module
 */
export {
  type ConnectionState,
  type ConnectOptions,
  connectXmpp,
  defaultLogger,
  type IqContext,
  type IqHandler,
  type Logger,
  type MessageContext,
  type MessageHandler,
  type PresenceOptions,
  type XmppConnection,
} from "./connection.ts";
export {
  AuthError,
  IqTimeoutError,
  NotConnectedError,
  NS_STANZAS,
  StanzaError,
  type StanzaErrorType,
} from "./errors.ts";
export {
  bare,
  type Element,
  formatJid,
  jidEquals,
  type JidParts,
  normalizeJid,
  parseJid,
  parseJid as parse,
  xml,
  type XmlAttrs,
  type XmlChild,
} from "./xml.ts";
export {
  capsVerificationString,
  computeCapsVer,
  type Disco,
  type DiscoForm,
  type DiscoIdentity,
  type DiscoInfo,
  discoInfoToElement,
  type DiscoOptions,
  NS_CAPS,
  NS_DATA,
  NS_DISCO_INFO,
  NS_DISCO_ITEMS,
  parseDiscoInfo,
  queryDiscoInfo,
  setupDisco,
} from "./disco.ts";
export {
  configureNode,
  type NodeOptions,
  notifyFeature,
  NS_PUBSUB,
  NS_PUBSUB_ERRORS,
  NS_PUBSUB_EVENT,
  NS_PUBSUB_OWNER,
  onPepEvent,
  parseItems,
  type PepEvent,
  publish,
  type PubsubItem,
  retrieveItems,
  submitForm,
} from "./pubsub.ts";
export {
  type CarbonUnwrap,
  enableCarbons,
  NS_CARBONS,
  NS_FORWARD,
  setupCarbons,
  unwrapCarbon,
} from "./carbons.ts";
export { MIN_ITERATIONS, saltedPassword, ScramError, ScramSha1Client } from "./scram.ts";
