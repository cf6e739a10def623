/**
 * DTLS 1.2 peer-authentication checks that werift 0.25.2 does not perform
 * (security-checklist.md §1.1b). Pure functions over the handshake transcript;
 * no werift import here (media/webrtc.ts feeds the transcript in from its seam).
 *
 * Checked:
 *  - we are DTLS server: client CertificateVerify signature over the transcript
 *    (ECDSA P-256/SHA-256, RSA PKCS#1 v1.5/SHA-256) with the client certificate key;
 *  - we are DTLS client: ServerKeyExchange signature over
 *    client_random ‖ server_random ‖ ServerECDHParams with the server certificate key;
 *  - both: the peer's Finished verify_data = PRF(master_secret, label, SHA-256(transcript))[0..12];
 *  - both: the certificate / ECDH key werift actually used are the ones in the verified transcript.
 */
import {
  createHash,
  createHmac,
  timingSafeEqual,
  verify as cryptoVerify,
  X509Certificate,
} from "node:crypto";
import { Buffer } from "node:buffer";

/** One handshake message as kept in the transcript (reassembled, unfragmented). */
export interface TranscriptMessage {
  /** handshake msg_type (1 ClientHello, 2 ServerHello, 11 Certificate, ...) */
  type: number;
  /** DTLS message_seq */
  seq: number;
  /** handshake body (without the 12-byte DTLS handshake header) */
  body: Uint8Array;
  /** true when the message was sent by the peer */
  fromPeer: boolean;
}

export interface PeerHandshakeEvidence {
  /** our DTLS role */
  role: "client" | "server";
  /** transcript in hashing order */
  transcript: TranscriptMessage[];
  /** verify_data of the Finished message received from the peer (undefined: none seen) */
  peerFinished: Uint8Array | undefined;
  masterSecret: Uint8Array | undefined;
  /** DER certificate the transport will use for the fingerprint check */
  remoteCertificate: Uint8Array | undefined;
  /** peer ECDH public key actually used to derive the pre-master secret */
  remoteEcdhPublicKey: Uint8Array | undefined;
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

const HS = {
  clientHello: 1,
  serverHello: 2,
  certificate: 11,
  serverKeyExchange: 12,
  certificateVerify: 15,
  clientKeyExchange: 16,
  finished: 20,
} as const;

/** RFC 6347 §4.2.6: messages are hashed with their DTLS header as if unfragmented. */
export function encodeHandshake(m: Pick<TranscriptMessage, "type" | "seq" | "body">): Uint8Array {
  const len = m.body.length;
  const out = new Uint8Array(12 + len);
  out[0] = m.type;
  out[1] = (len >>> 16) & 0xff;
  out[2] = (len >>> 8) & 0xff;
  out[3] = len & 0xff;
  out[4] = (m.seq >>> 8) & 0xff;
  out[5] = m.seq & 0xff;
  // fragment_offset = 0 (bytes 6..8), fragment_length = len
  out[9] = (len >>> 16) & 0xff;
  out[10] = (len >>> 8) & 0xff;
  out[11] = len & 0xff;
  out.set(m.body, 12);
  return out;
}

function concat(parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
}

/** TLS 1.2 PRF with P_SHA256 (RFC 5246 §5). */
export function prfSha256(secret: Uint8Array, label: string, seed: Uint8Array, size: number): Uint8Array {
  const labelSeed = concat([new TextEncoder().encode(label), seed]);
  const out: Buffer[] = [];
  let total = 0;
  let a: Buffer = labelSeed; // A(0)
  while (total < size) {
    a = createHmac("sha256", secret).update(a).digest();
    const chunk = createHmac("sha256", secret).update(a).update(labelSeed).digest();
    out.push(chunk);
    total += chunk.length;
  }
  return new Uint8Array(Buffer.concat(out).subarray(0, size));
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (!a || !b || a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

function readSignature(buf: Uint8Array, off: number): { hash: number; sig: number; signature: Uint8Array } {
  if (buf.length < off + 4) throw new Error("truncated signature");
  const hash = buf[off]!;
  const sig = buf[off + 1]!;
  const len = (buf[off + 2]! << 8) | buf[off + 3]!;
  if (buf.length !== off + 4 + len) throw new Error("bad signature length");
  return { hash, sig, signature: buf.subarray(off + 4, off + 4 + len) };
}

/** Verify `signature` over `data` with the certificate key; only the schemes werift offers. */
function verifyWithCert(
  certDer: Uint8Array,
  s: { hash: number; sig: number; signature: Uint8Array },
  data: Uint8Array,
): string | undefined {
  if (s.hash !== 4) return `unsupported signature hash ${s.hash}`;
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(certDer));
  } catch (e) {
    return `peer certificate unparsable: ${(e as Error).message}`;
  }
  const key = cert.publicKey;
  const kt = key.asymmetricKeyType;
  if (s.sig === 3) {
    if (kt !== "ec") return `ECDSA signature but certificate key is ${kt}`;
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve && curve !== "prime256v1" && curve !== "P-256") return `unsupported ECDSA curve ${curve}`;
  } else if (s.sig === 1) {
    if (kt !== "rsa") return `RSA signature but certificate key is ${kt}`;
  } else {
    return `unsupported signature algorithm ${s.sig}`;
  }
  let ok = false;
  try {
    ok = cryptoVerify("sha256", data, key, s.signature);
  } catch {
    ok = false;
  }
  return ok ? undefined : "signature does not verify with the peer certificate key";
}

