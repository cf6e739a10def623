/**
 * SCRAM-SHA-1 client (RFC 5802), pure apart from WebCrypto.
 *
 * Why not the `sasl-scram-sha-1` package @xmpp/client uses: it runs PBKDF2 as ~10 000 individual
 * WebCrypto HMAC calls (0.5–1 s of CPU per login). One `deriveBits` call does the same in a few ms.
 * It also never checks the server signature sent with `<success/>`; we do.
 *
 * @module
 */

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Minimum iteration count we accept (RFC 5802 recommends ≥ 4096); guards against downgrade. */
export const MIN_ITERATIONS = 4096;

/** Escapes a username per RFC 5802 §5.1 (`=` → `=3D`, `,` → `=2C`). */
export function saslName(user: string): string {
  return user.replace(/=/g, "=3D").replace(/,/g, "=2C");
}

function parseAttributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(",")) {
    const eq = part.indexOf("=");
    if (eq === 1) out.set(part[0]!, part.slice(2));
  }
  return out;
}

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function unb64(value: string): Uint8Array {
  const s = atob(value);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

async function hmac(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as BufferSource,
    { name: "HMAC", hash: "SHA-1" },
    false,
    [
      "sign",
    ],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data as BufferSource));
}

/** PBKDF2-HMAC-SHA-1 in one WebCrypto call (RFC 5802 `Hi()`). */
export async function saltedPassword(
  password: string,
  salt: Uint8Array,
  iterations: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", enc.encode(password), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-1", salt: salt as BufferSource, iterations },
    key,
    160,
  );
  return new Uint8Array(bits);
}

function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Thrown for protocol violations by the server (bad nonce, bad signature, weak iteration count). */
export class ScramError extends Error {
  constructor(readonly condition: string, message: string) {
    super(message);
    this.name = "ScramError";
  }
}

/**
 * One SCRAM-SHA-1 exchange. Usage: `clientFirst()` → `clientFinal(serverFirst)` → `verifyServerFinal(serverFinal)`.
 * Messages are UTF-8 strings (base64 is the transport's business).
 */
export class ScramSha1Client {
  readonly #username: string;
  readonly #password: string;
  readonly #clientNonce: string;
  #clientFirstBare = "";
  #serverSignature: Uint8Array | null = null;

  constructor(username: string, password: string, clientNonce?: string) {
    this.#username = username;
    this.#password = password;
    this.#clientNonce = clientNonce ?? b64(crypto.getRandomValues(new Uint8Array(18)));
  }

  /** `n,,n=user,r=nonce` (no channel binding: gs2 header `n,,`). */
  clientFirst(): string {
    this.#clientFirstBare = `n=${saslName(this.#username)},r=${this.#clientNonce}`;
    return `n,,${this.#clientFirstBare}`;
  }

  /** Computes the client-final message from the server-first message. */
  async clientFinal(serverFirst: string): Promise<string> {
    const attrs = parseAttributes(serverFirst);
    if (attrs.has("m")) throw new ScramError("invalid-mechanism", "SCRAM: unsupported mandatory extension");
    const nonce = attrs.get("r");
    const salt = attrs.get("s");
    const iterations = Number(attrs.get("i"));
    if (!nonce || !salt || !Number.isInteger(iterations)) {
      throw new ScramError("malformed-request", "SCRAM: malformed server-first message");
    }
    if (!nonce.startsWith(this.#clientNonce) || nonce.length <= this.#clientNonce.length) {
      throw new ScramError("nonce-mismatch", "SCRAM: server nonce does not extend the client nonce");
    }
    if (iterations < MIN_ITERATIONS) {
      throw new ScramError("weak-iterations", `SCRAM: iteration count ${iterations} is too low`);
    }
    const salted = await saltedPassword(this.#password, unb64(salt), iterations);
    const clientKey = await hmac(salted, enc.encode("Client Key"));
    const storedKey = new Uint8Array(await crypto.subtle.digest("SHA-1", clientKey as BufferSource));
    const withoutProof = `c=biws,r=${nonce}`; // biws = base64("n,,")
    const authMessage = enc.encode(`${this.#clientFirstBare},${serverFirst},${withoutProof}`);
    const clientSignature = await hmac(storedKey, authMessage);
    const proof = clientKey.map((b, i) => b ^ clientSignature[i]!);
    const serverKey = await hmac(salted, enc.encode("Server Key"));
    this.#serverSignature = await hmac(serverKey, authMessage);
    return `${withoutProof},p=${b64(proof)}`;
  }

  /** Checks `v=<ServerSignature>`; throws unless the server proved knowledge of the password. */
  verifyServerFinal(serverFinal: string): void {
    const attrs = parseAttributes(serverFinal);
    const error = attrs.get("e");
    if (error) throw new ScramError(error, `SCRAM: server error ${error}`);
    const v = attrs.get("v");
    if (!v || !this.#serverSignature) {
      throw new ScramError("server-signature-missing", "SCRAM: no server signature");
    }
    if (!timingSafeEqual(unb64(v), this.#serverSignature)) {
      throw new ScramError("server-signature-mismatch", "SCRAM: server signature mismatch");
    }
  }
}

/** UTF-8 helpers for the base64 transport of SASL payloads. */
export const saslCodec = {
  encode(value: string): string {
    return b64(enc.encode(value));
  },
  decode(value: string): string {
    return dec.decode(unb64(value.trim()));
  },
};
