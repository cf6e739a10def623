/**
 * Persistent on-disk OMEMO store implementing libsignal's `StorageType`.
 *
 * All state lives in one JSON file (`state.json`) inside a private directory
 * (0700), written atomically (temp file in same dir, fsync, rename, fsync dir)
 * with mode 0600, one write at a time (a write not yet begun covers every change
 * made until it begins). A change whose loss in a crash is harmless (a decrypted
 * SignalMessage's ratchet step) may wait up to {@link DEFERRED_WRITE_MS} for the
 * next write; everything else is on disk before its operation returns.
 * A lock file prevents two processes sharing a store.
 * A corrupted store raises {@link OmemoStoreCorruptError}; it is never
 * silently replaced by a fresh identity.
 *
 * @module
 */
import type { StorageType } from "@privacyresearch/libsignal-protocol-typescript";
import { fromBase64, toBase64 } from "./codec.ts";

/** A Curve25519 key pair as libsignal stores it (33-byte 0x05-prefixed public key, 32-byte private key). */
export interface OmemoKeyPair {
  /** Public key. */
  pubKey: ArrayBuffer;
  /** Private key. */
  privKey: ArrayBuffer;
}

/** Trust state of a remote device identity. */
export type TrustState = "blind" | "verified" | "untrusted";

/** A remembered remote identity. */
export interface IdentityRecord {
  /** Bare JID of the device's owner. */
  jid: string;
  /** OMEMO device id. */
  deviceId: number;
  /** 33-byte (0x05-prefixed) identity key, base64. */
  identityKey: string;
  /** Trust state of this identity. */
  trust: TrustState;
  /** When the identity was first seen (ms since the epoch). */
  firstSeen: number;
}

interface KeyPairJson {
  pub: string;
  priv: string;
}

interface SignedPreKeyJson extends KeyPairJson {
  signature: string;
  created: number;
}

interface SpentPreKeyJson extends KeyPairJson {
  /** When it was first used (ms since the epoch). */
  spentAt: number;
}

/** Serialized store contents (version 1). */
interface StoreState {
  version: 1;
  identityKeyPair?: KeyPairJson;
  registrationId?: number;
  deviceId?: number;
  preKeys: Record<string, KeyPairJson>;
  /** One-time prekeys already used by a PreKeySignalMessage: no longer published, kept a while (see
   * {@link SPENT_PREKEY_RETENTION_MS}) for a second sender that picked the same one from the same bundle. */
  spentPreKeys?: Record<string, SpentPreKeyJson>;
  nextPreKeyId: number;
  signedPreKeys: Record<string, SignedPreKeyJson>;
  activeSignedPreKeyId?: number;
  sessions: Record<string, string>;
  identities: Record<string, IdentityRecord>;
  deviceLists: Record<string, number[]>;
}

/** The store file exists but cannot be parsed / is inconsistent. */
export class OmemoStoreCorruptError extends Error {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "OmemoStoreCorruptError";
  }
}

/** The store is locked by another process (or another open instance). */
export class OmemoStoreLockedError extends Error {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "OmemoStoreLockedError";
  }
}

function emptyState(): StoreState {
  return {
    version: 1,
    preKeys: {},
    nextPreKeyId: 1,
    signedPreKeys: {},
    sessions: {},
    identities: {},
    deviceLists: {},
  };
}

function ab(u: Uint8Array): ArrayBuffer {
  return u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength) as ArrayBuffer;
}
const enc = (b: ArrayBuffer) => toBase64(new Uint8Array(b));
const dec = (s: string) => ab(fromBase64(s));
const kpToJson = (k: OmemoKeyPair): KeyPairJson => ({ pub: enc(k.pubKey), priv: enc(k.privKey) });
const kpFromJson = (k: KeyPairJson): OmemoKeyPair => ({ pubKey: dec(k.pub), privKey: dec(k.priv) });

