/** Two-way mapping between Jingle RTP content maps and SDP (as werift / libwebrtc produce and consume it).
 * Modelled on Conversations' `SessionDescription.java` (docs/protocol.md §3.2). Pure. */
import { badRequest } from "./errors.ts";
import {
  type CandidateType,
  type DtlsSetup,
  type IceCandidate,
  type IceUdpTransport,
  normalizeFingerprint,
  validateIceCredential,
} from "./ice_udp.ts";
import type { Creator, JingleContent, JingleGroup, Senders } from "./jingle.ts";
import { emptyRtpDescription, type PayloadType, type RtcpFeedback, type RtpDescription } from "./rtp.ts";

/** The RTP part of a Jingle session: contents (RTP description + ICE-UDP transport) and groups. */
export interface RtpContentMap {
  /** The `<content/>`s, one per m-line, in m-line order. */
  contents: JingleContent[];
  /** Bundle groups (`a=group:BUNDLE`), XEP-0338. */
  groups: JingleGroup[];
}

/** Whose description an SDP / content map is: needed to map `senders` ⇄ `a=sendonly|recvonly`. */
export type Role = Creator;

/** Options for {@link contentMapToSdp}. */
export interface ToSdpOptions {
  /** The party whose media the content map describes (initiator for session-initiate, responder for accept). */
  author: Role;
  /** `o=` session id (decimal string); default fixed value so output is deterministic. */
  sessionId?: string;
  /** `o=` session version; default 2. */
  sessionVersion?: number;
}

/** Options for {@link sdpToContentMap}. */
export interface FromSdpOptions {
  /** The party that produced the SDP (our own role when converting a local description). */
  author: Role;
  /** `creator` for produced contents; Conversations always uses 'initiator'. */
  creator?: Creator;
}

function sendersToDirection(senders: Senders | undefined, author: Role): string {
  switch (senders ?? "both") {
    case "both":
      return "sendrecv";
    case "none":
      return "inactive";
    default:
      return senders === author ? "sendonly" : "recvonly";
  }
}

function directionToSenders(direction: string, author: Role): Senders {
  const other: Role = author === "initiator" ? "responder" : "initiator";
  switch (direction) {
    case "sendonly":
      return author;
    case "recvonly":
      return other;
    case "inactive":
      return "none";
    default:
      return "both";
  }
}

/** Format an ICE candidate as SDP attribute value:
 * `candidate:<foundation> <component> <proto> <priority> <ip> <port> typ <type> [raddr <a> rport <p>] [generation <g>] [ufrag <u>]`.
 * Throws for non-UDP candidates. */
export function candidateToSdp(c: IceCandidate, ufrag?: string): string {
  if (c.protocol.toLowerCase() !== "udp") badRequest(`refusing non-UDP candidate (${c.protocol})`);
  let s = `candidate:${c.foundation} ${c.component} udp ${c.priority} ${c.ip} ${c.port} typ ${c.type}`;
  if (c.relAddr !== undefined && c.relPort !== undefined) s += ` raddr ${c.relAddr} rport ${c.relPort}`;
  if (c.generation !== undefined) s += ` generation ${c.generation}`;
  if (ufrag !== undefined) s += ` ufrag ${ufrag}`;
  if (c.network !== undefined) s += ` network-id ${c.network}`;
  return s;
}

/** Parse an SDP candidate (`a=candidate:…`, `candidate:…` or bare). Returns undefined for TCP candidates
 * (dropped, like Conversations/libwebrtc with TCP disabled); throws on malformed input. The optional
 * `ufrag` extension is returned separately. */
