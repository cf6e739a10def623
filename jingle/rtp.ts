/** XEP-0167 RTP description codec (+ XEP-0293 rtcp-fb, XEP-0294 hdrext, XEP-0339 SSMA). Pure. */
import { badRequest } from "./errors.ts";
import { NS_RTCP_FB, NS_RTP, NS_RTP_HDREXT, NS_SSMA } from "./namespaces.ts";
import { childNS, childrenNS, el, type Element, intAttr, reqAttr } from "./xml.ts";

/** `<parameter name value/>`. */
export interface RtpParameter {
  /** Parameter name. */
  name: string;
  /** Parameter value. */
  value: string;
}

/** XEP-0293 `<rtcp-fb type subtype?/>`. */
export interface RtcpFeedback {
  /** Feedback type, e.g. `nack`, `ccm`, `goog-remb`. */
  type: string;
  /** Feedback subtype, e.g. `pli`, `fir`. */
  subtype?: string;
}

/** `<payload-type/>` with its parameters and per-PT feedback. */
export interface PayloadType {
  /** RTP payload type number (0-127). */
  id: number;
  /** Encoding name as sent, e.g. `opus`, `VP8`. */
  name?: string;
  /** Clock rate in Hz. */
  clockrate?: number;
  /** Audio channels (1 when absent). */
  channels?: number;
  /** Longest packet duration, ms. */
  maxptime?: number;
  /** Packet duration, ms. */
  ptime?: number;
  /** Format parameters (SDP `a=fmtp`). */
  parameters: RtpParameter[];
  /** Feedback for this payload type (XEP-0293). */
  rtcpFb: RtcpFeedback[];
  /** XEP-0293 `<rtcp-fb-trr-int value/>`. */
  trrInt?: number;
}

/** XEP-0294 `<rtp-hdrext id uri senders?/>`. */
export interface HeaderExtension {
  /** Extension id (SDP `a=extmap`). */
  id: number;
  /** Extension URI. */
  uri: string;
  /** Direction, when restricted. */
  senders?: string;
}

/** XEP-0339 `<source ssrc>` with `<parameter name value/>` children. */
export interface Source {
  /** The synchronization source. */
  ssrc: number;
  /** Its attributes, e.g. `cname`, `msid`. */
  parameters: RtpParameter[];
}

/** XEP-0339 `<ssrc-group semantics>`. */
export interface SsrcGroup {
  /** Group semantics, e.g. `FID`, `SIM`. */
  semantics: string;
  /** The grouped SSRCs, in order. */
  ssrcs: number[];
}

/** Parsed RTP `<description media>`. SDES `<encryption/>` is ignored on input and never emitted. */
export interface RtpDescription {
  /** Discriminator among description kinds. */
  kind: "rtp";
  /** `audio` or `video` (other media kept verbatim). */
  media: string;
  /** Legacy `ssrc` attribute (Dino). */
  ssrc?: number;
  /** Payload types in preference order. */
  payloadTypes: PayloadType[];
  /** Description-level rtcp-fb (SDP `a=rtcp-fb:*`). */
  rtcpFb: RtcpFeedback[];
  /** Description-level trr-int. */
  trrInt?: number;
  /** Header extensions (XEP-0294). */
  headerExtensions: HeaderExtension[];
  /** `<extmap-allow-mixed/>` present. */
  extmapAllowMixed: boolean;
  /** Sources (XEP-0339). */
  sources: Source[];
  /** Source groups (XEP-0339). */
  ssrcGroups: SsrcGroup[];
  /** `<rtcp-mux/>` present. */
  rtcpMux: boolean;
}

/** Create an empty description for `media`. */
export function emptyRtpDescription(media: string): RtpDescription {
  return {
    kind: "rtp",
    media,
    payloadTypes: [],
    rtcpFb: [],
    headerExtensions: [],
    extmapAllowMixed: false,
    sources: [],
    ssrcGroups: [],
    rtcpMux: false,
  };
}

function parseParameters(e: Element, ns: string): RtpParameter[] {
  return childrenNS(e, "parameter", ns).map((p) => ({
    name: p.attrs.name ?? "",
    value: p.attrs.value ?? "",
  }));
}

function parseFb(e: Element): { fb: RtcpFeedback[]; trrInt?: number } {
  const fb = childrenNS(e, "rtcp-fb", NS_RTCP_FB).map((f) => {
    const out: RtcpFeedback = { type: reqAttr(f, "type") };
    if (f.attrs.subtype) out.subtype = f.attrs.subtype;
    return out;
  });
  const trr = childNS(e, "rtcp-fb-trr-int", NS_RTCP_FB);
  return { fb, trrInt: trr ? intAttr(trr, "value", true) : undefined };
}

function ssrcOf(s: string | undefined, what: string): number {
  if (s === undefined || !/^\d+$/.test(s) || Number(s) > 0xffffffff) {
    badRequest(`${what}: invalid ssrc '${s}'`);
  }
  return Number(s);
}

