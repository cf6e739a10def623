/** XEP-0176 ICE-UDP transport codec with XEP-0320 and OMEMO-verified DTLS fingerprints. Pure. */
import { badRequest } from "./errors.ts";
import { NS_DTLS, NS_ICE_UDP, NS_OMEMO_AXOLOTL, NS_OMEMO_DTLS } from "./namespaces.ts";
import { childNS, cloneElement, el, type Element, intAttr, reqAttr } from "./xml.ts";

/** ICE candidate type. */
export type CandidateType = "host" | "srflx" | "prflx" | "relay";

/** XEP-0176 `<candidate/>`. */
export interface IceCandidate {
  /** 1 = RTP, 2 = RTCP. */
  component: number;
  /** ICE foundation. */
  foundation: string;
  /** Candidate generation. */
  generation?: number;
  /** Candidate id (optional in both clients). */
  id?: string;
  /** Address. */
  ip: string;
  /** UDP port. */
  port: number;
  /** ICE priority. */
  priority: number;
  /** Transport protocol, lower-cased (`udp`). */
  protocol: string;
  /** `host`, `srflx`, `prflx` or `relay`. */
  type: CandidateType;
  /** Related address (srflx/relay). */
  relAddr?: string;
  /** Related port (srflx/relay). */
  relPort?: number;
  /** Network index (Dino). */
  network?: number;
}

/** DTLS setup role. */
export type DtlsSetup = "actpass" | "active" | "passive" | "holdconn";

/** Fingerprint: plain XEP-0320, OMEMO-encrypted draft (opaque `<encrypted/>` for the caller to decrypt), or none. */
export type Fingerprint =
  | { kind: "plain"; hash: string; setup: DtlsSetup; value: string }
  | { kind: "omemo"; hash: string; setup: DtlsSetup; encrypted: Element };

/** Parsed `<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'>`. ufrag/pwd may be absent for stub transports. */
export interface IceUdpTransport {
  /** Discriminator among transport kinds. */
  kind: "ice-udp";
  /** ICE username fragment (absent in stub transports). */
  ufrag?: string;
  /** ICE password (absent in stub transports). */
  pwd?: string;
  /** Candidates carried by this element. */
  candidates: IceCandidate[];
  /** The DTLS fingerprint, plain (XEP-0320) or OMEMO-encrypted. */
  fingerprint?: Fingerprint;
}

const SETUPS: readonly string[] = ["actpass", "active", "passive", "holdconn"];
const TYPES: readonly string[] = ["host", "srflx", "prflx", "relay"];

/** Validate an ICE credential (no whitespace, ICE char set). */
export function validateIceCredential(what: string, v: string | undefined): void {
  if (v === undefined) return;
  if (v === "" || /\s/.test(v)) badRequest(`invalid ICE ${what}: '${v}'`);
}

/** Normalize a fingerprint value to uppercase colon hex (`AB:CD:…`); throws on garbage. */
export function normalizeFingerprint(value: string): string {
  const hex = value.trim().replace(/:/g, "");
  if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) {
    badRequest(`invalid fingerprint value '${value}'`);
  }
  return hex.toUpperCase().match(/../g)!.join(":");
}

function parseSetup(f: Element): DtlsSetup {
  const s = reqAttr(f, "setup");
  if (!SETUPS.includes(s)) badRequest(`invalid DTLS setup '${s}'`);
  return s as DtlsSetup;
}

