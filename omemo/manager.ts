/**
 * OMEMO 0.3 (`eu.siacs.conversations.axolotl`) session manager.
 *
 * @module
 */
import {
  KeyHelper,
  SessionBuilder,
  SessionCipher,
  SignalProtocolAddress,
} from "@privacyresearch/libsignal-protocol-typescript";
import type { Element } from "@xmpp/xml";
import {
  bundleNode,
  decodeBundle,
  decodeDeviceList,
  decodeEncrypted,
  encodeBundle,
  encodeDeviceList,
  encodeEncrypted,
  type EncryptedKey,
  MAX_DEVICE_ID,
  NODE_DEVICELIST,
  OmemoCodecError,
} from "./codec.ts";
import { installFastCurve, xeddsaVerify } from "./curve.ts";
import { installSyncCrypto } from "./sync_crypto.ts";
import {
  BadBundleSignatureError,
  BundleError,
  NoDevicesError,
  NotForThisDeviceError,
  OmemoDecryptionError,
  OmemoProtocolError,
  UntrustedDeviceError,
} from "./errors.ts";
import type { OmemoStore, TrustState } from "./store.ts";

/** PEP access used by the manager; wired to the XMPP connection by the caller. */
export interface OmemoPepTransport {
  /** Publish `item` (the payload element, e.g. `<list/>` or `<bundle/>`) to `node` with item id and publish-options. */
  publish(node: string, item: Element, itemId: string, options: Record<string, string>): Promise<void>;
  /** Fetch items of `node` of `jid` (returns payload elements or `<item/>` wrappers). */
  fetchItems(jid: string, node: string): Promise<Element[]>;
}

/** Minimal logger; secrets are never passed to it. */
export interface OmemoLogger {
  /** Details for debugging. */
  debug(msg: string, data?: Record<string, unknown>): void;
  /** Normal events. */
  info(msg: string, data?: Record<string, unknown>): void;
  /** Problems worked around. */
  warn(msg: string, data?: Record<string, unknown>): void;
}

/** Options for {@link OmemoManager.create}. */
export interface OmemoManagerOptions {
  /** Where identities, sessions and prekeys are kept. */
  store: OmemoStore;
  /** How the manager reaches PEP (publish, fetch). */
  transport: OmemoPepTransport;
  /** Our bare JID. */
  ownJid: string;
  /** Where logs go. */
  logger?: OmemoLogger;
  /** `blind` = blind trust before verification (default); `manual` = new devices start untrusted. */
  trust?: "blind" | "manual";
  /** Refuse untrusted devices with {@link UntrustedDeviceError} (also on decrypt). Default false. */
  requireTrusted?: boolean;
  /** Number of one-time prekeys kept in the bundle (default 100). */
  preKeyCount?: number;
}

/** A specific device. */
export interface DeviceAddress {
  /** Bare JID of the device's owner. */
  jid: string;
  /** OMEMO device id. */
  deviceId: number;
}

/** Result of {@link OmemoManager.encrypt}. */
export interface OmemoEncryptResult {
  /** The `<encrypted xmlns='eu.siacs.conversations.axolotl'/>` element. */
  element: Element;
  /** Raw 16-byte AES key (for key transport users such as JET / DTLS-SRTP). */
  key: Uint8Array;
  /** IV (12 bytes). */
  iv: Uint8Array;
  /** Devices the key was encrypted for. */
  devices: (DeviceAddress & { preKey: boolean })[];
  /** Devices skipped (no bundle, bad signature, untrusted …) with reason. */
  skipped: (DeviceAddress & { reason: string })[];
}

/** Result of {@link OmemoManager.decrypt}. */
export interface OmemoDecryptResult {
  /** Decrypted body, or null for key transport messages. */
  plaintext: string | null;
  /** Key transport: the raw transported key; payload messages: the AES key. */
  key?: Uint8Array;
  /** The 12-byte IV of the message. */
  iv: Uint8Array;
  /** The sender's device id (`header/@sid`). */
  senderDeviceId: number;
  /** Conversations/Dino style fingerprint of the sender device. */
  identityFingerprint: string;
  /** The sender device's trust state. */
  trust: TrustState;
  /** True when a one-time prekey was consumed (it was replaced and the bundle republished). */
  preKeyUsed: boolean;
}