export function candidateFromSdp(line: string): { candidate: IceCandidate; ufrag?: string } | undefined {
  let s = line.trim();
  if (s.startsWith("a=")) s = s.slice(2);
  if (s.startsWith("candidate:")) s = s.slice("candidate:".length);
  const t = s.split(/\s+/);
  if (t.length < 8 || t[6] !== "typ") badRequest(`malformed candidate '${line}'`);
  const [foundation, component, proto, priority, ip, port, , type] = t as [
    string,
    string,
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (proto.toLowerCase() !== "udp") return undefined;
  const num = (v: string, what: string) => {
    if (!/^\d+$/.test(v)) badRequest(`candidate ${what} not numeric: '${v}'`);
    return Number(v);
  };
  if (!["host", "srflx", "prflx", "relay"].includes(type)) badRequest(`candidate type '${type}'`);
  const c: IceCandidate = {
    foundation,
    component: num(component, "component"),
    protocol: "udp",
    priority: num(priority, "priority"),
    ip,
    port: num(port, "port"),
    type: type as CandidateType,
  };
  if (c.port > 65535) badRequest("candidate port out of range");
  let ufrag: string | undefined;
  for (let i = 8; i + 1 < t.length; i += 2) {
    const k = t[i]!, v = t[i + 1]!;
    if (k === "raddr") c.relAddr = v;
    else if (k === "rport") c.relPort = num(v, "rport");
    else if (k === "generation") c.generation = num(v, "generation");
    else if (k === "ufrag") ufrag = v;
    else if (k === "network-id") c.network = num(v, "network-id");
  }
  return ufrag !== undefined ? { candidate: c, ufrag } : { candidate: c };
}

/** `sdpMLineIndex` of content `name`: its position in the BUNDLE group, else in content order. */
export function mLineIndexOf(map: RtpContentMap, name: string): number {
  const bundle = map.groups.find((g) => g.semantics === "BUNDLE");
  const order = bundle?.contents ?? map.contents.map((c) => c.name);
  const i = order.indexOf(name);
  if (i < 0) badRequest(`unknown content '${name}'`);
  return i;
}

function fmtpOf(p: PayloadType): string | undefined {
  if (p.parameters.length === 0) return undefined;
  if (p.parameters.length === 1 && p.parameters[0]!.name === "") return p.parameters[0]!.value;
  return p.parameters.filter((x) => x.name !== "").map((x) => `${x.name}=${x.value}`).join(";");
}

function fbLines(pt: string, fb: RtcpFeedback[], trrInt: number | undefined): string[] {
  const out = fb.map((f) => `a=rtcp-fb:${pt} ${f.type}${f.subtype ? " " + f.subtype : ""}`);
  if (trrInt !== undefined) out.push(`a=rtcp-fb:${pt} trr-int ${trrInt}`);
  return out;
}

function rtpOf(c: JingleContent): RtpDescription {
  if (c.description?.kind !== "rtp") badRequest(`content '${c.name}' has no RTP description`);
  return c.description;
}

function transportOf(c: JingleContent): IceUdpTransport {
  if (c.transport?.kind !== "ice-udp") badRequest(`content '${c.name}' has no ICE-UDP transport`);
  return c.transport;
}

/** Convert a Jingle RTP content map to an SDP string (CRLF line endings). Every transport must carry ufrag/pwd
 * (stub transports of bundled contents borrow them from the first bundled content) and a *plain* fingerprint
 * (decrypt OMEMO fingerprints first). */
export function contentMapToSdp(map: RtpContentMap, opts: ToSdpOptions): string {
  const L: string[] = [
    "v=0",
    `o=- ${opts.sessionId ?? "8770656990916039506"} ${opts.sessionVersion ?? 2} IN IP4 127.0.0.1`,
    "s=-",
    "t=0 0",
  ];
  for (const g of map.groups) L.push(`a=group:${[g.semantics, ...g.contents].join(" ")}`);
  L.push("a=msid-semantic: WMS my-media-stream");
  const bundle = map.groups.find((g) => g.semantics === "BUNDLE");
  const bundleLead = bundle?.contents.map((n) => map.contents.find((c) => c.name === n)).find((c) =>
    c?.transport?.kind === "ice-udp" && c.transport.ufrag
  );
  for (const c of map.contents) {
    const d = rtpOf(c);
    let t = transportOf(c);
    if ((!t.ufrag || !t.pwd) && bundleLead && bundle?.contents.includes(c.name)) {
      const lead = transportOf(bundleLead);
      t = { ...t, ufrag: lead.ufrag, pwd: lead.pwd, fingerprint: t.fingerprint ?? lead.fingerprint };
    }
    if (!t.ufrag || !t.pwd) badRequest(`content '${c.name}' lacks ICE ufrag/pwd`);
    validateIceCredential("ufrag", t.ufrag);
    validateIceCredential("pwd", t.pwd);
    for (const p of d.payloadTypes) {
      if (!Number.isInteger(p.id) || p.id < 0 || p.id > 127) badRequest(`invalid payload-type id ${p.id}`);
    }
    L.push(`m=${d.media} 9 UDP/TLS/RTP/SAVPF ${d.payloadTypes.map((p) => p.id).join(" ")}`.trimEnd());
    L.push("c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0");
    L.push(`a=ice-ufrag:${t.ufrag}`, `a=ice-pwd:${t.pwd}`, "a=ice-options:trickle");
    const f = t.fingerprint;
    if (f?.kind === "omemo") {
      badRequest(`content '${c.name}': OMEMO fingerprint must be decrypted before SDP conversion`);
    }
    if (f) L.push(`a=fingerprint:${f.hash} ${normalizeFingerprint(f.value)}`, `a=setup:${f.setup}`);
    L.push(`a=mid:${c.name}`);
    for (const h of d.headerExtensions) L.push(`a=extmap:${h.id} ${h.uri}`);
    if (d.extmapAllowMixed) L.push("a=extmap-allow-mixed");
    L.push(`a=${sendersToDirection(c.senders, opts.author)}`);
    if (d.rtcpMux || map.groups.length > 0) L.push("a=rtcp-mux");
    L.push(...fbLines("*", d.rtcpFb, d.trrInt));
    for (const p of d.payloadTypes) {
      if (p.name !== undefined) {
        if (/\s/.test(p.name)) badRequest(`whitespace in codec name '${p.name}'`);
        const ch = p.channels !== undefined && p.channels !== 1 ? `/${p.channels}` : "";
        L.push(`a=rtpmap:${p.id} ${p.name}/${p.clockrate ?? 90000}${ch}`);
      }
      const fmtp = fmtpOf(p);
      if (fmtp !== undefined) {
        if (/\s/.test(fmtp)) badRequest(`whitespace in fmtp of payload-type ${p.id}`);
        L.push(`a=fmtp:${p.id} ${fmtp}`);
      }
      L.push(...fbLines(String(p.id), p.rtcpFb, p.trrInt));
      if (p.ptime !== undefined) L.push(`a=ptime:${p.ptime}`);
      if (p.maxptime !== undefined) L.push(`a=maxptime:${p.maxptime}`);
    }
    for (const g of d.ssrcGroups) L.push(`a=ssrc-group:${[g.semantics, ...g.ssrcs].join(" ")}`);
    for (const s of d.sources) {
      for (const p of s.parameters) {
        L.push(`a=ssrc:${s.ssrc} ${p.name}${p.value !== "" ? ":" + p.value : ""}`);
      }
    }
    for (const cand of t.candidates) {
      if (cand.protocol.toLowerCase() === "udp") L.push(`a=${candidateToSdp(cand)}`);
    }
  }
  return L.join("\r\n") + "\r\n";
}

interface Section {
  lines: string[];
  mline?: string;
}

function attr(lines: string[], name: string): string | undefined {
  const p = `a=${name}:`;
  const l = lines.find((x) => x.startsWith(p));
  return l?.slice(p.length).trim();
}

function attrs(lines: string[], name: string): string[] {
  const p = `a=${name}:`;
  return lines.filter((x) => x.startsWith(p)).map((x) => x.slice(p.length).trim());
}

function parseFingerprintAttr(v: string | undefined): { hash: string; value: string } | undefined {
  if (!v) return undefined;
  const m = /^(\S+)\s+(\S+)$/.exec(v);
  if (!m) badRequest(`malformed a=fingerprint '${v}'`);
  return { hash: m[1]!.toLowerCase(), value: normalizeFingerprint(m[2]!) };
}

const SETUPS = ["actpass", "active", "passive", "holdconn"];

function ptIdOf(s: string, what: string): number {
  if (!/^\d+$/.test(s) || Number(s) > 127) badRequest(`${what}: invalid payload type id '${s}'`);
  return Number(s);
}

/** Parse an SDP string (offer or answer) into a Jingle RTP content map. Non-audio/video sections are skipped
 * (and removed from groups); TCP candidates are dropped. */
export function sdpToContentMap(sdp: string, opts: FromSdpOptions): RtpContentMap {
  const all = sdp.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  const session: Section = { lines: [] };
  const sections: Section[] = [];
  let cur = session;
  for (const l of all) {
    if (l.startsWith("m=")) {
      cur = { lines: [], mline: l };
      sections.push(cur);
    } else cur.lines.push(l);
  }
  const sUfrag = attr(session.lines, "ice-ufrag");
  const sPwd = attr(session.lines, "ice-pwd");
  const sFp = parseFingerprintAttr(attr(session.lines, "fingerprint"));
  const sSetup = attr(session.lines, "setup");
  const sDir = ["sendrecv", "sendonly", "recvonly", "inactive"].find((d) => session.lines.includes(`a=${d}`));
  const contents: JingleContent[] = [];
  const skipped = new Set<string>();
  for (const sec of sections) {
    const m = /^m=(\S+)\s+(\d+)\s+(\S+)(?:\s+(.*))?$/.exec(sec.mline!);
    if (!m) badRequest(`malformed m-line '${sec.mline}'`);
    const media = m[1]!;
    const mid = attr(sec.lines, "mid");
    if (!mid) badRequest(`m=${media} section without a=mid`);
    if (media !== "audio" && media !== "video") {
      skipped.add(mid);
      continue;
    }
    const d: RtpDescription = emptyRtpDescription(media);
    const fmts = (m[4] ?? "").split(/\s+/).filter((x) => x !== "");
    const pts = new Map<number, PayloadType>();
    for (const f of fmts) {
      const id = ptIdOf(f, "m-line");
      const p: PayloadType = { id, parameters: [], rtcpFb: [] };
      pts.set(id, p);
      d.payloadTypes.push(p);
    }
    const pt = (s: string, what: string) => {
      const p = pts.get(ptIdOf(s, what));
      if (!p) badRequest(`${what} for payload type ${s} not in m-line`);
      return p;
    };
    for (const v of attrs(sec.lines, "rtpmap")) {
      const r = /^(\S+)\s+([^/\s]+)\/(\d+)(?:\/(\d+))?$/.exec(v);
      if (!r) badRequest(`malformed a=rtpmap '${v}'`);
      const p = pt(r[1]!, "rtpmap");
      p.name = r[2]!;
      p.clockrate = Number(r[3]);
      if (r[4] !== undefined && Number(r[4]) !== 1) p.channels = Number(r[4]);
    }
    for (const v of attrs(sec.lines, "fmtp")) {
      const r = /^(\S+)\s+(.*)$/.exec(v);
      if (!r) badRequest(`malformed a=fmtp '${v}'`);
      const p = pt(r[1]!, "fmtp");
      const body = r[2]!.trim();
      if (!body.includes("=")) p.parameters.push({ name: "", value: body });
      else {
        for (const kv of body.split(";")) {
          const i = kv.indexOf("=");
          if (i <= 0) continue;
          p.parameters.push({ name: kv.slice(0, i).trim(), value: kv.slice(i + 1).trim() });
        }
      }
    }
    for (const v of attrs(sec.lines, "rtcp-fb")) {
      const [id, type, subtype] = v.split(/\s+/) as [string, string | undefined, string | undefined];
      if (!type) badRequest(`malformed a=rtcp-fb '${v}'`);
      const target: { rtcpFb: RtcpFeedback[]; trrInt?: number } = id === "*" ? d : pt(id, "rtcp-fb");
      if (type === "trr-int") {
        if (!subtype || !/^\d+$/.test(subtype)) badRequest(`malformed trr-int '${v}'`);
        target.trrInt = Number(subtype);
      } else target.rtcpFb.push(subtype ? { type, subtype } : { type });
    }
    for (const v of attrs(sec.lines, "ptime")) for (const p of d.payloadTypes) p.ptime = Number(v);
    for (const v of attrs(sec.lines, "maxptime")) for (const p of d.payloadTypes) p.maxptime = Number(v);
    for (const v of attrs(sec.lines, "extmap")) {
      const r = /^(\d+)(?:\/\S+)?\s+(\S+)/.exec(v);
      if (!r) badRequest(`malformed a=extmap '${v}'`);
      d.headerExtensions.push({ id: Number(r[1]), uri: r[2]! });
    }
    d.extmapAllowMixed = sec.lines.includes("a=extmap-allow-mixed") ||
      session.lines.includes("a=extmap-allow-mixed");
    for (const v of attrs(sec.lines, "ssrc-group")) {
      const [semantics, ...ssrcs] = v.split(/\s+/);
      d.ssrcGroups.push({ semantics: semantics!, ssrcs: ssrcs.map((x) => ptSsrc(x)) });
    }
    for (const v of attrs(sec.lines, "ssrc")) {
      const r = /^(\d+)\s+([^:\s]+)(?::(.*))?$/.exec(v);
      if (!r) badRequest(`malformed a=ssrc '${v}'`);
      const ssrc = ptSsrc(r[1]!);
      let src = d.sources.find((s) => s.ssrc === ssrc);
      if (!src) d.sources.push(src = { ssrc, parameters: [] });
      src.parameters.push({ name: r[2]!, value: r[3] ?? "" });
    }
    d.rtcpMux = sec.lines.includes("a=rtcp-mux");
    const ufrag = attr(sec.lines, "ice-ufrag") ?? sUfrag;
    const pwd = attr(sec.lines, "ice-pwd") ?? sPwd;
    validateIceCredential("ufrag", ufrag);
    validateIceCredential("pwd", pwd);
    const t: IceUdpTransport = { kind: "ice-udp", candidates: [] };
    if (ufrag !== undefined) t.ufrag = ufrag;
    if (pwd !== undefined) t.pwd = pwd;
    const fp = parseFingerprintAttr(attr(sec.lines, "fingerprint")) ?? sFp;
    const setup = attr(sec.lines, "setup") ?? sSetup;
    if (fp) {
      if (!setup || !SETUPS.includes(setup)) badRequest(`missing/invalid a=setup for content '${mid}'`);
      t.fingerprint = { kind: "plain", hash: fp.hash, setup: setup as DtlsSetup, value: fp.value };
    }
    for (const v of attrs(sec.lines, "candidate")) {
      const r = candidateFromSdp("candidate:" + v);
      if (r) t.candidates.push(r.candidate);
    }
    const dir = ["sendrecv", "sendonly", "recvonly", "inactive"].find((x) => sec.lines.includes(`a=${x}`)) ??
      sDir ??
      "sendrecv";
    const content: JingleContent = {
      creator: opts.creator ?? "initiator",
      name: mid,
      description: d,
      transport: t,
    };
    const senders = directionToSenders(dir, opts.author);
    if (senders !== "both") content.senders = senders;
    contents.push(content);
  }
  const groups: JingleGroup[] = attrs(session.lines, "group").map((v) => {
    const [semantics, ...names] = v.split(/\s+/);
    return { semantics: semantics!, contents: names.filter((n) => !skipped.has(n)) };
  }).filter((g) => g.contents.length > 0);
  return { contents, groups };
}

function ptSsrc(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) > 0xffffffff) badRequest(`invalid ssrc '${s}'`);
  return Number(s);
}
