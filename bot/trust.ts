/**
 * `deno task trust (--store DIR | --jid OWN_JID) COMMAND`: the bot's OMEMO trust decisions, offline on its key
 * store (the bot must not be running: the store is locked while it is).
 *
 * - `own`: our device id and identity fingerprint (to compare with what the peer's client shows).
 * - `list JID`: the devices of JID we have seen, with fingerprint and trust.
 * - `verify JID FINGERPRINT` / `distrust JID FINGERPRINT`: mark the device(s) with that identity fingerprint
 *   (spaces, colons and case ignored) verified or untrusted. With `--trust manual` only verified devices carry
 *   OMEMO-verified calls and files; an untrusted one ends a call with `security-error`.
 *
 * The default store is the bot's: `./.callbot/<bare JID>` for `--jid`. Exit status 0 on success, 1 when the
 * store cannot be opened or no device matches, 2 on bad arguments.
 *
 * @module
 */
import {
  formatFingerprint,
  knownDevices,
  normalizeOmemoFingerprint,
  OmemoStore,
  OmemoStoreLockedError,
  setTrustByFingerprint,
} from "../omemo/mod.ts";

/** A parsed trust command. */
export type TrustCommand =
  | { kind: "own"; storeDir: string }
  | { kind: "list"; storeDir: string; jid: string }
  | { kind: "set"; storeDir: string; jid: string; fingerprint: string; trust: "verified" | "untrusted" };

/** Thrown for arguments the tool cannot use (exit status 2). */
export class TrustUsageError extends Error {}

const USAGE =
  "usage: deno task trust (--store DIR | --jid OWN_JID) own | list JID | verify JID FP | distrust JID FP";

const bareOf = (jid: string) => jid.split("/")[0]!.toLowerCase();

/** Parses the arguments (pure). */
export function parseTrustArgs(args: string[]): TrustCommand {
  let storeDir: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new TrustUsageError(`${a} needs a value`);
      return v;
    };
    if (a === "--store") storeDir = value();
    else if (a === "--jid") storeDir ??= `./.callbot/${bareOf(value())}`;
    else if (a.startsWith("--store=")) storeDir = a.slice("--store=".length);
    else if (a.startsWith("--jid=")) storeDir ??= `./.callbot/${bareOf(a.slice("--jid=".length))}`;
    else if (a.startsWith("-")) throw new TrustUsageError(`unknown flag ${a}`);
    else rest.push(a);
  }
  if (!storeDir) throw new TrustUsageError("--store DIR or --jid OWN_JID is needed");
  const [cmd, jid, ...fp] = rest;
  const needJid = () => {
    if (!jid || !jid.includes("@")) throw new TrustUsageError(`${cmd} needs a JID`);
    return bareOf(jid);
  };
  switch (cmd) {
    case "own":
      if (jid) throw new TrustUsageError("own takes no arguments");
      return { kind: "own", storeDir };
    case "list":
      return { kind: "list", storeDir, jid: needJid() };
    case "verify":
    case "distrust": {
      const bare = needJid();
      // A fingerprint is usually pasted with spaces (Conversations groups 8 hex digits): all the rest of the line.
      const fingerprint = normalizeOmemoFingerprint(fp.join(""));
      if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
        throw new TrustUsageError(`${cmd} needs the device's 64-hex-digit identity fingerprint`);
      }
      return {
        kind: "set",
        storeDir,
        jid: bare,
        fingerprint,
        trust: cmd === "verify" ? "verified" : "untrusted",
      };
    }
    default:
      throw new TrustUsageError(cmd ? `unknown command ${cmd}` : "no command");
  }
}

/** Runs a trust command on the store; returns the lines to print. Throws with a clear message on failure. */
export async function runTrust(cmd: TrustCommand): Promise<string[]> {
  let store: OmemoStore;
  try {
    await Deno.stat(`${cmd.storeDir}/state.json`);
  } catch {
    throw new Error(`no OMEMO store in ${cmd.storeDir}`);
  }
  try {
    store = await OmemoStore.open(cmd.storeDir);
  } catch (e) {
    if (e instanceof OmemoStoreLockedError) {
      throw new Error(`the store ${cmd.storeDir} is in use (stop the bot first): ${e.message}`);
    }
    throw e;
  }
  try {
    if (cmd.kind === "own") {
      const kp = await store.getIdentityKeyPair();
      if (!kp) throw new Error(`the store ${cmd.storeDir} has no identity yet`);
      return [`device ${store.getDeviceId()}  ${formatFingerprint(new Uint8Array(kp.pubKey))}`];
    }
    if (cmd.kind === "list") {
      const known = knownDevices(store, cmd.jid);
      if (known.length === 0) return [`no device of ${cmd.jid} seen yet`];
      return known.map((d) => `${cmd.jid} device ${d.deviceId}  ${d.fingerprint}  ${d.trust}`);
    }
    const changed = await setTrustByFingerprint(store, cmd.jid, cmd.fingerprint, cmd.trust).catch((e) => {
      throw new Error(`${(e as Error).message}: deno task trust … list ${cmd.jid}`);
    });
    return changed.map((d) => `${cmd.jid} device ${d.deviceId}: ${d.trust} → ${cmd.trust}`);
  } finally {
    await store.close();
  }
}

if (import.meta.main) {
  let cmd: TrustCommand;
  try {
    cmd = parseTrustArgs(Deno.args);
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    for (const line of await runTrust(cmd)) console.log(line);
  } catch (e) {
    console.error(`trust: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