const PUBLISH_OPTIONS = { "pubsub#access_model": "open" };

/** Conversations/Dino fingerprint: lowercase hex of the 32-byte key (no 0x05), groups of 8 chars. */
export function formatFingerprint(identityKey: Uint8Array): string {
  const raw = identityKey.length === 33 ? identityKey.subarray(1) : identityKey;
  const hex = Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
  return hex.match(/.{1,8}/g)!.join(" ");
}

/** A fingerprint as typed or pasted (spaces, colons, any case) reduced to lowercase hex. */
export function normalizeOmemoFingerprint(fp: string): string {
  return fp.replace(/[\s:]/g, "").toLowerCase();
}

function ab(u: Uint8Array): ArrayBuffer {
  return u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength) as ArrayBuffer;
}

function binaryStringToBytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0xff;
  return out;
}

/** Minimal protobuf scan of a PreKeySignalMessage (after the version byte). */
function parsePreKeyMessage(data: Uint8Array): { preKeyId?: number; identityKey?: Uint8Array } {
  if (data.length < 2) throw new OmemoProtocolError("PreKeySignalMessage too short");
  const v = data[0]!;
  if (v >> 4 !== 3) throw new OmemoProtocolError(`unsupported PreKeySignalMessage version ${v >> 4}`);
  let i = 1;
  const varint = (): number => {
    let r = 0, shift = 0;
    for (;;) {
      if (i >= data.length) throw new OmemoProtocolError("truncated PreKeySignalMessage");
      const b = data[i++]!;
      r += (b & 0x7f) * 2 ** shift;
      if (!(b & 0x80)) return r;
      shift += 7;
      if (shift > 63) throw new OmemoProtocolError("bad varint");
    }
  };
  const out: { preKeyId?: number; identityKey?: Uint8Array } = {};
  while (i < data.length) {
    const tag = varint();
    const field = Math.floor(tag / 8), wt = tag & 7;
    if (wt === 0) {
      const val = varint();
      if (field === 1) out.preKeyId = val;
    } else if (wt === 2) {
      const len = varint();
      if (i + len > data.length) throw new OmemoProtocolError("truncated PreKeySignalMessage");
      if (field === 3) out.identityKey = data.slice(i, i + len);
      i += len;
    } else if (wt === 5) i += 4;
    else if (wt === 1) i += 8;
    else throw new OmemoProtocolError("bad protobuf wire type");
  }
  return out;
}

async function aesGcmEncrypt(key: Uint8Array, iv: Uint8Array, pt: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", new Uint8Array(key), "AES-GCM", false, ["encrypt"]);
  return new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: new Uint8Array(iv), tagLength: 128 },
      k,
      new Uint8Array(pt),
    ),
  );
}

async function aesGcmDecrypt(key: Uint8Array, iv: Uint8Array, ctAndTag: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey("raw", new Uint8Array(key), "AES-GCM", false, ["decrypt"]);
  return new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: new Uint8Array(iv), tagLength: 128 },
      k,
      new Uint8Array(ctAndTag),
    ),
  );
}

function randomDeviceId(exclude: Iterable<number>): number {
  const ex = new Set(exclude);
  for (;;) {
    const id = crypto.getRandomValues(new Uint32Array(1))[0]! & MAX_DEVICE_ID;
    if (id >= 1 && !ex.has(id)) return id;
  }
}

const noopLogger: OmemoLogger = { debug() {}, info() {}, warn() {} };

/**
 * OMEMO 0.3 manager: own identity/bundle publication, device lists, session building,
 * encryption and decryption. Operations are serialized internally.
 */
