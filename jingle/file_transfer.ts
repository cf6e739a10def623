/**
 * XEP-0234 Jingle File Transfer application codec (with XEP-0300 hashes): the `<description>` of a file offer,
 * and the `<checksum>` / `<received>` session-info payloads. Pure: Element ⇄ typed object, no I/O.
 *
 * Everything parsed here is attacker-controlled. Numbers are checked strictly (a `size` that is negative,
 * fractional or beyond 2^53 is refused); the file name is passed through untouched — making it safe to use on
 * disk is `transfer/download.ts`'s job (`safeFileName`).
 * @module
 */
import { badRequest } from "./errors.ts";
import { NS_HASHES, NS_JFT, NS_JFT_3, NS_JFT_4, NS_OMEMO_AXOLOTL } from "./namespaces.ts";
import { cloneElement, el, type Element } from "./xml.ts";

export { NS_HASHES, NS_JFT, NS_JFT_3, NS_JFT_4 } from "./namespaces.ts";

/** File-transfer namespaces we accept on input (Conversations falls back to :4 and :3). */
export const JFT_NAMESPACES: readonly string[] = [NS_JFT, NS_JFT_4, NS_JFT_3];

/** Is `ns` one of the accepted XEP-0234 namespaces? */
export function isJftNamespace(ns: string | undefined): boolean {
  return ns !== undefined && JFT_NAMESPACES.includes(ns);
}

/** An XEP-0300 hash: `algo` as sent (e.g. `sha-256`), `value` base64. */
export interface FileHash {
  /** Hash function name as in the XEP-0300 registry, e.g. `sha-256`. */
  algo: string;
  /** base64 */
  value: string;
}

/** The `<file>` of an offer. Absent fields were absent on the wire. */
export interface FileOffer {
  /** File name offered by the sender (untrusted: never used as a path as is). */
  name?: string;
  /** Bytes of the (plaintext) file. */
  size?: number;
  /** MIME type, e.g. `image/jpeg`. */
  mediaType?: string;
  /** XEP-0082 date-time, verbatim. */
  date?: string;
  /** Free-text description. */
  desc?: string;
  /** XEP-0300 hashes of the plaintext file (may be empty; then sent later in a `<checksum>`). */
  hashes: FileHash[];
  /** XEP-0234 `<range>`: a part of the file (offset and length in bytes). */
  range?: { offset?: number; length?: number };
  /**
   * Legacy Conversations encryption (docs/protocol.md §5.2): the OMEMO key-transport
   * `<encrypted xmlns='eu.siacs.conversations.axolotl'>` put *inside* `<file>` when the peer lacks JET-OMEMO.
   * Then `size` is the size on the wire (plaintext + 16-byte GCM tag), not the plaintext size. A detached
   * copy; never built (we only send JET).
   */
  legacyEncrypted?: Element;
}

/** Parsed `<checksum>` session-info payload. */
export interface FileChecksum {
  /** Creator of the content the checksum is for. */
  creator: string;
  /** Name of the content the checksum is for. */
  name: string;
  /** Hashes of the file. */
  hashes: FileHash[];
}

/** Parsed `<received>` session-info payload. */
export interface FileReceived {
  /** Creator of the content that was received. */
  creator: string;
  /** Name of the content that was received. */
  name: string;
}

// Hash algorithm names are short tokens (XEP-0300 registry: sha-1, sha-256, blake2b-256, …).
const ALGO_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict non-negative safe integer from text ("0", "300000"); anything else throws. */
function parseSafeInt(text: string, what: string): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) badRequest(`${what} is not a non-negative integer: '${t.slice(0, 40)}'`);
  const n = Number(t);
  if (t.length > 16 || !Number.isSafeInteger(n)) badRequest(`${what} is too large: ${t.slice(0, 40)}`);
  return n;
}

function checkSafeInt(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < 0) badRequest(`${what} must be a non-negative safe integer, got ${n}`);
  return n;
}

/** Only child element `name` in `ns` (throws if repeated). */
function single(parent: Element, name: string, ns: string): Element | undefined {
  const found = parent.getChildElements().filter((c) => c.name === name && c.getNS() === ns);
  if (found.length > 1) badRequest(`<${parent.name}/> has ${found.length} <${name}/> children`);
  return found[0];
}

/** Parse one `<hash xmlns='urn:xmpp:hashes:2' algo>`. */
export function parseHash(h: Element): FileHash {
  const algo = h.attrs.algo;
  if (!algo || !ALGO_RE.test(algo)) badRequest(`<hash/> has a missing or invalid algo`);
  const value = h.getText().replace(/\s+/g, "");
  if (value === "" || !BASE64_RE.test(value)) badRequest(`<hash algo='${algo}'/> value is not base64`);
  return { algo, value };
}

/** Build one `<hash xmlns='urn:xmpp:hashes:2' algo>`. */
export function buildHash(h: FileHash): Element {
  if (!ALGO_RE.test(h.algo)) badRequest(`invalid hash algo '${h.algo}'`);
  if (h.value === "" || !BASE64_RE.test(h.value)) badRequest(`hash value is not base64`);
  return el("hash", { xmlns: NS_HASHES, algo: h.algo }, h.value);
}

/** The `<hash/>` children (urn:xmpp:hashes:2) of a `<file/>`; hashes in other namespaces are ignored. */
function parseHashes(file: Element): FileHash[] {
  return file.getChildElements().filter((c) => c.name === "hash" && c.getNS() === NS_HASHES).map(parseHash);
}

