/**
 * The `<transport/>` elements of the two bytestream transports used for file transfer: XEP-0260 Jingle SOCKS5
 * Bytestreams (candidates, `candidate-used`, `candidate-error`, `activated`, `proxy-error`) and XEP-0261 Jingle
 * In-Band Bytestreams (`sid`, `block-size`). Pure codec: Element ⇄ {@link FileTransport}, no I/O.
 *
 * Candidates are attacker-controlled: this codec only checks their syntax. Whether connecting to a host is
 * acceptable (loopback, internal addresses) is decided by the connection policy, not here.
 * @module
 */
import { badRequest, JingleProtocolError } from "./errors.ts";
import { NS_JIBB, NS_S5B } from "./namespaces.ts";
import { el, type Element } from "./xml.ts";

export { NS_JIBB, NS_S5B } from "./namespaces.ts";

/** XEP-0260 candidate types. */
export type S5bCandidateType = "direct" | "assisted" | "tunnel" | "proxy";

/** One XEP-0260 `<candidate/>` (a SOCKS5 streamhost). */
export interface S5bCandidate {
  /** Candidate id. */
  cid: string;
  /** Host address of the streamhost. */
  host: string;
  /** Its TCP port. */
  port: number;
  /** JID of the streamhost (a party or the proxy). */
  jid: string;
  /** Priority (higher first). */
  priority: number;
  /** Candidate type. */
  type: S5bCandidateType;
}

/** A parsed file-transfer `<transport/>`. For s5b, at most one of the "report" fields is set per element. */
export type FileTransport =
  | {
    kind: "s5b";
    sid: string;
    mode: "tcp" | "udp";
    dstaddr?: string;
    candidates: S5bCandidate[];
    /** transport-info: the peer connected to our candidate `cid`. */
    candidateUsed?: string;
    /** transport-info: the peer could connect to none of our candidates. */
    candidateError?: boolean;
    /** transport-info: the proxy candidate `cid` has been activated. */
    activated?: string;
    /** transport-info: activating the proxy failed. */
    proxyError?: boolean;
  }
  | { kind: "ibb"; sid: string; blockSize: number };

/** XEP-0260 §2.2 type preferences. */
export const S5B_TYPE_PREFERENCE: Readonly<Record<S5bCandidateType, number>> = {
  direct: 126,
  assisted: 120,
  tunnel: 110,
  proxy: 10,
};

/** XEP-0065 default port, used when a candidate omits `port` (XEP-0260: port is optional). */
export const S5B_DEFAULT_PORT = 1080;

/** XEP-0261 / XEP-0047: block-size is a 16-bit value. */
export const JIBB_MAX_BLOCK_SIZE = 65535;

/** XEP-0260 priority: 2^16 × type preference + local preference (0..65535). */
export function s5bPriority(type: S5bCandidateType, localPreference = 0): number {
  const pref = S5B_TYPE_PREFERENCE[type];
  if (pref === undefined) badRequest(`unknown s5b candidate type '${type}'`);
  if (!Number.isInteger(localPreference) || localPreference < 0 || localPreference > 0xffff) {
    badRequest(`s5b local preference must be 0..65535, got ${localPreference}`);
  }
  return pref * 0x10000 + localPreference;
}

const CANDIDATE_TYPES: readonly string[] = ["direct", "assisted", "tunnel", "proxy"];
// Identifiers and hosts: printable ASCII/Unicode without spaces or controls, bounded (they end up in logs and
// SOCKS5 requests).
const TOKEN_RE = /^[^\s\p{Cc}]{1,255}$/u;
const HOST_RE = /^[^\s\p{Cc}/\\]{1,255}$/u;

function token(e: Element, attr: string, re = TOKEN_RE): string {
  const v = e.attrs[attr];
  if (v === undefined || v === "") badRequest(`<${e.name}/> lacks required attribute '${attr}'`);
  if (!re.test(v)) badRequest(`<${e.name}/> attribute '${attr}' is malformed`);
  return v;
}

function uint(e: Element, attr: string, min: number, max: number, fallback?: number): number {
  const v = e.attrs[attr];
  if (v === undefined || v === "") {
    if (fallback !== undefined) return fallback;
    badRequest(`<${e.name}/> lacks required attribute '${attr}'`);
  }
  if (!/^\d{1,10}$/.test(v)) {
    badRequest(`<${e.name}/> attribute '${attr}' is not an integer: '${v.slice(0, 20)}'`);
  }
  const n = Number(v);
  if (n < min || n > max) badRequest(`<${e.name}/> attribute '${attr}' out of range ${min}..${max}: ${n}`);
  return n;
}