export class OmemoManager {
  /** Where identities, sessions and prekeys are kept. */
  readonly store: OmemoStore;
  /** How the manager reaches PEP. */
  readonly transport: OmemoPepTransport;
  /** Our bare JID. */
  readonly ownJid: string;
  /** Untrusted devices are refused (encrypt and decrypt). */
  readonly requireTrusted: boolean;
  /** One-time prekeys kept in the published bundle. */
  readonly preKeyCount: number;
  #log: OmemoLogger;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(o: OmemoManagerOptions) {
    this.store = o.store;
    this.transport = o.transport;
    this.ownJid = o.ownJid;
    this.#log = o.logger ?? noopLogger;
    this.requireTrusted = o.requireTrusted ?? false;
    this.preKeyCount = o.preKeyCount ?? 100;
    this.store.trustPolicy = o.trust === "manual" ? "manual" : "btbv";
  }

  /** Create a manager (installs the fast Curve25519 and synchronous symmetric crypto into libsignal). Call
   * {@link publishOwn} next. */
  static create(o: OmemoManagerOptions): Promise<OmemoManager> {
    installFastCurve();
    installSyncCrypto();
    return Promise.resolve(new OmemoManager(o));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.#queue.then(fn, fn);
    this.#queue = r.catch(() => {});
    return r;
  }

  /** Our device id (throws before {@link publishOwn} on a fresh store). */
  get deviceId(): number {
    const id = this.store.getDeviceId();
    if (id === undefined) throw new Error("OMEMO identity not initialised; call publishOwn()");
    return id;
  }

  /** Our own identity fingerprint. */
  async ownFingerprint(): Promise<string> {
    const kp = await this.store.getIdentityKeyPair();
    if (!kp) throw new Error("OMEMO identity not initialised; call publishOwn()");
    return formatFingerprint(new Uint8Array(kp.pubKey));
  }

  /**
   * Ensure identity, device id, signed prekey and prekeys exist; publish the bundle and
   * add our device to our device list (merging, never dropping, other devices).
   */
  publishOwn(): Promise<{ deviceId: number; devices: number[] }> {
    return this.#serial(async () => {
      // A failing fetch is fatal here: publishing without the current list would drop other devices.
      // (The transport must return [] for a missing node.)
      const remote = await this.#fetchDeviceList(this.ownJid);
      await this.store.transaction(async () => {
        if (!this.store.hasIdentity()) {
          const ik = await KeyHelper.generateIdentityKeyPair();
          const deviceId = randomDeviceId(remote);
          await this.store.setIdentity(ik, KeyHelper.generateRegistrationId(), deviceId);
          this.#log.info("omemo: generated new identity", { deviceId });
        }
        if (!this.store.getActiveSignedPreKey()) {
          const ik = (await this.store.getIdentityKeyPair())!;
          const id = (crypto.getRandomValues(new Uint32Array(1))[0]! & 0xffffff) || 1;
          const spk = await KeyHelper.generateSignedPreKey(ik, id);
          await this.store.storeSignedPreKeyWithSignature(spk.keyId, spk.keyPair, spk.signature);
        }
        await this.#topUpPreKeys();
      });
      await this.#publishBundle();
      const merged = [...remote];
      if (!merged.includes(this.deviceId)) {
        merged.push(this.deviceId);
        await this.transport.publish(NODE_DEVICELIST, encodeDeviceList(merged), "current", PUBLISH_OPTIONS);
      }
      await this.store.setDeviceList(this.ownJid, merged);
      return { deviceId: this.deviceId, devices: merged };
    });
  }

  async #topUpPreKeys(): Promise<number> {
    let n = 0;
    while (this.store.listPreKeys().length < this.preKeyCount) {
      const pk = await KeyHelper.generatePreKey(this.store.allocatePreKeyId());
      await this.store.storePreKey(pk.keyId, pk.keyPair);
      n++;
    }
    return n;
  }

  /** The bundle element we publish. */
  async ownBundle(): Promise<Element> {
    const kp = await this.store.getIdentityKeyPair();
    const spk = this.store.getActiveSignedPreKey();
    if (!kp || !spk) throw new Error("OMEMO identity not initialised; call publishOwn()");
    return encodeBundle({
      signedPreKeyId: spk.id,
      signedPreKeyPublic: spk.publicKey,
      signedPreKeySignature: spk.signature,
      identityKey: new Uint8Array(kp.pubKey),
      preKeys: this.store.listPreKeys(),
    });
  }

  #republishing?: Promise<void>;
  #republishAgain = false;

  /** Republishes our bundle in the background; requests made while one is under way are served by one more. */
  #republishBundleSoon(): void {
    if (this.#republishing) {
      this.#republishAgain = true;
      return;
    }
    this.#republishing = (async () => {
      do {
        this.#republishAgain = false;
        try {
          await this.#publishBundle();
        } catch (e) {
          this.#log.warn("omemo: republishing bundle failed", { error: String(e) });
        }
      } while (this.#republishAgain);
    })().finally(() => this.#republishing = undefined);
  }

  /** Resolves once a bundle republish started by a used one-time prekey is done (at once if none is). */
  async bundlePublished(): Promise<void> {
    while (this.#republishing) await this.#republishing;
  }

  async #publishBundle(): Promise<void> {
    await this.transport.publish(
      bundleNode(this.deviceId),
      await this.ownBundle(),
      "current",
      PUBLISH_OPTIONS,
    );
  }

  async #fetchDeviceList(jid: string): Promise<number[]> {
    const items = await this.transport.fetchItems(jid, NODE_DEVICELIST);
    const item = items.at(-1);
    if (!item) return [];
    const r = decodeDeviceList(item);
    if (r.skipped.length) this.#log.warn("omemo: skipped device list entries", { jid, skipped: r.skipped });
    return r.devices;
  }

  /**
   * Process a device list (PEP notification payload `<list/>` or `<item/>`). Garbage entries are
   * skipped and reported. If it is our own list and lacks our device, it is republished with us merged in.
   */
  handleDeviceList(jid: string, listEl: Element): Promise<{ devices: number[]; skipped: string[] }> {
    return this.#serial(async () => {
      const r = decodeDeviceList(listEl);
      if (r.skipped.length) this.#log.warn("omemo: skipped device list entries", { jid, skipped: r.skipped });
      const devices = [...r.devices];
      if (jid === this.ownJid && this.store.getDeviceId() !== undefined && !devices.includes(this.deviceId)) {
        devices.push(this.deviceId);
        await this.transport.publish(NODE_DEVICELIST, encodeDeviceList(devices), "current", PUBLISH_OPTIONS);
      }
      await this.store.setDeviceList(jid, devices);
      return { devices, skipped: r.skipped };
    });
  }

  /** Known devices of a JID (fetched from PEP when not cached). */
  getDevices(jid: string): Promise<number[]> {
    return this.#serial(() => this.#devicesOf(jid));
  }

  async #devicesOf(jid: string): Promise<number[]> {
    let d = this.store.getDeviceList(jid);
    if (d.length === 0) {
      d = await this.#fetchDeviceList(jid);
      if (d.length) await this.store.setDeviceList(jid, d);
    }
    return d;
  }

  async #buildSession(jid: string, deviceId: number): Promise<void> {
    let items: Element[];
    try {
      items = await this.transport.fetchItems(jid, bundleNode(deviceId));
    } catch (e) {
      throw new BundleError(`cannot fetch bundle of ${jid}/${deviceId}`, { cause: e });
    }
    const item = items.at(-1);
    if (!item) throw new BundleError(`no bundle for ${jid}/${deviceId}`);
    let b;
    try {
      b = decodeBundle(item);
    } catch (e) {
      throw new BundleError(`malformed bundle of ${jid}/${deviceId}: ${(e as Error).message}`, { cause: e });
    }
    if (!(await xeddsaVerify(b.identityKey, b.signedPreKeyPublic, b.signedPreKeySignature))) {
      throw new BadBundleSignatureError(`bundle signature of ${jid}/${deviceId} does not verify`);
    }
    if (b.preKeys.length === 0) throw new BundleError(`bundle of ${jid}/${deviceId} has no prekeys`);
    const pk = b.preKeys[crypto.getRandomValues(new Uint32Array(1))[0]! % b.preKeys.length]!;
    await this.store.rememberIdentity(jid, deviceId, b.identityKey);
    const builder = new SessionBuilder(this.store, new SignalProtocolAddress(jid, deviceId));
    await builder.processPreKey({
      identityKey: ab(b.identityKey),
      signedPreKey: {
        keyId: b.signedPreKeyId,
        publicKey: ab(b.signedPreKeyPublic),
        signature: ab(b.signedPreKeySignature),
      },
      preKey: { keyId: pk.id, publicKey: ab(pk.publicKey) },
    });
  }

  /** Force (re)building a session with a device from its bundle. */
  buildSession(jid: string, deviceId: number): Promise<void> {
    return this.#serial(() => this.store.transaction(() => this.#buildSession(jid, deviceId)));
  }

  /**
   * Encrypt for all devices of `recipients` (bare JIDs) plus our own other devices, or for exactly
   * `opts.devices`. `plaintext === null` produces a key transport element (no payload; the
   * ratchet-encrypted blob is the raw 16-byte key, returned as `key`/`iv`).
   */
  encrypt(
    recipients: string[],
    plaintext: string | null,
    opts: { devices?: DeviceAddress[] } = {},
  ): Promise<OmemoEncryptResult> {
    return this.#serial(() => this.store.transaction(() => this.#encrypt(recipients, plaintext, opts)));
  }

  async #encrypt(
    recipients: string[],
    plaintext: string | null,
    opts: { devices?: DeviceAddress[] },
  ): Promise<OmemoEncryptResult> {
    const own = this.deviceId;
    const explicit = opts.devices !== undefined;
    const targets: DeviceAddress[] = [];
    if (opts.devices) {
      targets.push(...opts.devices);
    } else {
      for (const jid of new Set(recipients)) {
        for (const d of await this.#devicesOf(jid)) targets.push({ jid, deviceId: d });
      }
      if (!recipients.includes(this.ownJid)) {
        for (const d of await this.#devicesOf(this.ownJid).catch(() => [])) {
          targets.push({ jid: this.ownJid, deviceId: d });
        }
      }
    }
    const key = crypto.getRandomValues(new Uint8Array(16));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    let blob: Uint8Array;
    let payload: Uint8Array | undefined;
    if (plaintext !== null) {
      const ct = await aesGcmEncrypt(key, iv, new TextEncoder().encode(plaintext));
      payload = ct.slice(0, ct.length - 16);
      blob = new Uint8Array(32);
      blob.set(key);
      blob.set(ct.slice(ct.length - 16), 16);
    } else {
      blob = key.slice();
    }
    const keys: EncryptedKey[] = [];
    const devices: OmemoEncryptResult["devices"] = [];
    const skipped: OmemoEncryptResult["skipped"] = [];
    const seen = new Set<string>();
    const untrusted = new Set<string>();
    for (const t of targets) {
      const tag = `${t.jid}.${t.deviceId}`;
      if (seen.has(tag) || (t.jid === this.ownJid && t.deviceId === own)) continue;
      seen.add(tag);
      try {
        if (!this.store.hasSession(t.jid, t.deviceId)) await this.#buildSession(t.jid, t.deviceId);
        const ident = this.store.getIdentity(t.jid, t.deviceId);
        if (ident?.trust === "untrusted") {
          throw new UntrustedDeviceError(`device ${t.jid}/${t.deviceId} is not trusted`);
        }
        const cipher = new SessionCipher(this.store, new SignalProtocolAddress(t.jid, t.deviceId));
        const m = await cipher.encrypt(ab(blob));
        if (m.body === undefined) throw new Error("libsignal returned empty body");
        const preKey = m.type === 3;
        keys.push({ rid: t.deviceId, preKey, data: binaryStringToBytes(m.body) });
        devices.push({ ...t, preKey });
      } catch (e) {
        if (explicit) throw e;
        this.#log.warn("omemo: skipping device", { jid: t.jid, deviceId: t.deviceId, error: String(e) });
        skipped.push({ ...t, reason: (e as Error).message });
        if (e instanceof UntrustedDeviceError) untrusted.add(tag);
      }
    }
    for (const jid of new Set(recipients)) {
      if (!devices.some((d) => d.jid === jid)) {
        const why = skipped.filter((s) => s.jid === jid);
        if (why.length && why.every((s) => untrusted.has(`${s.jid}.${s.deviceId}`))) {
          throw new UntrustedDeviceError(`no trusted device for ${jid}`);
        }
        throw new NoDevicesError(`no usable OMEMO device for ${jid}`);
      }
    }
    if (explicit && keys.length === 0) throw new NoDevicesError("no usable OMEMO device");
    const element = encodeEncrypted({ sid: own, keys, iv, payload });
    return { element, key, iv, devices, skipped };
  }

  /** Decrypt an `<encrypted/>` element from `fromBareJid`. Store is unchanged when this throws. */
  decrypt(fromBareJid: string, encryptedEl: Element): Promise<OmemoDecryptResult> {
    return this.#serial(async () => {
      const msg = decodeEncrypted(encryptedEl);
      const own = this.deviceId;
      const k = msg.keys.find((x) => x.rid === own);
      if (!k) throw new NotForThisDeviceError(`message has no key for device ${own}`);
      if (fromBareJid === this.ownJid && msg.sid === own) {
        throw new OmemoProtocolError("message claims to be from our own device");
      }
      // A SignalMessage's ratchet step may reach the disk after we return (losing it in a crash only lets the old
      // chain read the same message once more); a PreKeySignalMessage (new session, one-time prekey spent) may not.
      let fromPreKeyMessage = true;
      const result = await this.store.transaction(async () => {
        const addr = new SignalProtocolAddress(fromBareJid, msg.sid);
        const cipher = new SessionCipher(this.store, addr);
        let blobBuf: ArrayBuffer;
        let preKeyUsed = false;
        const isPreKey = k.preKey || (!this.store.hasSession(fromBareJid, msg.sid) && k.data[0] === 0x33 &&
          (() => {
            try {
              return parsePreKeyMessage(k.data).identityKey !== undefined;
            } catch {
              return false;
            }
          })());
        if (isPreKey) {
          const p = parsePreKeyMessage(k.data);
          if (!p.preKeyId) {
            // absent, or 0 as written by libsignal-protocol-typescript when no one-time prekey was used
            throw new OmemoProtocolError("PreKeySignalMessage without one-time prekey id refused");
          }
          if (!p.identityKey) throw new OmemoProtocolError("PreKeySignalMessage without identity key");
          const had = this.store.isPreKeyPublished(p.preKeyId);
          await this.store.rememberIdentity(fromBareJid, msg.sid, p.identityKey);
          try {
            blobBuf = await cipher.decryptPreKeyWhisperMessage(ab(k.data));
          } catch (e) {
            throw new OmemoDecryptionError(`cannot decrypt PreKeySignalMessage: ${(e as Error).message}`, {
              cause: e,
            });
          }
          preKeyUsed = had && !this.store.isPreKeyPublished(p.preKeyId);
        } else {
          fromPreKeyMessage = false;
          if (!this.store.hasSession(fromBareJid, msg.sid)) {
            throw new OmemoDecryptionError(`no session with ${fromBareJid}/${msg.sid}`);
          }
          try {
            blobBuf = await cipher.decryptWhisperMessage(ab(k.data));
          } catch (e) {
            throw new OmemoDecryptionError(`cannot decrypt SignalMessage: ${(e as Error).message}`, {
              cause: e,
            });
          }
        }
        const blob = new Uint8Array(blobBuf);
        const ident = this.store.getIdentity(fromBareJid, msg.sid);
        if (!ident) throw new OmemoDecryptionError("no identity recorded for sender");
        if (this.requireTrusted && ident.trust === "untrusted") {
          throw new UntrustedDeviceError(`device ${fromBareJid}/${msg.sid} is not trusted`);
        }
        let plaintext: string | null = null;
        let key: Uint8Array;
        if (msg.payload) {
          let ctTag: Uint8Array;
          if (blob.length >= 32) {
            key = blob.slice(0, 16);
            ctTag = new Uint8Array(msg.payload.length + blob.length - 16);
            ctTag.set(msg.payload);
            ctTag.set(blob.slice(16), msg.payload.length);
          } else if (blob.length === 16) {
            // legacy: tag appended to payload
            key = blob.slice();
            ctTag = msg.payload;
          } else {
            throw new OmemoDecryptionError(`bad key blob length ${blob.length}`);
          }
          let pt: Uint8Array;
          try {
            pt = await aesGcmDecrypt(key, msg.iv, ctTag);
          } catch (e) {
            throw new OmemoDecryptionError("payload authentication failed", { cause: e });
          }
          plaintext = new TextDecoder("utf-8", { fatal: false }).decode(pt);
        } else {
          key = blob;
        }
        if (preKeyUsed) await this.#topUpPreKeys();
        const trust: TrustState = ident.trust;
        return {
          plaintext,
          key,
          iv: msg.iv,
          senderDeviceId: msg.sid,
          identityFingerprint: formatFingerprint(fromBase64Key(ident.identityKey)),
          trust,
          preKeyUsed,
        };
      }, { deferWrite: () => !fromPreKeyMessage });
      // The used prekey leaves the public bundle soon, without holding up this or the next decryption (a burst of
      // new sessions then costs one or two publishes, not one each).
      if (result.preKeyUsed) this.#republishBundleSoon();
      return result;
    });
  }

  /** Device identities known for a JID with fingerprints and trust. */
  listDevices(jid: string): KnownDevice[] {
    return knownDevices(this.store, jid);
  }

  /** Set trust for the device(s) of `jid` whose identity has `fingerprint` (spaces/case ignored). */
  setTrust(jid: string, fingerprint: string, trust: "verified" | "untrusted"): Promise<void> {
    return this.#serial(async () => {
      await setTrustByFingerprint(this.store, jid, fingerprint, trust);
    });
  }
}

