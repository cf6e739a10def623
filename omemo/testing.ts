/**
 * Test support: access to libsignal-protocol-typescript's reference (asm.js) curve and a
 * helper to build a session without a one-time prekey. Not for production use.
 *
 * @module
 */
import libsignal, {
  SessionBuilder,
  SignalProtocolAddress,
} from "@privacyresearch/libsignal-protocol-typescript";
import type { Bundle } from "./codec.ts";
import type { OmemoStore } from "./store.ts";

/** The library's own asm.js Curve25519 (unaffected by `setCurve`). */
export interface ReferenceCurve {
  /** Key pair from a private key; public key is 33 bytes (0x05-prefixed). */
  keyPair(priv: ArrayBuffer): Promise<{ pubKey: ArrayBuffer; privKey: ArrayBuffer }>;
  agree(pub: ArrayBuffer, priv: ArrayBuffer): Promise<ArrayBuffer>;
  sign(priv: ArrayBuffer, msg: ArrayBuffer): Promise<ArrayBuffer>;
  /** True when the signature is valid. */
  verify(pub: ArrayBuffer, msg: ArrayBuffer, sig: ArrayBuffer): Promise<boolean>;
}

/** Load the reference asm.js curve. */
export async function referenceCurve(): Promise<ReferenceCurve> {
  // CommonJS interop: the factory is `module.exports.default`, reachable as `default` or `default.default`.
  type Factory = () => Promise<{ Curve: libsignal.Curve }>;
  const d = (libsignal as unknown as { default: Factory | { default: Factory } }).default;
  const factory = typeof d === "function" ? d : d.default;
  const c = (await factory()).Curve.async;
  return {
    keyPair: (priv) => c.createKeyPair(priv),
    agree: (pub, priv) => c.calculateAgreement(pub, priv),
    sign: (priv, msg) => c.calculateSignature(priv, msg),
    verify: async (pub, msg, sig) => {
      try {
        return (await c.verifySignature(pub, msg, sig)) === false;
      } catch {
        return false;
      }
    },
  };
}

const ab = (u: Uint8Array) => u.slice().buffer as ArrayBuffer;

/** Build a session from `bundle` WITHOUT using a one-time prekey (protocol-violating; for tests). */
export async function buildSessionWithoutOneTimePreKey(
  store: OmemoStore,
  jid: string,
  deviceId: number,
  bundle: Bundle,
): Promise<void> {
  await new SessionBuilder(store, new SignalProtocolAddress(jid, deviceId)).processPreKey({
    identityKey: ab(bundle.identityKey),
    signedPreKey: {
      keyId: bundle.signedPreKeyId,
      publicKey: ab(bundle.signedPreKeyPublic),
      signature: ab(bundle.signedPreKeySignature),
    },
  });
}
