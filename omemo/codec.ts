/**
 * Pure XML codec for OMEMO 0.3 (`eu.siacs.conversations.axolotl`).
 *
 * @module
 */
import { Element, xml } from "@xmpp/xml";

/** OMEMO 0.3 namespace. */
export const NS_OMEMO = "eu.siacs.conversations.axolotl";
/** PEP node holding the device list. */
export const NODE_DEVICELIST = `${NS_OMEMO}.devicelist`;
/** PEP node prefix for bundles; append the device id. */
export const NODE_BUNDLES_PREFIX = `${NS_OMEMO}.bundles:`;
/** Largest valid device id (2^31 - 1). */
export const MAX_DEVICE_ID = 0x7fffffff;

/** Bundle PEP node name for a device. */
export function bundleNode(deviceId: number): string {
  return `${NODE_BUNDLES_PREFIX}${deviceId}`;
}

/** Raised for malformed OMEMO XML / base64 input. */
export class OmemoCodecError extends Error {
  /** Create a codec error. */
  constructor(message: string) {
    super(message);
    this.name = "OmemoCodecError";
  }
}

/** Base64 encode bytes. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Base64 decode (whitespace tolerated); throws {@link OmemoCodecError} on garbage. */
export function fromBase64(text: string, what = "base64"): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(clean)) throw new OmemoCodecError(`invalid ${what}`);
  let bin: string;
  try {
    bin = atob(clean);
  } catch {
    throw new OmemoCodecError(`invalid ${what}`);
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** True when `n` is a valid OMEMO device id (integer in 1..2^31-1). */
export function isValidDeviceId(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= MAX_DEVICE_ID;
}

function parseId(v: unknown): number | undefined {
  if (typeof v !== "string" || !/^\s*\d{1,10}\s*$/.test(v)) return undefined;
  const n = Number(v);
  return isValidDeviceId(n) ? n : undefined;
}

function childText(el: Element, name: string): string | undefined {
  const c = el.getChild(name);
  return c ? String(c.text() ?? "") : undefined;
}

// ---------------------------------------------------------------- device list

/** Result of parsing a device list. */
export interface DeviceListParse {
  /** Valid, de-duplicated device ids in document order. */
  devices: number[];
  /** Human-readable reasons for skipped entries. */
  skipped: string[];
}

/** Build `<list xmlns='eu.siacs.conversations.axolotl'><device id=…/></list>`. */
export function encodeDeviceList(devices: Iterable<number>): Element {
  const seen = new Set<number>();
  const children: Element[] = [];
  for (const id of devices) {
    if (!isValidDeviceId(id)) throw new OmemoCodecError(`invalid device id ${id}`);
    if (seen.has(id)) continue;
    seen.add(id);
    children.push(xml("device", { id: String(id) }));
  }
  return xml("list", { xmlns: NS_OMEMO }, ...children);
}

/**
 * Parse a `<list/>` element (or a pubsub `<item/>` wrapping it). Invalid entries are skipped and reported.
 * Throws {@link OmemoCodecError} if the element is not an OMEMO device list.
 */
export function decodeDeviceList(el: Element): DeviceListParse {
  let list = el;
  if (list?.name === "item") list = el.getChild("list", NS_OMEMO);
  if (!list || list.name !== "list" || list.attrs?.xmlns !== NS_OMEMO) {
    throw new OmemoCodecError("not an OMEMO device list");
  }
  const devices: number[] = [];
  const skipped: string[] = [];
  for (const c of list.children as unknown[]) {
    if (typeof c === "string") continue;
    const ch = c as Element;
    if (ch.name !== "device") {
      skipped.push(`unexpected element <${ch.name}>`);
      continue;
    }
    const id = parseId(ch.attrs?.id);
    if (id === undefined) {
      skipped.push(`invalid device id ${JSON.stringify(ch.attrs?.id ?? null)}`);
      continue;
    }
    if (devices.includes(id)) {
      skipped.push(`duplicate device id ${id}`);
      continue;
    }
    devices.push(id);
  }
  return { devices, skipped };
}

// ---------------------------------------------------------------- bundle

/** Public bundle contents (keys are 33 bytes with 0x05 prefix, as on the wire). */
export interface Bundle {
  signedPreKeyId: number;
  signedPreKeyPublic: Uint8Array;
  signedPreKeySignature: Uint8Array;
  identityKey: Uint8Array;
  preKeys: { id: number; publicKey: Uint8Array }[];
}

/** Build `<bundle xmlns='eu.siacs.conversations.axolotl'>…</bundle>`. */
export function encodeBundle(b: Bundle): Element {
  return xml(
    "bundle",
    { xmlns: NS_OMEMO },
    xml("signedPreKeyPublic", { signedPreKeyId: String(b.signedPreKeyId) }, toBase64(b.signedPreKeyPublic)),
    xml("signedPreKeySignature", {}, toBase64(b.signedPreKeySignature)),
    xml("identityKey", {}, toBase64(b.identityKey)),
    xml(
      "prekeys",
      {},
      ...b.preKeys.map((p) => xml("preKeyPublic", { preKeyId: String(p.id) }, toBase64(p.publicKey))),
    ),
  );
}

/** Parse a `<bundle/>` (or an `<item/>` wrapping it). Invalid prekeys are skipped; missing mandatory parts throw. */
export function decodeBundle(el: Element): Bundle {
  let b = el;
  if (b?.name === "item") b = el.getChild("bundle", NS_OMEMO);
  if (!b || b.name !== "bundle" || b.attrs?.xmlns !== NS_OMEMO) {
    throw new OmemoCodecError("not an OMEMO bundle");
  }
  const spk = b.getChild("signedPreKeyPublic");
  if (!spk) throw new OmemoCodecError("bundle: missing signedPreKeyPublic");
  const spkId = parseId(spk.attrs?.signedPreKeyId) ?? (spk.attrs?.signedPreKeyId === "0" ? 0 : undefined);
  if (spkId === undefined) throw new OmemoCodecError("bundle: invalid signedPreKeyId");
  const sig = childText(b, "signedPreKeySignature");
  const ik = childText(b, "identityKey");
  if (sig === undefined) throw new OmemoCodecError("bundle: missing signedPreKeySignature");
  if (ik === undefined) throw new OmemoCodecError("bundle: missing identityKey");
  const bundle: Bundle = {
    signedPreKeyId: spkId,
    signedPreKeyPublic: checkKey(
      fromBase64(String(spk.text() ?? ""), "signedPreKeyPublic"),
      "signedPreKeyPublic",
    ),
    signedPreKeySignature: fromBase64(sig, "signedPreKeySignature"),
    identityKey: checkKey(fromBase64(ik, "identityKey"), "identityKey"),
    preKeys: [],
  };
  if (bundle.signedPreKeySignature.length !== 64) {
    throw new OmemoCodecError("bundle: signature must be 64 bytes");
  }
  const pks = b.getChild("prekeys");
  for (const p of (pks?.getChildren("preKeyPublic") ?? []) as Element[]) {
    const id = parseId(p.attrs?.preKeyId);
    if (id === undefined) continue;
    try {
      bundle.preKeys.push({ id, publicKey: checkKey(fromBase64(String(p.text() ?? "")), "preKeyPublic") });
    } catch {
      // skip garbage prekey
    }
  }
  return bundle;
}

function checkKey(k: Uint8Array, what: string): Uint8Array {
  if (k.length === 33 && k[0] === 5) return k;
  if (k.length === 32) {
    const o = new Uint8Array(33);
    o[0] = 5;
    o.set(k, 1);
    return o;
  }
  throw new OmemoCodecError(`bundle: ${what} must be a 33-byte (0x05-prefixed) Curve25519 key`);
}

// ---------------------------------------------------------------- encrypted

/** One `<key/>` element of an `<encrypted/>` header. */
export interface EncryptedKey {
  rid: number;
  preKey: boolean;
  data: Uint8Array;
}

/** Contents of an `<encrypted/>` element. */
export interface EncryptedMessage {
  sid: number;
  keys: EncryptedKey[];
  iv: Uint8Array;
  /** AES-GCM ciphertext without tag; absent for key transport messages. */
  payload?: Uint8Array;
}

/** Build `<encrypted xmlns='eu.siacs.conversations.axolotl'>` (keys then iv, as Conversations). */
export function encodeEncrypted(m: EncryptedMessage): Element {
  if (!isValidDeviceId(m.sid)) throw new OmemoCodecError(`invalid sid ${m.sid}`);
  const header = xml(
    "header",
    { sid: String(m.sid) },
    ...m.keys.map((k) => {
      if (!isValidDeviceId(k.rid)) throw new OmemoCodecError(`invalid rid ${k.rid}`);
      return xml(
        "key",
        k.preKey ? { rid: String(k.rid), prekey: "true" } : { rid: String(k.rid) },
        toBase64(k.data),
      );
    }),
    xml("iv", {}, toBase64(m.iv)),
  );
  const children = [header];
  if (m.payload) children.push(xml("payload", {}, toBase64(m.payload)));
  return xml("encrypted", { xmlns: NS_OMEMO }, ...children);
}

/** Parse an `<encrypted/>` element (accepts any order of keys/iv inside header). */
export function decodeEncrypted(el: Element): EncryptedMessage {
  if (!el || el.name !== "encrypted" || el.attrs?.xmlns !== NS_OMEMO) {
    throw new OmemoCodecError("not an OMEMO encrypted element");
  }
  const header = el.getChild("header");
  if (!header) throw new OmemoCodecError("encrypted: missing header");
  const sid = parseId(header.attrs?.sid);
  if (sid === undefined) throw new OmemoCodecError("encrypted: invalid sid");
  const ivText = childText(header, "iv");
  if (ivText === undefined) throw new OmemoCodecError("encrypted: missing iv");
  const iv = fromBase64(ivText, "iv");
  if (iv.length !== 12 && iv.length !== 16) {
    throw new OmemoCodecError(`encrypted: bad iv length ${iv.length}`);
  }
  const keys: EncryptedKey[] = [];
  for (const k of header.getChildren("key") as Element[]) {
    const rid = parseId(k.attrs?.rid);
    if (rid === undefined) throw new OmemoCodecError("encrypted: invalid key rid");
    const pk = String(k.attrs?.prekey ?? "").toLowerCase();
    keys.push({ rid, preKey: pk === "true" || pk === "1", data: fromBase64(String(k.text() ?? ""), "key") });
  }
  const payloadText = childText(el, "payload");
  const m: EncryptedMessage = { sid, keys, iv };
  if (payloadText !== undefined) m.payload = fromBase64(payloadText, "payload");
  return m;
}
