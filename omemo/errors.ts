/**
 * Typed errors of the OMEMO layer.
 *
 * @module
 */

/** Base class for OMEMO errors. */
export class OmemoError extends Error {
  /** Create an OMEMO error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The `<encrypted/>` has no `<key/>` for our device id. */
export class NotForThisDeviceError extends OmemoError {}

/** Ratchet or AES-GCM decryption failed (tampered ciphertext/tag, replay, unknown session …). */
export class OmemoDecryptionError extends OmemoError {}

/** Protocol violation, e.g. a PreKeySignalMessage without one-time prekey id. */
export class OmemoProtocolError extends OmemoError {}

/** A device's bundle signature does not verify against its identity key. */
export class BadBundleSignatureError extends OmemoError {}

/** A device's bundle could not be fetched or is malformed. */
export class BundleError extends OmemoError {}

/** A device is not trusted and the policy refuses it. */
export class UntrustedDeviceError extends OmemoError {}

/** No usable device for a recipient. */
export class NoDevicesError extends OmemoError {}