function parseFile(file: Element, ns: string): FileOffer {
  const offer: FileOffer = { hashes: parseHashes(file) };
  const text = (name: string): string | undefined => {
    const c = single(file, name, ns);
    return c === undefined ? undefined : c.getText();
  };
  const name = text("name");
  if (name !== undefined) offer.name = name;
  const size = text("size");
  if (size !== undefined) offer.size = parseSafeInt(size, "<size/>");
  const mediaType = text("media-type");
  if (mediaType !== undefined) offer.mediaType = mediaType.trim();
  const date = text("date");
  if (date !== undefined) offer.date = date.trim();
  const desc = text("desc");
  if (desc !== undefined) offer.desc = desc;
  const legacy = single(file, "encrypted", NS_OMEMO_AXOLOTL);
  if (legacy) offer.legacyEncrypted = cloneElement(legacy);
  const range = single(file, "range", ns);
  if (range) {
    offer.range = {};
    if (range.attrs.offset !== undefined) {
      offer.range.offset = parseSafeInt(range.attrs.offset, "range offset");
    }
    if (range.attrs.length !== undefined) {
      offer.range.length = parseSafeInt(range.attrs.length, "range length");
    }
  }
  return offer;
}

/**
 * Parse a `<description xmlns='urn:xmpp:jingle:apps:file-transfer:5|4|3'><file>…</file></description>`.
 * Throws {@link JingleProtocolError} (bad-request) on a wrong element, no/several `<file>`, a bad size/range or
 * a malformed hash.
 */
export function parseFileDescription(description: Element): FileOffer {
  const ns = description.getNS();
  if (description.name !== "description" || !isJftNamespace(ns)) {
    badRequest(`not a file-transfer <description/> (${description.name} ${ns})`);
  }
  const file = single(description, "file", ns!);
  if (!file) badRequest("file-transfer <description/> without <file/>");
  return parseFile(file, ns!);
}

function buildFile(offer: FileOffer): Element {
  const file = el("file", {});
  const add = (name: string, v: string | number | undefined) => {
    if (v !== undefined) file.append(el(name, {}, String(v)));
  };
  add("date", offer.date);
  add("desc", offer.desc);
  add("media-type", offer.mediaType);
  add("name", offer.name);
  add("size", offer.size === undefined ? undefined : checkSafeInt(offer.size, "size"));
  for (const h of offer.hashes) file.append(buildHash(h));
  if (offer.range) {
    const { offset, length } = offer.range;
    file.append(el("range", {
      offset: offset === undefined ? undefined : checkSafeInt(offset, "range offset"),
      length: length === undefined ? undefined : checkSafeInt(length, "range length"),
    }));
  }
  return file;
}

/**
 * Build `<description xmlns=ns><file><date/><desc/><media-type/><name/><size/><hash/>…</file></description>`
 * (the order Conversations and Dino use); absent fields are omitted.
 */
export function buildFileDescription(offer: FileOffer, ns: string = NS_JFT): Element {
  if (!isJftNamespace(ns)) badRequest(`not a file-transfer namespace: ${ns}`);
  return el("description", { xmlns: ns }, buildFile(offer));
}

function parseCreatorName(e: Element): FileReceived {
  const name = e.attrs.name;
  if (!name) badRequest(`<${e.name}/> lacks the content name`);
  // Conversations and Dino always send creator; tolerate its absence as the XEP default.
  const creator = e.attrs.creator ?? "initiator";
  if (creator !== "initiator" && creator !== "responder") badRequest(`<${e.name}/> has invalid creator`);
  return { creator, name };
}

/** Parse a `<checksum xmlns=JFT creator name><file><hash/>…</file></checksum>` session-info payload. */
export function parseChecksum(e: Element): FileChecksum {
  const ns = e.getNS();
  if (e.name !== "checksum" || !isJftNamespace(ns)) badRequest(`not a file-transfer <checksum/>`);
  const { creator, name } = parseCreatorName(e);
  const file = single(e, "file", ns!);
  if (!file) badRequest("<checksum/> without <file/>");
  const hashes = parseHashes(file);
  if (hashes.length === 0) badRequest("<checksum/> without any <hash/>");
  return { creator, name, hashes };
}

/** Build the `<checksum>` session-info payload sent after the last byte (Conversations: sha-1, we: sha-256). */
export function buildChecksum(
  contentName: string,
  hashes: FileHash[],
  creator: string = "initiator",
  ns: string = NS_JFT,
): Element {
  if (hashes.length === 0) badRequest("checksum without hashes");
  return el(
    "checksum",
    { xmlns: ns, creator, name: contentName },
    el("file", {}, ...hashes.map(buildHash)),
  );
}

/** Parse a `<received xmlns=JFT creator name/>` session-info payload. */
export function parseReceived(e: Element): FileReceived {
  if (e.name !== "received" || !isJftNamespace(e.getNS())) badRequest(`not a file-transfer <received/>`);
  return parseCreatorName(e);
}

/** Build `<received xmlns=JFT creator name/>`. */
export function buildReceived(
  contentName: string,
  creator: string = "initiator",
  ns: string = NS_JFT,
): Element {
  return el("received", { xmlns: ns, creator, name: contentName });
}

/** Is this session-info payload a file-transfer `<checksum/>`? */
export function isChecksum(e: Element): boolean {
  return e.name === "checksum" && isJftNamespace(e.getNS());
}

/** Is this session-info payload a file-transfer `<received/>`? */
export function isReceived(e: Element): boolean {
  return e.name === "received" && isJftNamespace(e.getNS());
}
