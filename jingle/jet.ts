/**
 * XEP-0391 Jingle Encrypted Transports with XEP-0396 JET-OMEMO: the `<security/>` element that carries the
 * OMEMO key-transport `<encrypted/>` whose per-device key blob is the AES-128-GCM transport key.
 *
 * Where real clients put it (docs/protocol.md §5): Dino inside `<content>` without `name`; Conversations 2.12
 * inside `<content>` with `name`; newer Conversations directly under `<jingle>` with `name`. We accept all three.
 * We send it inside `<content>` with `name`, plus an identical copy under `<jingle>` for newer Conversations
 * (bot/files.ts; Dino and Conversations 2.12 read only inside `<content>` and ignore it). Pure codec, no I/O.
 * @module
 */
import { badRequest } from "./errors.ts";
import { NS_JET, NS_JINGLE, NS_OMEMO_AXOLOTL } from "./namespaces.ts";
import { cloneElement, el, type Element } from "./xml.ts";

export { NS_JET, NS_JET_OMEMO } from "./namespaces.ts";

/** The only JET cipher deployed (Conversations, Dino): AES-128-GCM, 12-byte IV, tag appended to the stream. */
export const JET_CIPHER_AES128GCM = "urn:xmpp:ciphers:aes-128-gcm-nopadding";

/** A parsed `<security xmlns='urn:xmpp:jingle:jet:0'>`. */
export interface JetSecurity {
  /** The content it applies to, when the sender named it (Dino does not). */
  name?: string;
  /** Cipher URI, verbatim (the caller refuses anything but {@link JET_CIPHER_AES128GCM}). */
  cipher: string;
  /** Envelope type, e.g. `eu.siacs.conversations.axolotl`. */
  type: string;
  /** The envelope, e.g. the OMEMO `<encrypted xmlns='eu.siacs.conversations.axolotl'>` (a detached copy). */
  encrypted: Element;
}

function isSecurity(e: Element): boolean {
  return e.name === "security" && e.getNS() === NS_JET;
}

function parseSecurity(s: Element): JetSecurity {
  const cipher = s.attrs.cipher;
  if (!cipher) badRequest("JET <security/> lacks cipher");
  const type = s.attrs.type;
  if (!type) badRequest("JET <security/> lacks type");
  const envelopes = s.getChildElements().filter((c) => c.name === "encrypted");
  if (envelopes.length === 0) badRequest("JET <security/> lacks the <encrypted/> envelope");
  if (envelopes.length > 1) badRequest("JET <security/> has several <encrypted/> envelopes");
  const out: JetSecurity = { cipher, type, encrypted: cloneElement(envelopes[0]!) };
  if (s.attrs.name !== undefined) out.name = s.attrs.name;
  return out;
}

function pickOne(found: Element[], where: string): Element | undefined {
  if (found.length > 1) badRequest(`several JET <security/> elements ${where}`);
  return found[0];
}

/**
 * Find and parse the JET `<security/>` for content `contentName` of a `<jingle/>`: first inside that
 * `<content>` (its `name`, when present, must be `contentName`), else directly under `<jingle>` (where a
 * `name`, when present, must be `contentName`). Returns undefined when there is none (unencrypted offer);
 * throws {@link JingleProtocolError} when one is present but malformed or ambiguous.
 */
export function findJetSecurity(jingle: Element, contentName: string): JetSecurity | undefined {
  if (jingle.name !== "jingle" || jingle.getNS() !== NS_JINGLE) badRequest("not a <jingle/> element");
  const contents = jingle.getChildElements().filter((c) =>
    c.name === "content" && c.getNS() === NS_JINGLE && c.attrs.name === contentName
  );
  if (contents.length > 1) badRequest(`several <content name='${contentName}'/>`);
  const content = contents[0];
  if (content) {
    const inner = pickOne(content.getChildElements().filter(isSecurity), `in content '${contentName}'`);
    if (inner) {
      const sec = parseSecurity(inner);
      if (sec.name !== undefined && sec.name !== contentName) {
        badRequest(`JET <security name='${sec.name}'/> inside content '${contentName}'`);
      }
      return sec;
    }
  }
  const top = pickOne(
    jingle.getChildElements().filter((c) =>
      isSecurity(c) && (c.attrs.name === undefined || c.attrs.name === contentName)
    ),
    `for content '${contentName}' under <jingle/>`,
  );
  return top ? parseSecurity(top) : undefined;
}

/**
 * Build `<security xmlns='urn:xmpp:jingle:jet:0' name cipher type><encrypted…/></security>` around an OMEMO
 * key-transport envelope (no `<payload>`), for the `<content>` named `contentName`.
 */
export function buildJetSecurity(
  contentName: string,
  encrypted: Element,
  type: string = NS_OMEMO_AXOLOTL,
  cipher: string = JET_CIPHER_AES128GCM,
): Element {
  if (!contentName) badRequest("JET security needs a content name");
  if (encrypted.name !== "encrypted") {
    badRequest(`JET envelope must be <encrypted/>, got <${encrypted.name}/>`);
  }
  return el("security", { xmlns: NS_JET, name: contentName, cipher, type }, cloneElement(encrypted));
}
