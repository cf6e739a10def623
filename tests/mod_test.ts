/**
 * The public API (mod.ts) re-exports what a library user needs: a cheap guard against a broken or
 * forgotten re-export. Values only (types vanish at run time; `deno check` covers them). No server.
 */
import assert from "node:assert/strict";
import * as api from "../mod.ts";

/** Functions (and classes, which are functions at run time) the API must offer. */
const FUNCTIONS = [
  // apps
  "startBot",
  "signIn",
  "dial",
  "sendFile",
  "parseCli",
  "helpText",
  "cliOrExit",
  "stderrLogger",
  // calls
  "setupCalls",
  "runCall",
  "checkPlay",
  "buildRecord",
  "emitRecord",
  "summarize",
  "jingleRouter",
  "parseExternalServices",
  "runLoad",
  "formatLoadReport",
  "loadStats",
  "callPhaseDurations",
  // file transfer
  "setupFileTransfer",
  "summarizeTransfer",
  "fileTransferFeatures",
  "sha256File",
  "createGcmEncryptStream",
  "createGcmDecryptStream",
  "openDownload",
  "safeFileName",
  // account
  "createEndpoint",
  "connectXmpp",
  "xml",
  "formatFingerprint",
  // media
  "createPeer",
  "createDtlsCertificate",
  "startSource",
  "sharedSource",
  "stopIdleSources",
  "startRecorder",
  "resolveFfmpeg",
  "checkMediaFile",
  // infrastructure
  "startProsody",
] as const;

/** Classes: errors a caller catches, and the stateful pieces. */
const CLASSES = [
  "CliError",
  "CallStateMachine",
  "TransferStateMachine",
  "TransferError",
  "GcmAuthError",
  "DownloadError",
  "DownloadRefusedError",
  "StanzaError",
  "AuthError",
  "IqTimeoutError",
  "OmemoManager",
  "OmemoStore",
  "OmemoError",
  "NotForThisDeviceError",
  "OmemoDecryptionError",
  "UntrustedDeviceError",
  "MediaSourceError",
  "RecorderError",
  "FfmpegNotFoundError",
] as const;

/** Pure codecs in the `jingle` namespace. */
const JINGLE_FUNCTIONS = [
  "parseJingle",
  "buildJingleIq",
  "parseJmiElement",
  "buildJmiMessage",
  "contentMapToSdp",
  "sdpToContentMap",
  "parseXml",
] as const;

Deno.test("mod.ts: the main functions are exported", () => {
  const missing = FUNCTIONS.filter((name) => typeof (api as Record<string, unknown>)[name] !== "function");
  assert.deepEqual(missing, [], `not exported as functions: ${missing.join(", ")}`);
});

Deno.test("mod.ts: the error and state classes are exported and are Error subclasses where named so", () => {
  const table = api as Record<string, unknown>;
  const missing = CLASSES.filter((name) => typeof table[name] !== "function");
  assert.deepEqual(missing, [], `not exported: ${missing.join(", ")}`);
  for (const name of CLASSES.filter((n) => n.endsWith("Error"))) {
    const ctor = table[name] as { prototype: unknown };
    assert.ok(ctor.prototype instanceof Error, `${name} is not an Error subclass`);
  }
});

Deno.test("mod.ts: the jingle and bytestreams namespaces carry the pure codecs", () => {
  const jingle = api.jingle as Record<string, unknown>;
  const missing = JINGLE_FUNCTIONS.filter((name) => typeof jingle[name] !== "function");
  assert.deepEqual(missing, [], `jingle.* missing: ${missing.join(", ")}`);
  assert.equal(api.jingle.NS_JMI, "urn:xmpp:jingle-message:0");
  assert.equal(api.jingle.NS_OMEMO_DTLS, "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification");
  assert.equal(typeof api.bytestreams.ibbSend, "function");
  assert.equal(typeof api.bytestreams.connectS5b, "function");
});

Deno.test("mod.ts: re-exports are the modules' own values, and the CLI parses through them", () => {
  const config = api.parseCli("call", ["alice@example.org", "--jid", "bot@example.org"], {
    env: { XMPP_PASSWORD: "secret" },
  });
  assert.equal(config.peer, "alice@example.org");
  assert.equal(config.server.host, "example.org");
  assert.equal(api.redacted(config).password, "***");
  assert.throws(() => api.parseCli("bot", ["--no-such-flag"], { env: {} }), api.CliError);
  assert.ok(api.CALL_FEATURES.includes(api.jingle.NS_JMI));
  assert.ok(api.fileTransferFeatures().includes(api.jingle.NS_JET_OMEMO));
});
