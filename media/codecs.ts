/**
 * What the media layer can encode and record, and which codec a Jingle RTP negotiation settled on.
 *
 * Our sources encode only Opus (48 kHz, 2 channels on the wire) and VP8, and the recorders copy only those
 * (`-c copy`). werift answers whatever it knows (it also knows PCMU, PCMA, H264, AV1…): a session whose
 * chosen codec is another one would carry Opus under a foreign payload type. {@link unsupportedCodecs}
 * tells such a negotiation apart so that the call is refused (`failed-application`) instead.
 *
 * The chosen codec of a medium is the first payload type of the answer (RFC 3264 §6.1: the answerer lists
 * its preference first and both sides send it). Each side sends with the payload-type number of the
 * *receiver's* description, so "send" is read from the remote description and "receive" from ours.
 *
 * Pure: content maps in, plain objects out.
 *
 * @module
 */
import type { RtpContentMap } from "../jingle/sdp.ts";
import type { JingleContent } from "../jingle/jingle.ts";
import type { PayloadType } from "../jingle/rtp.ts";
import type { MediaKind } from "./webrtc.ts";

/** One codec as the record shows it. */
export interface CodecInfo {
  /** Encoding name as signalled, e.g. `opus`, `VP8`. */
  name: string;
  /** Clock rate in Hz. */
  clockrate: number;
  /** Audio channels (absent for video). */
  channels?: number;
  /** RTP payload type number. */
  pt: number;
}

/** The codec each way for one medium. */
export interface NegotiatedCodec {
  /** What we send (payload type as the peer numbered it). */
  send: CodecInfo;
  /** What we receive (payload type as we numbered it). */
  receive: CodecInfo;
}

/** The codecs our sources can produce and our recorders can store, per medium. */
export const SUPPORTED_CODECS: Readonly<Record<MediaKind, { name: string; clockrate: number }>> = {
  audio: { name: "opus", clockrate: 48000 },
  video: { name: "VP8", clockrate: 90000 },
};

/** `name/clockrate[/channels]` (e.g. `opus/48000/2`). */
export function codecLabel(c: { name: string; clockrate: number; channels?: number }): string {
  return `${c.name}/${c.clockrate}${c.channels !== undefined ? `/${c.channels}` : ""}`;
}

/** Static payload types of RFC 3551 that peers may send without a name. */
const STATIC_PT: Record<number, { name: string; clockrate: number; channels?: number }> = {
  0: { name: "PCMU", clockrate: 8000, channels: 1 },
  3: { name: "GSM", clockrate: 8000, channels: 1 },
  8: { name: "PCMA", clockrate: 8000, channels: 1 },
  9: { name: "G722", clockrate: 8000, channels: 1 },
  18: { name: "G729", clockrate: 8000, channels: 1 },
  26: { name: "JPEG", clockrate: 90000 },
  34: { name: "H263", clockrate: 90000 },
};

function info(pt: PayloadType): CodecInfo {
  // The static table only stands in for a payload type sent without a name.
  const known = pt.name === undefined ? STATIC_PT[pt.id] : undefined;
  const name = pt.name ?? known?.name ?? `pt${pt.id}`;
  const clockrate = pt.clockrate ?? known?.clockrate ?? 0;
  const channels = pt.channels ?? known?.channels;
  return { name, clockrate, ...(channels !== undefined ? { channels } : {}), pt: pt.id };
}

/** RTX, RED, FEC and comfort noise ride along a real codec; they are never "the" codec of a medium. */
const AUXILIARY = /^(rtx|red|ulpfec|flexfec|cn|telephone-event)$/i;

function rtpOf(c: JingleContent): { media: string; payloadTypes: PayloadType[] } | undefined {
  const d = c.description;
  return d?.kind === "rtp" ? d : undefined;
}

/** The first real codec of `content`'s description (skipping RTX/RED/FEC/CN/DTMF). */
export function chosenPayloadType(content: JingleContent): PayloadType | undefined {
  return rtpOf(content)?.payloadTypes.find((p) => !AUXILIARY.test(info(p).name));
}

function sameCodec(a: PayloadType, b: PayloadType): boolean {
  const x = info(a), y = info(b);
  return x.name.toLowerCase() === y.name.toLowerCase() && x.clockrate === y.clockrate;
}

/**
 * The codec each way per medium, read from both descriptions of a finished offer/answer.
 * `localIsOffer`: we sent the offer (session-initiate) and the remote map is the answer.
 */
export function negotiatedCodecs(
  local: RtpContentMap,
  remote: RtpContentMap,
  localIsOffer: boolean,
): Partial<Record<MediaKind, NegotiatedCodec>> {
  const answer = localIsOffer ? remote : local;
  const out: Partial<Record<MediaKind, NegotiatedCodec>> = {};
  for (const content of answer.contents) {
    const media = rtpOf(content)?.media;
    if (media !== "audio" && media !== "video") continue;
    const chosen = chosenPayloadType(content);
    if (!chosen) continue;
    const other = (localIsOffer ? local : remote).contents.find((c) => c.name === content.name);
    const match = other ? rtpOf(other)?.payloadTypes.find((p) => sameCodec(p, chosen)) : undefined;
    const mine = localIsOffer ? match : chosen;
    const theirs = localIsOffer ? chosen : match;
    if (!mine || !theirs) continue;
    out[media] = { send: info(theirs), receive: info(mine) };
  }
  return out;
}

/**
 * Why an answer cannot be served by our media (one line naming each medium and the codec chosen for it),
 * or `undefined` when every audio/video content chose a codec we encode and record.
 */
export function unsupportedCodecs(answer: RtpContentMap): string | undefined {
  const problems: string[] = [];
  for (const content of answer.contents) {
    const rtp = rtpOf(content);
    if (!rtp) continue;
    const media = rtp.media;
    if (media !== "audio" && media !== "video") {
      problems.push(`content ${content.name}: unsupported media "${media}"`);
      continue;
    }
    const want = SUPPORTED_CODECS[media];
    const chosen = chosenPayloadType(content);
    const offered = rtp.payloadTypes.map((p) => codecLabel(info(p))).join(", ") || "none";
    if (!chosen) {
      problems.push(`${media}: no codec (offered ${offered})`);
      continue;
    }
    const c = info(chosen);
    if (c.name.toLowerCase() !== want.name.toLowerCase() || c.clockrate !== want.clockrate) {
      problems.push(
        `${media}: ${codecLabel(c)} cannot be encoded or recorded here (we support ${codecLabel(want)}; ` +
          `offered ${offered})`,
      );
    }
  }
  return problems.length ? `unsupported codec: ${problems.join("; ")}` : undefined;
}
