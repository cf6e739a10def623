/** Byte-exact XML namespaces used by the Jingle codecs (see docs/protocol.md §0). */

/** XEP-0166 Jingle. */
export const NS_JINGLE = "urn:xmpp:jingle:1";
/** XEP-0166 Jingle error conditions. */
export const NS_JINGLE_ERRORS = "urn:xmpp:jingle:errors:1";
/** XEP-0353 Jingle Message Initiation (only `:0` is used in the wild). */
export const NS_JMI = "urn:xmpp:jingle-message:0";
/** XEP-0167 RTP application. */
export const NS_RTP = "urn:xmpp:jingle:apps:rtp:1";
/** Disco-only feature: audio. */
export const NS_RTP_AUDIO = "urn:xmpp:jingle:apps:rtp:audio";
/** Disco-only feature: video. */
export const NS_RTP_VIDEO = "urn:xmpp:jingle:apps:rtp:video";
/** XEP-0167 session-info payloads. */
export const NS_RTP_INFO = "urn:xmpp:jingle:apps:rtp:info:1";
/** XEP-0293 RTCP feedback. */
export const NS_RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0";
/** XEP-0294 RTP header extensions. */
export const NS_RTP_HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0";
/** XEP-0339 source-specific media attributes. */
export const NS_SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0";
/** XEP-0338 grouping (BUNDLE). */
export const NS_GROUPING = "urn:xmpp:jingle:apps:grouping:0";
/** XEP-0176 ICE-UDP transport. */
export const NS_ICE_UDP = "urn:xmpp:jingle:transports:ice-udp:1";
/** XEP-0320 DTLS fingerprint. */
export const NS_DTLS = "urn:xmpp:jingle:apps:dtls:0";
/** OMEMO-verified DTLS-SRTP draft (sic: "dlts"). */
export const NS_OMEMO_DTLS = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification";
/** OMEMO 0.3 ("axolotl"). */
export const NS_OMEMO_AXOLOTL = "eu.siacs.conversations.axolotl";
/** XEP-0334 message processing hints. */
export const NS_HINTS = "urn:xmpp:hints";
/** XEP-0184 receipts. */
export const NS_RECEIPTS = "urn:xmpp:receipts";
/** RFC 6120 stanza error conditions. */
export const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
/** XEP-0234 Jingle file transfer (v5). */
export const NS_JINGLE_FT_5 = "urn:xmpp:jingle:apps:file-transfer:5";
/** XEP-0260 SOCKS5 transport. */
export const NS_JINGLE_S5B = "urn:xmpp:jingle:transports:s5b:1";
/** XEP-0261 IBB transport. */
export const NS_JINGLE_IBB = "urn:xmpp:jingle:transports:ibb:1";
/** XEP-0391 JET. */
export const NS_JET = "urn:xmpp:jingle:jet:0";
/** XEP-0396 JET-OMEMO. */
export const NS_JET_OMEMO = "urn:xmpp:jingle:jet-omemo:0";
/** XEP-0234 Jingle file transfer, current version (the one we send). */
export const NS_JFT: string = NS_JINGLE_FT_5;
/** XEP-0234 v4 (older Conversations; accepted on input). */
export const NS_JFT_4 = "urn:xmpp:jingle:apps:file-transfer:4";
/** XEP-0234 v3 (older Conversations; accepted on input). */
export const NS_JFT_3 = "urn:xmpp:jingle:apps:file-transfer:3";
/** XEP-0300 cryptographic hashes (`<hash algo>` base64). */
export const NS_HASHES = "urn:xmpp:hashes:2";
/** XEP-0260 Jingle SOCKS5 bytestreams transport (alias of {@link NS_JINGLE_S5B}). */
export const NS_S5B: string = NS_JINGLE_S5B;
/** XEP-0261 Jingle in-band bytestreams transport (alias of {@link NS_JINGLE_IBB}). */
export const NS_JIBB: string = NS_JINGLE_IBB;
