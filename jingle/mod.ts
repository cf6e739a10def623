/**
 * Pure Jingle codecs for the call bot: XEP-0353 (JMI), XEP-0166 (Jingle envelope), XEP-0167 (RTP description
 * with XEP-0293/0294/0339), XEP-0176 (ICE-UDP with XEP-0320 and the OMEMO-verified fingerprint draft), XEP-0338
 * grouping, and a Jingle ⇄ SDP mapping for werift. Nothing here does I/O; malformed input raises
 * {@link JingleProtocolError}.
 * @module
 */
export * from "./namespaces.ts";
export * from "./errors.ts";
export { childNS, childrenNS, cloneElement, el, type Element, isElement, parseXml } from "./xml.ts";
export * from "./jmi.ts";
export * from "./jingle.ts";
export * from "./rtp.ts";
export * from "./ice_udp.ts";
export * from "./sdp.ts";
export * from "./file_transfer.ts";
export * from "./jet.ts";
export * from "./bytestream_transports.ts";