/** Parse a `<candidate/>`. Required attributes: component, foundation, ip, port, priority, protocol, type. */
export function parseCandidate(c: Element): IceCandidate {
  const type = reqAttr(c, "type");
  if (!TYPES.includes(type)) badRequest(`invalid candidate type '${type}'`);
  const out: IceCandidate = {
    component: intAttr(c, "component", true),
    foundation: reqAttr(c, "foundation"),
    ip: reqAttr(c, "ip"),
    port: intAttr(c, "port", true),
    priority: intAttr(c, "priority", true),
    protocol: reqAttr(c, "protocol").toLowerCase(),
    type: type as CandidateType,
  };
  if (out.port > 65535) badRequest(`candidate port out of range: ${out.port}`);
  if (/\s/.test(out.foundation) || /\s/.test(out.ip)) badRequest("whitespace in candidate attribute");
  const gen = intAttr(c, "generation");
  if (gen !== undefined) out.generation = gen;
  if (c.attrs.id) out.id = c.attrs.id;
  if (c.attrs["rel-addr"]) out.relAddr = c.attrs["rel-addr"];
  const rp = intAttr(c, "rel-port");
  if (rp !== undefined) out.relPort = rp;
  const net = intAttr(c, "network");
  if (net !== undefined) out.network = net;
  return out;
}

/** Serialize a `<candidate/>` (no namespace; inherits ice-udp from the transport). */
export function serializeCandidate(c: IceCandidate): Element {
  return el("candidate", {
    component: c.component,
    foundation: c.foundation,
    generation: c.generation,
    id: c.id,
    ip: c.ip,
    network: c.network,
    port: c.port,
    priority: c.priority,
    protocol: c.protocol,
    "rel-addr": c.relAddr,
    "rel-port": c.relPort,
    type: c.type,
  });
}

/** Parse an ICE-UDP `<transport/>`. Plain and OMEMO fingerprints are both recognised; if both are present,
 * the OMEMO one wins (it is the verified one). */
export function parseIceUdpTransport(e: Element): IceUdpTransport {
  if (e.name !== "transport" || e.getNS() !== NS_ICE_UDP) badRequest("not an ICE-UDP transport");
  const t: IceUdpTransport = { kind: "ice-udp", candidates: [] };
  if (e.attrs.ufrag !== undefined) t.ufrag = e.attrs.ufrag;
  if (e.attrs.pwd !== undefined) t.pwd = e.attrs.pwd;
  validateIceCredential("ufrag", t.ufrag);
  validateIceCredential("pwd", t.pwd);
  for (const c of e.getChildElements()) {
    if (c.name === "candidate" && c.getNS() === NS_ICE_UDP) t.candidates.push(parseCandidate(c));
  }
  const omemo = childNS(e, "fingerprint", NS_OMEMO_DTLS);
  const plain = childNS(e, "fingerprint", NS_DTLS);
  if (omemo) {
    const encrypted = childNS(omemo, "encrypted", NS_OMEMO_AXOLOTL);
    if (!encrypted) badRequest("OMEMO fingerprint without <encrypted/>");
    t.fingerprint = { kind: "omemo", hash: reqAttr(omemo, "hash"), setup: parseSetup(omemo), encrypted };
  } else if (plain) {
    t.fingerprint = {
      kind: "plain",
      hash: reqAttr(plain, "hash"),
      setup: parseSetup(plain),
      value: normalizeFingerprint(plain.getText()),
    };
  }
  return t;
}

/** Serialize an ICE-UDP transport (fingerprint is emitted before candidates, as Conversations does). */
export function serializeIceUdpTransport(t: IceUdpTransport): Element {
  validateIceCredential("ufrag", t.ufrag);
  validateIceCredential("pwd", t.pwd);
  const e = el("transport", { xmlns: NS_ICE_UDP, ufrag: t.ufrag, pwd: t.pwd });
  const f = t.fingerprint;
  if (f?.kind === "plain") {
    e.append(
      el("fingerprint", { xmlns: NS_DTLS, hash: f.hash, setup: f.setup }, normalizeFingerprint(f.value)),
    );
  } else if (f?.kind === "omemo") {
    e.append(
      el("fingerprint", { xmlns: NS_OMEMO_DTLS, hash: f.hash, setup: f.setup }, cloneElement(f.encrypted)),
    );
  }
  for (const c of t.candidates) e.append(serializeCandidate(c));
  return e;
}