/** Parse `<description xmlns='urn:xmpp:jingle:apps:rtp:1' media>`. */
export function parseRtpDescription(e: Element): RtpDescription {
  if (e.name !== "description" || e.getNS() !== NS_RTP) badRequest("not an RTP description");
  const media = reqAttr(e, "media");
  const d = emptyRtpDescription(media);
  if (e.attrs.ssrc !== undefined) d.ssrc = ssrcOf(e.attrs.ssrc, "description");
  for (const pt of childrenNS(e, "payload-type", NS_RTP)) {
    const id = intAttr(pt, "id", true);
    if (id > 127) badRequest(`payload-type id out of range: ${id}`);
    const { fb, trrInt } = parseFb(pt);
    const p: PayloadType = { id, parameters: parseParameters(pt, NS_RTP), rtcpFb: fb };
    if (pt.attrs.name) p.name = pt.attrs.name;
    const clockrate = intAttr(pt, "clockrate");
    if (clockrate !== undefined) p.clockrate = clockrate;
    const channels = intAttr(pt, "channels");
    if (channels !== undefined) p.channels = channels;
    const maxptime = intAttr(pt, "maxptime");
    if (maxptime !== undefined) p.maxptime = maxptime;
    const ptime = intAttr(pt, "ptime");
    if (ptime !== undefined) p.ptime = ptime;
    if (trrInt !== undefined) p.trrInt = trrInt;
    d.payloadTypes.push(p);
  }
  const { fb, trrInt } = parseFb(e);
  d.rtcpFb = fb;
  if (trrInt !== undefined) d.trrInt = trrInt;
  for (const h of childrenNS(e, "rtp-hdrext", NS_RTP_HDREXT)) {
    const x: HeaderExtension = { id: intAttr(h, "id", true), uri: reqAttr(h, "uri") };
    if (h.attrs.senders) x.senders = h.attrs.senders;
    d.headerExtensions.push(x);
  }
  d.extmapAllowMixed = childNS(e, "extmap-allow-mixed", NS_RTP_HDREXT) !== undefined;
  for (const s of childrenNS(e, "source", NS_SSMA)) {
    // <parameter/> children carry no own xmlns and inherit ssma:0 (Conversations); accept rtp:1 too.
    const params = s.getChildElements().filter((p) => p.name === "parameter").map((p) => ({
      name: p.attrs.name ?? "",
      value: p.attrs.value ?? "",
    }));
    d.sources.push({ ssrc: ssrcOf(s.attrs.ssrc, "source"), parameters: params });
  }
  for (const g of childrenNS(e, "ssrc-group", NS_SSMA)) {
    d.ssrcGroups.push({
      semantics: reqAttr(g, "semantics"),
      ssrcs: g.getChildElements().filter((c) => c.name === "source").map((c) =>
        ssrcOf(c.attrs.ssrc, "ssrc-group")
      ),
    });
  }
  d.rtcpMux = childNS(e, "rtcp-mux", NS_RTP) !== undefined;
  // <encryption/> (SDES, Dino) intentionally ignored: DTLS-SRTP is mandatory.
  return d;
}

function fbElements(fb: RtcpFeedback[], trrInt: number | undefined): Element[] {
  const out = fb.map((f) => el("rtcp-fb", { xmlns: NS_RTCP_FB, type: f.type, subtype: f.subtype }));
  if (trrInt !== undefined) out.push(el("rtcp-fb-trr-int", { xmlns: NS_RTCP_FB, value: trrInt }));
  return out;
}

/** Serialize an RTP description. */
export function serializeRtpDescription(d: RtpDescription): Element {
  const e = el("description", { xmlns: NS_RTP, media: d.media, ssrc: d.ssrc });
  for (const p of d.payloadTypes) {
    if (!Number.isInteger(p.id) || p.id < 0 || p.id > 127) badRequest(`invalid payload-type id ${p.id}`);
    e.append(el(
      "payload-type",
      {
        id: p.id,
        name: p.name,
        clockrate: p.clockrate,
        channels: p.channels,
        maxptime: p.maxptime,
        ptime: p.ptime,
      },
      ...p.parameters.map((x) => el("parameter", { name: x.name, value: x.value })),
      ...fbElements(p.rtcpFb, p.trrInt),
    ));
  }
  for (const f of fbElements(d.rtcpFb, d.trrInt)) e.append(f);
  for (const h of d.headerExtensions) {
    e.append(el("rtp-hdrext", { xmlns: NS_RTP_HDREXT, id: h.id, uri: h.uri, senders: h.senders }));
  }
  if (d.extmapAllowMixed) e.append(el("extmap-allow-mixed", { xmlns: NS_RTP_HDREXT }));
  for (const g of d.ssrcGroups) {
    e.append(
      el(
        "ssrc-group",
        { xmlns: NS_SSMA, semantics: g.semantics },
        ...g.ssrcs.map((s) => el("source", { ssrc: s })),
      ),
    );
  }
  for (const s of d.sources) {
    e.append(el(
      "source",
      { xmlns: NS_SSMA, ssrc: s.ssrc },
      ...s.parameters.map((p) => el("parameter", { name: p.name, value: p.value })),
    ));
  }
  if (d.rtcpMux) e.append(el("rtcp-mux", {}));
  return e;
}