function validate(s: unknown): StoreState {
  const st = s as StoreState;
  const isObj = (o: unknown) => typeof o === "object" && o !== null && !Array.isArray(o);
  if (!isObj(st) || st.version !== 1) throw new OmemoStoreCorruptError("store: unknown or missing version");
  for (const k of ["preKeys", "signedPreKeys", "sessions", "identities", "deviceLists"] as const) {
    if (!isObj(st[k])) throw new OmemoStoreCorruptError(`store: field ${k} missing or invalid`);
  }
  if (st.spentPreKeys !== undefined && !isObj(st.spentPreKeys)) {
    throw new OmemoStoreCorruptError("store: field spentPreKeys invalid");
  }
  if (typeof st.nextPreKeyId !== "number") throw new OmemoStoreCorruptError("store: nextPreKeyId invalid");
  const hasIk = st.identityKeyPair !== undefined;
  if (hasIk !== (st.deviceId !== undefined) || hasIk !== (st.registrationId !== undefined)) {
    throw new OmemoStoreCorruptError("store: identity / device id / registration id partially present");
  }
  try {
    if (st.identityKeyPair) kpFromJson(st.identityKeyPair);
  } catch {
    throw new OmemoStoreCorruptError("store: identity key pair unreadable");
  }
  return st;
}

/** Split a libsignal address string `jid.deviceId`. */
export function splitAddress(addr: string): { jid: string; deviceId: number } {
  const i = addr.lastIndexOf(".");
  return { jid: addr.slice(0, i), deviceId: Number(addr.slice(i + 1)) };
}

/** Options for {@link OmemoStore.open}. */
export interface OmemoStoreOptions {
  /** Take over a lock file whose owner process no longer exists (default true). */
  breakStaleLock?: boolean;
}

const openDirs = new Set<string>();

/** How long a used one-time prekey still decrypts a PreKeySignalMessage (see {@link OmemoStore.removePreKey}). */
export const SPENT_PREKEY_RETENTION_MS = 60 * 60_000;
/** At most this many used one-time prekeys are kept (the newest). */
export const SPENT_PREKEYS_MAX = 100;

/** The longest a deferred change (see {@link OmemoStore.transaction}) stays in memory only. */
export const DEFERRED_WRITE_MS = 250;

/**
 * File-backed Signal/OMEMO store. Use {@link OmemoStore.open}; call {@link OmemoStore.close} when done.
 */
export class OmemoStore {
  #dir: string;
  #state: StoreState;
  #txDepth = 0;
  #closed = false;

  private constructor(dir: string, state: StoreState) {
    this.#dir = dir;
    this.#state = state;
  }

  /** Directory of this store. */
  get dir(): string {
    return this.#dir;
  }

