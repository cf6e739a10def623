/**
 * OMEMO 0.3 (`eu.siacs.conversations.axolotl`) layer.
 *
 * - {@link OmemoManager}: identity/bundle publication, device lists, sessions, encrypt/decrypt, trust.
 * - {@link OmemoStore}: persistent, locked, atomically written store (libsignal `StorageType`).
 * - Codec helpers for `<list/>`, `<bundle/>`, `<encrypted/>`.
 * - Fast Curve25519/XEdDSA for libsignal ({@link installFastCurve}).
 *
 * The layer talks to PEP only through an injected {@link OmemoPepTransport}.
 *
 * @module
 */
export {
  type Bundle,
  bundleNode,
  decodeBundle,
  decodeDeviceList,
  decodeEncrypted,
  type DeviceListParse,
  encodeBundle,
  encodeDeviceList,
  encodeEncrypted,
  type EncryptedKey,
  type EncryptedMessage,
  fromBase64,
  isValidDeviceId,
  MAX_DEVICE_ID,
  NODE_BUNDLES_PREFIX,
  NODE_DEVICELIST,
  NS_OMEMO,
  OmemoCodecError,
  toBase64,
} from "./codec.ts";
export {
  fastCurve,
  installFastCurve,
  type LibsignalAsyncCurve,
  type RawKeyPair,
  x25519Agree,
  x25519KeyPair,
  xeddsaSign,
  xeddsaVerify,
} from "./curve.ts";
export {
  BadBundleSignatureError,
  BundleError,
  NoDevicesError,
  NotForThisDeviceError,
  OmemoDecryptionError,
  OmemoError,
  OmemoProtocolError,
  UntrustedDeviceError,
} from "./errors.ts";
export {
  type DeviceAddress,
  formatFingerprint,
  type KnownDevice,
  knownDevices,
  normalizeOmemoFingerprint,
  type OmemoDecryptResult,
  type OmemoEncryptResult,
  type OmemoLogger,
  OmemoManager,
  type OmemoManagerOptions,
  type OmemoPepTransport,
  setTrustByFingerprint,
} from "./manager.ts";
export {
  type IdentityRecord,
  type OmemoKeyPair,
  OmemoStore,
  OmemoStoreCorruptError,
  OmemoStoreLockedError,
  type OmemoStoreOptions,
  type TrustState,
} from "./store.ts";
