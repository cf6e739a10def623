/**
 * The README's first command: a full local demo on an embedded Prosody.
 *
 * Today it shows the foundation: two accounts sign in over STARTTLS, publish their OMEMO 0.3 devices,
 * and exchange end-to-end encrypted messages both ways (the second one through a session that the
 * first built from the published bundle). It grows into the call demo.
 *
 * @module
 */
import { type ChatMessage, createEndpoint, type Endpoint } from "../bot/endpoint.ts";
import { startProsody } from "./prosody.ts";
import { resolveFfmpeg } from "../media/ffmpeg.ts";

function waitForChat(endpoint: Endpoint, timeoutMs = 10_000): Promise<ChatMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no message arrived at ${endpoint.conn.jid} within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = endpoint.onChat((message) => {
      clearTimeout(timer);
      off();
      resolve(message);
    });
  });
}

const log = (line: string) => console.log(line);
const started = performance.now();
const ms = (from: number) => `${(performance.now() - from).toFixed(0)} ms`;

const server = await startProsody();
const workDir = await Deno.makeTempDir({ prefix: "callbot-demo-" });
const endpoints: Endpoint[] = [];
let exitCode = 0;
try {
  log(`Prosody 0.12 on ${server.host}:${server.c2sPort} (domain ${server.domain}, self-signed TLS)`);
  const ffmpeg = await resolveFfmpeg().then(
    (f) => `${f.path} (from ${f.source})`,
    (e) => `none: ${e.message}`,
  );
  log(`ffmpeg: ${ffmpeg}`);
  const passwords = { alice: crypto.randomUUID(), bob: crypto.randomUUID() };
  const alice = await server.createAccount("alice", passwords.alice);
  const bob = await server.createAccount("bob", passwords.bob);
  const quiet = {
    debug() {},
    info() {},
    warn: (m: string) => console.warn(`warn: ${m}`),
    error: console.error,
  };

  let t = performance.now();
  const [a, b] = await Promise.all([
    createEndpoint({
      jid: `${alice}/demo`,
      password: passwords.alice,
      server: { host: server.host, port: server.c2sPort },
      caPem: server.certificatePem,
      storeDir: `${workDir}/alice`,
      logger: quiet,
    }),
    createEndpoint({
      jid: `${bob}/demo`,
      password: passwords.bob,
      server: { host: server.host, port: server.c2sPort },
      caPem: server.certificatePem,
      storeDir: `${workDir}/bob`,
      logger: quiet,
    }),
  ]);
  endpoints.push(a, b);
  log(`signed in and published OMEMO devices in ${ms(t)}:`);
  log(`  ${a.conn.jid}  device ${a.deviceId}  fingerprint ${await a.omemo.ownFingerprint()}`);
  log(`  ${b.conn.jid}  device ${b.deviceId}  fingerprint ${await b.omemo.ownFingerprint()}`);

  t = performance.now();
  let arrival = waitForChat(b);
  await a.sendChat(bob, "Hello Bob, this is end-to-end encrypted with OMEMO 0.3.");
  let message = await arrival;
  log(`alice → bob in ${ms(t)} (X3DH session built from bob's bundle):`);
  log(`  "${message.body}" from device ${message.senderDeviceId}, trust ${message.trust}`);

  t = performance.now();
  arrival = waitForChat(a);
  await b.sendChat(alice, "Hi Alice, received and answered over the same session.");
  message = await arrival;
  log(`bob → alice in ${ms(t)}:`);
  log(`  "${message.body}" from device ${message.senderDeviceId}, trust ${message.trust}`);
  log(`demo finished in ${ms(started)}`);
} catch (err) {
  console.error(`demo failed: ${err instanceof Error ? err.message : err}`);
  exitCode = 1;
} finally {
  for (const endpoint of endpoints) await endpoint.close().catch(() => {});
  await server.stop();
  await Deno.remove(workDir, { recursive: true }).catch(() => {});
}
Deno.exit(exitCode);