/** A device identity we have seen, as {@link OmemoManager.listDevices} reports it. */
export interface KnownDevice {
  /** OMEMO device id. */
  deviceId: number;
  /** Its identity key fingerprint (Conversations/Dino format). */
  fingerprint: string;
  /** The trust our store gives it. */
  trust: TrustState;
}

/** The device identities of `jid` in `store` with fingerprints and trust (no manager needed: works offline). */
export function knownDevices(store: OmemoStore, jid: string): KnownDevice[] {
  return store.listIdentities(jid).map((r) => ({
    deviceId: r.deviceId,
    fingerprint: formatFingerprint(fromBase64Key(r.identityKey)),
    trust: r.trust,
  }));
}

/**
 * Sets `trust` on the device(s) of `jid` in `store` whose identity has `fingerprint` (spaces, colons and case
 * ignored), in one transaction; returns them as they were before. Throws when no known device matches.
 */
export async function setTrustByFingerprint(
  store: OmemoStore,
  jid: string,
  fingerprint: string,
  trust: "verified" | "untrusted",
): Promise<KnownDevice[]> {
  const known = knownDevices(store, jid);
  const hits = known.filter((d) =>
    normalizeOmemoFingerprint(d.fingerprint) === normalizeOmemoFingerprint(fingerprint)
  );
  if (hits.length === 0) {
    throw new Error(`no device of ${jid} with that fingerprint (${known.length} seen)`);
  }
  await store.transaction(async () => {
    for (const h of hits) await store.setIdentityTrust(jid, h.deviceId, trust);
  });
  return hits;
}

function fromBase64Key(s: string): Uint8Array {
  try {
    const bin = atob(s);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    throw new OmemoCodecError("stored identity key unreadable");
  }
}