function parseCandidate(c: Element): S5bCandidate {
  const type = c.attrs.type ?? "direct";
  if (!CANDIDATE_TYPES.includes(type)) badRequest(`s5b candidate has unknown type '${type.slice(0, 20)}'`);
  return {
    cid: token(c, "cid"),
    host: token(c, "host", HOST_RE),
    port: uint(c, "port", 1, 65535, S5B_DEFAULT_PORT),
    jid: token(c, "jid"),
    priority: uint(c, "priority", 0, 0xffffffff),
    type: type as S5bCandidateType,
  };
}

function parseS5b(t: Element): FileTransport {
  const sid = token(t, "sid");
  const mode = t.attrs.mode ?? "tcp";
  if (mode !== "tcp" && mode !== "udp") badRequest(`s5b transport has invalid mode '${mode.slice(0, 20)}'`);
  const out: Extract<FileTransport, { kind: "s5b" }> = { kind: "s5b", sid, mode, candidates: [] };
  if (t.attrs.dstaddr !== undefined) out.dstaddr = token(t, "dstaddr");
  const cids = new Set<string>();
  let reports = 0;
  for (const c of t.getChildElements()) {
    if (c.getNS() !== NS_S5B) continue;
    switch (c.name) {
      case "candidate": {
        const cand = parseCandidate(c);
        if (cids.has(cand.cid)) badRequest(`duplicate s5b candidate cid '${cand.cid}'`);
        cids.add(cand.cid);
        out.candidates.push(cand);
        break;
      }
      case "candidate-used":
        out.candidateUsed = token(c, "cid");
        reports++;
        break;
      case "candidate-error":
        out.candidateError = true;
        reports++;
        break;
      case "activated":
        out.activated = token(c, "cid");
        reports++;
        break;
      case "proxy-error":
        out.proxyError = true;
        reports++;
        break;
      default:
        break; // unknown extensions are ignored
    }
  }
  if (reports > 1) {
    badRequest("s5b transport carries more than one of candidate-used/-error, activated, proxy-error");
  }
  if (reports > 0 && out.candidates.length > 0) badRequest("s5b transport mixes candidates and a report");
  return out;
}

function parseIbb(t: Element): FileTransport {
  return {
    kind: "ibb",
    sid: token(t, "sid"),
    blockSize: uint(t, "block-size", 1, JIBB_MAX_BLOCK_SIZE),
  };
}

/**
 * Parse a `<transport xmlns='urn:xmpp:jingle:transports:s5b:1'|'…:ibb:1'>`. Throws JingleProtocolError:
 * bad-request on malformed input, feature-not-implemented on another transport namespace.
 */
export function parseFileTransport(transport: Element): FileTransport {
  if (transport.name !== "transport") badRequest(`not a <transport/>: <${transport.name}/>`);
  const ns = transport.getNS();
  if (ns === NS_S5B) return parseS5b(transport);
  if (ns === NS_JIBB) return parseIbb(transport);
  throw new JingleProtocolError(`unsupported file transport '${ns}'`, "feature-not-implemented");
}

/** Build the `<transport/>` for a {@link FileTransport}; refuses values its own parser would refuse. */
export function buildFileTransport(t: FileTransport): Element {
  let out: Element;
  if (t.kind === "ibb") {
    out = el("transport", { xmlns: NS_JIBB, sid: t.sid, "block-size": t.blockSize });
  } else {
    out = el(
      "transport",
      {
        xmlns: NS_S5B,
        sid: t.sid,
        dstaddr: t.dstaddr,
        // Dino omits mode on reports; the default is tcp.
        mode: t.mode === "udp" || t.candidates.length > 0 ? t.mode : undefined,
      },
      ...t.candidates.map((c) =>
        el("candidate", {
          cid: c.cid,
          host: c.host,
          jid: c.jid,
          port: c.port,
          priority: c.priority,
          type: c.type,
        })
      ),
      t.candidateUsed !== undefined && el("candidate-used", { cid: t.candidateUsed }),
      t.candidateError === true && el("candidate-error"),
      t.activated !== undefined && el("activated", { cid: t.activated }),
      t.proxyError === true && el("proxy-error"),
    );
  }
  // Same rules both ways: never emit what we would refuse to read.
  parseFileTransport(out);
  return out;
}