  /** Open (creating if needed) a store directory and take its lock. */
  static async open(dir: string, opts: OmemoStoreOptions = {}): Promise<OmemoStore> {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.chmod(dir, 0o700);
    const real = await Deno.realPath(dir);
    if (openDirs.has(real)) throw new OmemoStoreLockedError(`store ${real} is already open in this process`);
    await acquireLock(real, opts.breakStaleLock ?? true);
    openDirs.add(real);
    try {
      // Temp files of writes interrupted by a crash (copies of the key material): we hold the lock, remove them.
      for await (const e of Deno.readDir(real)) {
        if (e.isFile && /^\.state\.json\..*\.tmp$/.test(e.name)) await Deno.remove(`${real}/${e.name}`);
      }
      let text: string | undefined;
      try {
        text = await Deno.readTextFile(`${real}/state.json`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      let state: StoreState;
      if (text === undefined) {
        state = emptyState();
      } else {
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          throw new OmemoStoreCorruptError(
            `store ${real}/state.json is not valid JSON (refusing to create new identity)`,
          );
        }
        state = validate(parsed);
      }
      const s = new OmemoStore(real, state);
      if (text === undefined) await s.#writeSoon();
      return s;
    } catch (e) {
      openDirs.delete(real);
      await Deno.remove(`${real}/lock`).catch(() => {});
      throw e;
    }
  }

  /**
   * Release the lock, after any deferred write has reached the disk. The instance must not be used afterwards.
   * Throws (with the lock released) when the last write failed: the newest state was not saved.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    let failed: unknown;
    try {
      await this.flush();
    } catch (e) {
      failed = e;
    }
    this.#closed = true;
    openDirs.delete(this.#dir);
    await Deno.remove(`${this.#dir}/lock`).catch(() => {});
    if (failed) throw failed;
  }

  /** Resolves once every change made so far is on disk; rejects when the newest write failed. */
  async flush(): Promise<void> {
    if (this.#deferredTimer !== undefined || this.#deferredError) {
      // A failed deferred write is written again in full: nothing is lost that a later write can save.
      this.#deferredError = undefined;
      await this.#writeSoon();
    }
    await this.#writing;
  }

  #writing: Promise<void> = Promise.resolve();
  #queued?: Promise<void>;
  #deferredTimer?: ReturnType<typeof setTimeout>;
  #deferredError?: unknown;

  /**
   * Writes the state after the write in progress, if any. Writes never overlap (two renames racing could leave the
   * older state on disk), and one not yet begun also covers every change made until it begins: it serializes the
   * state when it starts.
   */
  #writeSoon(): Promise<void> {
    if (this.#deferredTimer !== undefined) {
      clearTimeout(this.#deferredTimer); // the write queued here covers the deferred change
      this.#deferredTimer = undefined;
    }
    if (this.#queued) return this.#queued;
    const p = this.#writing.catch(() => {}).then(() => {
      this.#queued = undefined;
      return this.#persist();
    });
    this.#queued = p;
    this.#writing = p;
    p.then(() => this.#deferredError = undefined, () => {});
    return p;
  }

  /** A change that may reach the disk later: with the next write, or after {@link DEFERRED_WRITE_MS} at the latest. */
  #writeLater(): void {
    if (this.#queued || this.#deferredTimer !== undefined) return;
    const timer = setTimeout(() => {
      this.#deferredTimer = undefined;
      this.#writeSoon().catch((e) => this.#deferredError = e);
    }, DEFERRED_WRITE_MS);
    Deno.unrefTimer(timer as unknown as number); // a pending deferred write does not keep the process alive
    this.#deferredTimer = timer;
  }

  async #persist(): Promise<void> {
    if (this.#closed) throw new Error("store is closed");
    const data = new TextEncoder().encode(JSON.stringify(this.#state));
    const tmp = `${this.#dir}/.state.json.${crypto.randomUUID()}.tmp`;
    // Created 0600 (umask can only narrow it). Every step is an async op: creating and renaming files costs ~0.1–0.2
    // ms of kernel time each on ext4, better spent on another thread than on the event loop.
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    try {
      await Deno.rename(tmp, `${this.#dir}/state.json`);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    try {
      const d = await Deno.open(this.#dir, { read: true });
      try {
        await d.sync();
      } finally {
        d.close();
      }
    } catch {
      // directory fsync unsupported on this platform
    }
  }

  async #changed(): Promise<void> {
    if (this.#txDepth === 0) await this.#writeSoon();
  }

  /**
   * Run `fn` atomically: if it throws, in-memory state is rolled back and nothing is written;
   * otherwise the state is persisted once at the end. Callers must serialize transactions.
   *
   * `deferWrite` (asked once `fn` has succeeded) returns before the write reaches the disk: the change goes with
   * the next write, or is written {@link DEFERRED_WRITE_MS} later at the latest (never overlapping another write);
   * {@link flush} / {@link close} write it at once. Only for changes whose loss in a crash harms nothing: a decrypted
   * SignalMessage (lost, the old chain could read the same message once more). Never for anything whose result
   * leaves the process (an encryption: reusing a message key after a crash) or that consumes a one-time prekey.
   * A deferred write that fails is retried by the next write; {@link flush} reports it. During a call this halves
   * the writes: the decryption rides along with the next encryption's write.
   */
  async transaction<T>(fn: () => Promise<T>, opts: { deferWrite?: () => boolean } = {}): Promise<T> {
    if (this.#txDepth > 0) return await fn();
    const snapshot = shallowSnapshot(this.#state);
    this.#txDepth++;
    try {
      const r = await fn();
      this.#txDepth--;
      if (opts.deferWrite?.()) this.#writeLater();
      else await this.#writeSoon();
      return r;
    } catch (e) {
      if (this.#txDepth > 0) this.#txDepth--;
      this.#state = snapshot;
      throw e;
    }
  }

  // ------------------------------------------------------------ own identity

  /** Our device id, if an identity exists. */
  getDeviceId(): number | undefined {
    return this.#state.deviceId;
  }

  /** True when identity, registration id and device id are present. */
  hasIdentity(): boolean {
    return this.#state.identityKeyPair !== undefined;
  }

  /** Store identity key pair, registration id and device id together. */
  async setIdentity(kp: OmemoKeyPair, registrationId: number, deviceId: number): Promise<void> {
    if (this.#state.identityKeyPair) throw new Error("store already has an identity");
    this.#state.identityKeyPair = kpToJson(kp);
    this.#state.registrationId = registrationId;
    this.#state.deviceId = deviceId;
    await this.#changed();
  }

  /** libsignal: our identity key pair. */
  getIdentityKeyPair(): Promise<OmemoKeyPair | undefined> {
    const k = this.#state.identityKeyPair;
    return Promise.resolve(k ? kpFromJson(k) : undefined);
  }

  /** libsignal: our registration id. */
  getLocalRegistrationId(): Promise<number | undefined> {
    return Promise.resolve(this.#state.registrationId);
  }

  // ------------------------------------------------------------ prekeys

  /** libsignal: load one-time prekey (a published one, or one spent less than
   * {@link SPENT_PREKEY_RETENTION_MS} ago). */
  loadPreKey(keyId: string | number): Promise<OmemoKeyPair | undefined> {
    const k = this.#state.preKeys[String(keyId)];
    if (k) return Promise.resolve(kpFromJson(k));
    const spent = this.#state.spentPreKeys?.[String(keyId)];
    const fresh = spent && Date.now() - spent.spentAt < SPENT_PREKEY_RETENTION_MS;
    return Promise.resolve(fresh ? kpFromJson(spent) : undefined);
  }

  /** The one-time prekey is in our published bundle (not spent). */
  isPreKeyPublished(keyId: string | number): boolean {
    return this.#state.preKeys[String(keyId)] !== undefined;
  }

  /** libsignal: store one-time prekey. */
  async storePreKey(keyId: number | string, keyPair: OmemoKeyPair): Promise<void> {
    this.#state.preKeys[String(keyId)] = kpToJson(keyPair);
    if (Number(keyId) >= this.#state.nextPreKeyId) this.#state.nextPreKeyId = Number(keyId) + 1;
    await this.#changed();
  }

  /**
   * libsignal: a one-time prekey was consumed. It leaves the published set at once (the bundle is republished
   * without it) but is kept {@link SPENT_PREKEY_RETENTION_MS}: every sender takes its prekey at random from the
   * same public bundle, so two senders starting sessions at once often pick the same one (50 new callers among
   * 100 prekeys: ~12 collisions), and deleting it at the first use made the second sender's messages
   * undecryptable ("Bad MAC"). The cost: that private key lives up to the retention longer.
   */
  async removePreKey(keyId: number | string): Promise<void> {
    const id = String(keyId);
    const k = this.#state.preKeys[id];
    const now = Date.now();
    const spent = { ...this.#state.spentPreKeys };
    if (k) spent[id] = { ...k, spentAt: now };
    // Drop the expired ones, and the oldest beyond the cap.
    const kept = Object.entries(spent)
      .filter(([, v]) => now - v.spentAt < SPENT_PREKEY_RETENTION_MS)
      .sort((a, b) => b[1].spentAt - a[1].spentAt)
      .slice(0, SPENT_PREKEYS_MAX);
    this.#state.spentPreKeys = Object.fromEntries(kept);
    delete this.#state.preKeys[id];
    await this.#changed();
  }

  /** Allocate the next unused prekey id (1..2^24 wrap-around like libsignal's Medium). */
  allocatePreKeyId(): number {
    let id = this.#state.nextPreKeyId;
    if (id > 0xffffff) id = 1;
    while (this.#state.preKeys[String(id)] || this.#state.spentPreKeys?.[String(id)]) {
      id = id >= 0xffffff ? 1 : id + 1;
    }
    this.#state.nextPreKeyId = id + 1;
    return id;
  }

  /** Public parts of all current one-time prekeys. */
  listPreKeys(): { id: number; publicKey: Uint8Array }[] {
    return Object.entries(this.#state.preKeys).map(([id, k]) => ({
      id: Number(id),
      publicKey: fromBase64(k.pub),
    })).sort((a, b) => a.id - b.id);
  }

  // ------------------------------------------------------------ signed prekeys

  /** libsignal: load signed prekey. */
  loadSignedPreKey(keyId: number | string): Promise<OmemoKeyPair | undefined> {
    const k = this.#state.signedPreKeys[String(keyId)];
    return Promise.resolve(k ? kpFromJson(k) : undefined);
  }

  /** libsignal: store signed prekey (without signature; prefer {@link storeSignedPreKeyWithSignature}). */
  async storeSignedPreKey(keyId: number | string, keyPair: OmemoKeyPair): Promise<void> {
    const old = this.#state.signedPreKeys[String(keyId)];
    this.#state.signedPreKeys[String(keyId)] = {
      ...kpToJson(keyPair),
      signature: old?.signature ?? "",
      created: Date.now(),
    };
    await this.#changed();
  }

  /** Store a signed prekey with its signature and make it the active one. */
  async storeSignedPreKeyWithSignature(
    keyId: number,
    keyPair: OmemoKeyPair,
    signature: ArrayBuffer,
  ): Promise<void> {
    this.#state.signedPreKeys[String(keyId)] = {
      ...kpToJson(keyPair),
      signature: enc(signature),
      created: Date.now(),
    };
    this.#state.activeSignedPreKeyId = keyId;
    await this.#changed();
  }

  /** Active signed prekey (public key + signature). */
  getActiveSignedPreKey(): { id: number; publicKey: Uint8Array; signature: Uint8Array } | undefined {
    const id = this.#state.activeSignedPreKeyId;
    if (id === undefined) return undefined;
    const k = this.#state.signedPreKeys[String(id)];
    if (!k) return undefined;
    return { id, publicKey: fromBase64(k.pub), signature: fromBase64(k.signature) };
  }

  /** libsignal: remove signed prekey. */
  async removeSignedPreKey(keyId: number | string): Promise<void> {
    delete this.#state.signedPreKeys[String(keyId)];
    await this.#changed();
  }

  // ------------------------------------------------------------ sessions

  /** libsignal: load serialized session record. */
  loadSession(encodedAddress: string): Promise<string | undefined> {
    return Promise.resolve(this.#state.sessions[encodedAddress]);
  }

  /** libsignal: store serialized session record. */
  async storeSession(encodedAddress: string, record: string): Promise<void> {
    this.#state.sessions[encodedAddress] = record;
    await this.#changed();
  }

  /** Whether a session record exists for `jid.deviceId`. */
  hasSession(jid: string, deviceId: number): boolean {
    return this.#state.sessions[`${jid}.${deviceId}`] !== undefined;
  }

  /** Delete session for a device. */
  async removeSession(jid: string, deviceId: number): Promise<void> {
    delete this.#state.sessions[`${jid}.${deviceId}`];
    await this.#changed();
  }

  // ------------------------------------------------------------ identities / trust

  /**
   * libsignal: identity trust check. Always true here: OMEMO trust decisions are
   * made by the manager per device (see {@link OmemoStore.getIdentity}).
   */
  isTrustedIdentity(_identifier: string, _identityKey: ArrayBuffer, _direction: number): Promise<boolean> {
    return Promise.resolve(true);
  }

  /**
   * Trust policy for newly seen device identities: `"btbv"` (blind trust before verification, default)
   * or `"manual"` (new identities start `untrusted`).
   */
  trustPolicy: "btbv" | "manual" = "btbv";

  /** Default trust for a new device of `jid` (BTBV: `blind` until some device of the JID is verified). */
  defaultTrustFor(jid: string): TrustState {
    if (this.trustPolicy === "manual") return "untrusted";
    for (const r of Object.values(this.#state.identities)) {
      if (r.jid === jid && r.trust === "verified") return "untrusted";
    }
    return "blind";
  }

  /** libsignal: remember a remote identity key; returns true if it replaced a different key. */
  async saveIdentity(encodedAddress: string, publicKey: ArrayBuffer): Promise<boolean> {
    const { jid, deviceId } = splitAddress(encodedAddress);
    return await this.rememberIdentity(jid, deviceId, new Uint8Array(publicKey));
  }

  /** Remember an identity; a new or changed key gets the default (BTBV) trust. Returns true if it replaced a different key. */
  async rememberIdentity(jid: string, deviceId: number, identityKey: Uint8Array): Promise<boolean> {
    const addr = `${jid}.${deviceId}`;
    const b64 = toBase64(identityKey);
    const old = this.#state.identities[addr];
    if (old && old.identityKey === b64) return false;
    this.#state.identities[addr] = {
      jid,
      deviceId,
      identityKey: b64,
      trust: this.defaultTrustFor(jid),
      firstSeen: Date.now(),
    };
    await this.#changed();
    return old !== undefined;
  }

  /** Identity record of a remote device. */
  getIdentity(jid: string, deviceId: number): IdentityRecord | undefined {
    const r = this.#state.identities[`${jid}.${deviceId}`];
    return r ? { ...r } : undefined;
  }

  /** All identity records of a JID. */
  listIdentities(jid: string): IdentityRecord[] {
    return Object.values(this.#state.identities).filter((r) => r.jid === jid).map((r) => ({ ...r }));
  }

  /** Set trust of a device identity. */
  async setIdentityTrust(jid: string, deviceId: number, trust: TrustState): Promise<void> {
    const r = this.#state.identities[`${jid}.${deviceId}`];
    if (!r) throw new Error(`unknown identity ${jid}/${deviceId}`);
    this.#state.identities[`${jid}.${deviceId}`] = { ...r, trust };
    await this.#changed();
  }

  // ------------------------------------------------------------ device lists

  /** Cached device list of a JID. */
  getDeviceList(jid: string): number[] {
    return [...(this.#state.deviceLists[jid] ?? [])];
  }

  /** Replace the cached device list of a JID. */
  async setDeviceList(jid: string, devices: number[]): Promise<void> {
    this.#state.deviceLists[jid] = [...devices];
    await this.#changed();
  }
}

/**
 * A copy for rolling a transaction back: the records of the state (prekeys, sessions, identities …) are replaced on
 * change and never modified in place, so copying the maps that hold them is enough (a deep clone of every key cost
 * more than the cryptography of a message).
 */
function shallowSnapshot(s: StoreState): StoreState {
  return {
    ...s,
    preKeys: { ...s.preKeys },
    ...(s.spentPreKeys ? { spentPreKeys: { ...s.spentPreKeys } } : {}),
    signedPreKeys: { ...s.signedPreKeys },
    sessions: { ...s.sessions },
    identities: { ...s.identities },
    deviceLists: { ...s.deviceLists },
  };
}

function pidAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return Deno.build.os !== "linux"; // without /proc, assume alive
  }
}

async function acquireLock(dir: string, breakStale: boolean): Promise<void> {
  const path = `${dir}/lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
      try {
        await f.write(new TextEncoder().encode(`${Deno.pid}\n`));
        await f.sync();
      } finally {
        f.close();
      }
      return;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const owner = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      if (breakStale && Number.isInteger(owner) && owner > 0 && !pidAlive(owner)) {
        await Deno.remove(path).catch(() => {});
        continue;
      }
      throw new OmemoStoreLockedError(`store ${dir} is locked by pid ${owner || "?"}`);
    }
  }
  throw new OmemoStoreLockedError(`store ${dir}: could not take lock`);
}

// OmemoStore is libsignal's StorageType (checked here, not declared with `implements`: libsignal's types are not
// part of this module's documented API).
const _isLibsignalStorage: (store: OmemoStore) => StorageType = (store) => store;
void _isLibsignalStorage;