function prefixBefore(t: TranscriptMessage[], stop: TranscriptMessage): Uint8Array {
  const idx = t.indexOf(stop);
  return concat(t.slice(0, idx).map(encodeHandshake));
}

function checkFinished(
  ev: PeerHandshakeEvidence,
  transcriptBytes: Uint8Array,
  label: string,
): string | undefined {
  if (!ev.masterSecret) return "no master secret";
  if (!ev.peerFinished) return "peer Finished not received";
  const expected = prfSha256(
    ev.masterSecret,
    label,
    createHash("sha256").update(transcriptBytes).digest(),
    12,
  );
  return sameBytes(expected, ev.peerFinished) ? undefined : "peer Finished verify_data mismatch";
}

/** Checks that the DTLS peer proved possession of its certificate's private key. */
export function verifyPeerHandshake(ev: PeerHandshakeEvidence): VerifyResult {
  try {
    const r = ev.role === "server" ? verifyAsServer(ev) : verifyAsClient(ev);
    return r === undefined ? { ok: true } : { ok: false, reason: r };
  } catch (e) {
    return { ok: false, reason: `malformed handshake: ${(e as Error).message}` };
  }
}

function peerCert(ev: PeerHandshakeEvidence): { der: Uint8Array } | string {
  const msg = ev.transcript.find((m) => m.fromPeer && m.type === HS.certificate);
  if (!msg) return "peer sent no Certificate";
  const b = msg.body;
  // certificate_list<3>, first ASN.1Cert<3>
  if (b.length < 6) return "peer Certificate truncated";
  const certLen = (b[3]! << 16) | (b[4]! << 8) | b[5]!;
  if (b.length < 6 + certLen || certLen === 0) return "peer Certificate truncated";
  const der = b.subarray(6, 6 + certLen);
  if (!sameBytes(der, ev.remoteCertificate)) {
    return "certificate used for the fingerprint is not the one in the transcript";
  }
  return { der };
}

function verifyAsServer(ev: PeerHandshakeEvidence): string | undefined {
  const t = ev.transcript;
  const cert = peerCert(ev);
  if (typeof cert === "string") return cert;
  const cv = t.find((m) => m.fromPeer && m.type === HS.certificateVerify);
  if (!cv) return "peer sent no CertificateVerify";
  const cke = t.find((m) => m.fromPeer && m.type === HS.clientKeyExchange);
  if (!cke) return "peer sent no ClientKeyExchange";
  if (t.indexOf(cke) > t.indexOf(cv)) return "ClientKeyExchange after CertificateVerify";
  const pubLen = cke.body[0] ?? 0;
  if (cke.body.length !== 1 + pubLen) return "ClientKeyExchange malformed";
  if (!sameBytes(cke.body.subarray(1), ev.remoteEcdhPublicKey)) {
    return "ECDH key used differs from the ClientKeyExchange in the transcript";
  }
  const sigErr = verifyWithCert(cert.der, readSignature(cv.body, 0), prefixBefore(t, cv));
  if (sigErr) return `CertificateVerify invalid: ${sigErr}`;
  const fin = t.find((m) => m.fromPeer && m.type === HS.finished);
  if (!fin) return "peer Finished not in transcript";
  if (!sameBytes(fin.body, ev.peerFinished)) return "peer sent conflicting Finished messages";
  const finErr = checkFinished(ev, prefixBefore(t, fin), "client finished");
  return finErr;
}

function verifyAsClient(ev: PeerHandshakeEvidence): string | undefined {
  const t = ev.transcript;
  const cert = peerCert(ev);
  if (typeof cert === "string") return cert;
  const ch = t.find((m) => !m.fromPeer && m.type === HS.clientHello);
  const sh = t.find((m) => m.fromPeer && m.type === HS.serverHello);
  const ske = t.find((m) => m.fromPeer && m.type === HS.serverKeyExchange);
  if (!ch || !sh) return "hello messages missing from transcript";
  if (!ske) return "peer sent no ServerKeyExchange";
  if (ch.body.length < 34 || sh.body.length < 34) return "hello truncated";
  const clientRandom = ch.body.subarray(2, 34);
  const serverRandom = sh.body.subarray(2, 34);
  const b = ske.body;
  if (b[0] !== 3) return "ServerKeyExchange: only named_curve supported";
  const pubLen = b[3] ?? 0;
  const paramsLen = 4 + pubLen;
  if (b.length < paramsLen + 4) return "ServerKeyExchange truncated";
  const params = b.subarray(0, paramsLen);
  if (!sameBytes(params.subarray(4), ev.remoteEcdhPublicKey)) {
    return "ECDH key used differs from the ServerKeyExchange in the transcript";
  }
  const signed = concat([clientRandom, serverRandom, params]);
  const sigErr = verifyWithCert(cert.der, readSignature(b, paramsLen), signed);
  if (sigErr) return `ServerKeyExchange invalid: ${sigErr}`;
  // The server Finished covers every message up to and including our Finished.
  const ownFin = t.find((m) => !m.fromPeer && m.type === HS.finished);
  if (!ownFin) return "own Finished missing from transcript";
  const upto = t.slice(0, t.indexOf(ownFin) + 1);
  return checkFinished(ev, concat(upto.map(encodeHandshake)), "server finished");
}

/** sha-256 fingerprint, uppercase colon hex. */
export function fingerprintSha256(der: Uint8Array): string {
  const h = createHash("sha256").update(der).digest();
  return Array.from(h, (x) => x.toString(16).padStart(2, "0").toUpperCase()).join(":");
}
