import assert from "node:assert/strict";
import { CliError, FLAGS, helpText, parseCli, parsePlay, parseServer, redacted } from "../../bot/cli.ts";
import { startBot } from "../../bot/main.ts";
import { createEndpoint } from "../../bot/endpoint.ts";
import { setupCalls } from "../../bot/calls.ts";
import { startProsody } from "../../scripts/prosody.ts";
import type { CallRecord } from "../../bot/records.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const root = new URL("../../", import.meta.url).pathname;
const base = ["--jid", "bot@example.org", "--password", "pw"];

Deno.test("parseCli: defaults, flags, env fallback and precedence", () => {
  const c = parseCli("bot", base);
  assert.equal(c.jid, "bot@example.org");
  assert.deepEqual(c.server, { host: "example.org", port: 5222 });
  assert.equal(c.storeDir, "./.callbot/bot@example.org");
  assert.equal(c.trust, "blind");
  assert.equal(c.verify, "prefer");
  assert.equal(c.json, false);
  assert.equal(c.logLevel, "info");
  assert.deepEqual(c.play, { audio: { type: "tone", frequency: 440 }, video: { type: "testvideo" } });
  assert.deepEqual(c.allow, []);

  const env = { XMPP_JID: "env@example.net/res", XMPP_PASSWORD: "secret", XMPP_SERVER: "10.0.0.1:5300" };
  const e = parseCli("bot", [], { env });
  assert.equal(e.jid, "env@example.net/res");
  assert.equal(e.password, "secret");
  assert.deepEqual(e.server, { host: "10.0.0.1", port: 5300 });
  assert.equal(e.storeDir, "./.callbot/env@example.net");
  // Flags beat the environment.
  assert.equal(parseCli("bot", ["--jid=flag@example.com"], { env }).jid, "flag@example.com");

  const full = parseCli("bot", [
    ...base,
    "--server",
    "[::1]:5223",
    "--store",
    "/tmp/s",
    "--trust",
    "manual",
    "--verify",
    "require",
    "--play",
    "tone:300",
    "--play",
    "black",
    "--record-dir",
    "rec",
    "--json",
    "--ca",
    "ca.pem",
    "--log-level",
    "debug",
    "--allow",
    "a@x.org",
    "--allow",
    "b@x.org/phone",
    "--answer-delay",
    "250",
    "--echo",
    "--max-call-seconds",
    "60",
    "--max-calls",
    "3",
  ]);
  assert.deepEqual(full.server, { host: "::1", port: 5223 });
  assert.equal(full.storeDir, "/tmp/s");
  assert.equal(full.trust, "manual");
  assert.equal(full.verify, "require");
  assert.deepEqual(full.play, { audio: { type: "tone", frequency: 300 }, video: { type: "black" } });
  assert.equal(full.recordDir, "rec");
  assert.equal(full.json, true);
  assert.equal(full.ca, "ca.pem");
  assert.equal(full.logLevel, "debug");
  assert.deepEqual(full.allow, ["a@x.org", "b@x.org/phone"]);
  assert.equal(full.answerDelayMs, 250);
  assert.equal(full.echo, true);
  assert.equal(full.maxCallSeconds, 60);
  assert.equal(full.maxCalls, 3);

  const call = parseCli("call", [
    "peer@x.org",
    ...base,
    "--video",
    "--duration",
    "2.5",
    "--play",
    "clip.mkv",
  ]);
  assert.equal(call.peer, "peer@x.org");
  assert.equal(call.video, true);
  assert.equal(call.durationSeconds, 2.5);
  assert.deepEqual(call.play, {
    audio: { type: "file", path: "clip.mkv" },
    video: { type: "file", path: "clip.mkv" },
  });
});

Deno.test("parseCli: --config file, overridden by flags, env last", () => {
  const files: Record<string, string> = {
    "c.json": JSON.stringify({
      jid: "cfg@x.org",
      password: "p",
      "record-dir": "r",
      allow: "a@x.org",
      maxCalls: 2,
    }),
    "bad.json": "{nope",
    "arr.json": "[]",
    "unknown.json": JSON.stringify({ colour: "red" }),
    "type.json": JSON.stringify({ json: "yes" }),
  };
  const readFile = (p: string) => {
    if (!(p in files)) throw new Error(`no such file ${p}`);
    return files[p]!;
  };
  const c = parseCli("bot", ["--config", "c.json", "--max-calls", "5"], {
    readFile,
    env: { XMPP_JID: "env@x.org" },
  });
  assert.equal(c.jid, "cfg@x.org");
  assert.equal(c.recordDir, "r");
  assert.deepEqual(c.allow, ["a@x.org"]);
  assert.equal(c.maxCalls, 5);
  for (const f of ["bad.json", "arr.json", "unknown.json", "type.json", "missing.json"]) {
    assert.throws(() => parseCli("bot", ["--config", f], { readFile }), CliError, f);
  }
});

Deno.test("parseServer / parsePlay", () => {
  assert.deepEqual(parseServer("xmpp.example.org:5223"), { host: "xmpp.example.org", port: 5223 });
  assert.deepEqual(parseServer("xmpp.example.org"), { host: "xmpp.example.org", port: 5222 });
  assert.deepEqual(parseServer("127.0.0.1:1"), { host: "127.0.0.1", port: 1 });
  assert.deepEqual(parseServer("[2001:db8::1]:5222"), { host: "2001:db8::1", port: 5222 });
  for (const bad of ["", ":5222", "host:0", "host:65536", "host:abc", "a:b:c", "host:"]) {
    assert.throws(() => parseServer(bad), CliError, bad);
  }
  assert.deepEqual(parsePlay("tone"), { kind: "audio", spec: { type: "tone" } });
  assert.deepEqual(parsePlay("tone:1000"), { kind: "audio", spec: { type: "tone", frequency: 1000 } });
  assert.deepEqual(parsePlay("silence"), { kind: "audio", spec: { type: "silence" } });
  assert.deepEqual(parsePlay("testvideo:640x480"), {
    kind: "video",
    spec: { type: "testvideo", width: 640, height: 480 },
  });
  assert.deepEqual(parsePlay("/a/b.webm"), { kind: "both", spec: { type: "file", path: "/a/b.webm" } });
  for (const bad of ["tone:x", "tone:-1", "testvideo:big", "testvideo:641x480", "testvideo:8x8", ""]) {
    assert.throws(() => parsePlay(bad), CliError, bad);
  }
});

Deno.test("parseCli: invalid values give clear CliErrors", () => {
  const cases: [string, string[], RegExp][] = [
    ["bot", ["--password", "x"], /missing --jid/],
    ["bot", ["--jid", "bot@x.org"], /missing --password/],
    ["bot", ["--jid", "not-a-jid", "--password", "x"], /not a JID/],
    ["bot", [...base, "--verify", "maybe"], /--verify: expected require, prefer, off/],
    ["bot", [...base, "--trust", "all"], /--trust/],
    ["bot", [...base, "--log-level", "loud"], /--log-level/],
    ["bot", [...base, "--server", "h:99999"], /--server/],
    ["bot", [...base, "--max-calls", "1.5"], /--max-calls/],
    ["bot", [...base, "--answer-delay", "-3"], /--answer-delay/],
    ["bot", [...base, "--max-call-seconds", "0"], /max-call-seconds/],
    ["bot", [...base, "--allow", "nobody"], /--allow: not a JID/],
    ["bot", [...base, "--bogus"], /unknown flag "--bogus"/],
    ["bot", [...base, "-x"], /unknown flag "-x"/],
    ["bot", [...base, "--video"], /unknown flag "--video" for bot/],
    ["bot", [...base, "--json=maybe"], /takes no value/],
    ["bot", [...base, "--store"], /--store needs a value/],
    ["bot", [...base, "--store", "--json"], /--store needs a value/],
    ["bot", [...base, "extra"], /unexpected argument/],
    ["call", base, /missing the JID to call/],
    ["call", ["a@x.org", "b@x.org", ...base], /one JID/],
    ["call", ["nojid", ...base], /not a JID/],
    ["call", ["a@x.org", ...base, "--duration", "soon"], /--duration/],
    ["call", ["a@x.org", ...base, "--echo"], /unknown flag "--echo" for call/],
  ];
  for (const [tool, args, re] of cases) {
    assert.throws(() => parseCli(tool as "bot" | "call", args), (e: unknown) => {
      assert.ok(e instanceof CliError, `${args.join(" ")}: ${e}`);
      assert.match(e.message, re, args.join(" "));
      return true;
    });
  }
  // --help wins over missing values.
  assert.equal(parseCli("bot", ["--help"]).help, true);
  assert.equal(parseCli("call", ["-h"]).help, true);
});

Deno.test("--help lists every flag of each tool; passwords are redacted", () => {
  for (const tool of ["bot", "call"] as const) {
    const text = helpText(tool);
    for (const f of FLAGS) {
      assert.equal(text.includes(`--${f.name}`), f.tools.includes(tool), `${tool} --${f.name}`);
    }
    assert.match(text, /XMPP_PASSWORD/);
  }
  for (
    const name of [
      "jid",
      "password",
      "server",
      "store",
      "trust",
      "verify",
      "play",
      "record-dir",
      "json",
      "ca",
      "config",
      "help",
      "log-level",
    ]
  ) {
    assert.ok(FLAGS.some((f) => f.name === name), name);
  }
  const c = parseCli("bot", base);
  assert.ok(!JSON.stringify(redacted(c)).includes('"pw"'));
});

Deno.test("CLI processes: --help exits 0, bad flags exit 2, a bad --play file fails at start naming it", async () => {
  const run = async (file: string, args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", file, ...args],
      cwd: root,
      env: { XMPP_JID: "", XMPP_PASSWORD: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      code: out.code,
      stdout: new TextDecoder().decode(out.stdout),
      stderr: new TextDecoder().decode(out.stderr),
    };
  };
  const help = await run("bot/main.ts", ["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--max-calls/);
  const bad = await run("bot/dial.ts", [
    "peer@x.org",
    "--jid",
    "a@x.org",
    "--password",
    "x",
    "--verify",
    "never",
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /error: --verify: expected require, prefer, off; got "never"/);
  assert.doesNotMatch(bad.stderr, /password.*x"/);

  // A bad --play file stops the bot and the dialler at start (before signing in), naming the file and why.
  const notMedia = await Deno.makeTempFile({ suffix: ".wav" });
  try {
    await Deno.writeTextFile(notMedia, "not a wav file\n");
    const login = ["--jid", "a@x.org", "--password", "s3cret-pw"];
    for (
      const [file, extra] of [["bot/main.ts", []], ["bot/dial.ts", ["peer@x.org"]]] as const
    ) {
      const missing = await run(file, [...extra, ...login, "--play", "/nonexistent.wav"]);
      assert.notEqual(missing.code, 0, `${file}: ${missing.stderr}`);
      assert.match(missing.stderr, /media file \/nonexistent\.wav does not exist/, file);
      const garbage = await run(file, [...extra, ...login, "--play", notMedia]);
      assert.notEqual(garbage.code, 0, `${file}: ${garbage.stderr}`);
      assert.ok(garbage.stderr.includes(`media file ${notMedia} cannot be decoded`), garbage.stderr);
      assert.doesNotMatch(missing.stderr + garbage.stderr, /s3cret-pw/);
    }
  } finally {
    await Deno.remove(notMedia);
  }
});

async function readLinesUntil(stream: ReadableStream<Uint8Array>, re: RegExp, sink: string[]): Promise<void> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let found = false;
  // Keep draining after the match so the child never blocks on a full pipe.
  return await new Promise((resolve, reject) => {
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        sink.push(value);
        if (!found && re.test(buf)) {
          found = true;
          resolve();
        }
      }
      if (!found) reject(new Error(`stream ended without ${re}: ${buf}`));
    })().catch(reject);
  });
}

Deno.test({
  name: "end to end: `deno run bot/dial.ts` against the in-process bot; SIGTERM to bot/main.ts mid-call",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "cli-test-" });
    try {
      await server.createAccount("bot", "botpw");
      await server.createAccount("caller", "callerpw");
      const common = ["--server", `${server.host}:${server.c2sPort}`, "--ca", server.certificatePath];

      await t.step("dialler subprocess → in-process bot: exit 0, verified JSON record, packets", async () => {
        const botConfig = parseCli("bot", [
          ...common,
          "--jid",
          `bot@${server.domain}/b`,
          "--password",
          "botpw",
          "--store",
          `${tmp}/bot`,
          "--verify",
          "require",
          "--allow",
          `caller@${server.domain}`,
        ]);
        const bot = await startBot(botConfig, { logger: quiet, summaries: false });
        try {
          const out = await new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              "bot/dial.ts",
              `bot@${server.domain}`,
              ...common,
              "--jid",
              `caller@${server.domain}/c`,
              "--store",
              `${tmp}/caller`,
              "--verify",
              "require",
              "--duration",
              "2",
              "--json",
              "--record-dir",
              `${tmp}/records`,
              "--log-level",
              "warn",
            ],
            cwd: root,
            env: { XMPP_PASSWORD: "callerpw" },
            stdout: "piped",
            stderr: "piped",
          }).output();
          const stdout = new TextDecoder().decode(out.stdout);
          const stderr = new TextDecoder().decode(out.stderr);
          assert.equal(out.code, 0, `dialler failed:\n${stdout}\n${stderr}`);
          assert.doesNotMatch(stderr, /callerpw/);
          const lines = stdout.trim().split("\n");
          assert.equal(lines.length, 1, stdout);
          const record = JSON.parse(lines[0]!) as CallRecord;
          assert.equal(record.direction, "outgoing");
          assert.equal(record.verification.omemo, true);
          assert.equal(record.verification.device, bot.endpoint.deviceId);
          assert.ok(record.verification.identityFingerprint);
          assert.ok((record.traffic.audio?.packetsReceived ?? 0) > 0, stdout);
          assert.ok((record.traffic.audio?.packetsSent ?? 0) > 0, stdout);
          assert.equal(record.srtpAuthFailures, 0);
          assert.equal(record.ended.reason, "success");
          assert.equal(record.ended.cause, "duration");
          assert.ok(record.phases.dtlsConnected! > 0);
          const onDisk = JSON.parse(await Deno.readTextFile(`${tmp}/records/${record.sid}.json`));
          assert.equal(onDisk.sid, record.sid);
          // The bot's side of the same call.
          for (let i = 0; i < 50 && bot.records.length === 0; i++) {
            await new Promise((r) => setTimeout(r, 100));
          }
          assert.equal(bot.records[0]?.sid, record.sid);
          assert.equal(bot.records[0]?.verification.omemo, true);
          assert.equal(bot.records[0]?.ended.by, "remote");

          // Chat commands from an allowed JID: "call me", then "status" during that call.
          const me = await createEndpoint({
            jid: `caller@${server.domain}/chat`,
            password: "callerpw",
            server: { host: server.host, port: server.c2sPort },
            caPem: server.certificatePem,
            storeDir: `${tmp}/caller-chat`,
            logger: quiet,
          });
          const myCalls = await setupCalls(me, { logger: quiet, verify: "require" });
          const stranger = await (async () => {
            await server.createAccount("stranger", "spw");
            return await createEndpoint({
              jid: `stranger@${server.domain}/s`,
              password: "spw",
              server: { host: server.host, port: server.c2sPort },
              caPem: server.certificatePem,
              storeDir: `${tmp}/stranger`,
              logger: quiet,
            });
          })();
          const strangerCalls = await setupCalls(stranger, { logger: quiet });
          try {
            const nextChat = () =>
              new Promise<string>((r) => {
                const off = me.onChat((m) => {
                  off();
                  r(m.body);
                });
              });
            const incoming = new Promise<import("../../bot/calls.ts").Call>((r) => {
              const off = myCalls.onIncoming((c) => {
                off();
                r(c);
              });
            });
            await me.sendChat(`bot@${server.domain}`, "call me");
            const back = await incoming;
            await back.connected;
            assert.equal(back.verification.omemo, true);
            let reply = nextChat();
            await me.sendChat(`bot@${server.domain}`, "status");
            assert.match(await reply, new RegExp(`1 call\\(s\\) in progress:\\n${back.sid}: outgoing`));
            await back.hangup();
            await back.ended;
            for (let i = 0; i < 50 && bot.active.size; i++) await new Promise((r) => setTimeout(r, 50));
            reply = nextChat();
            await me.sendChat(`bot@${server.domain}`, "status");
            assert.equal(await reply, "no calls in progress");
            // Not on the allow-list: declined.
            const refused = await strangerCalls.call(`bot@${server.domain}`);
            assert.equal((await refused.ended).reason, "decline");
            for (let i = 0; i < 50 && !bot.records.some((r) => r.sid === refused.sid); i++) {
              await new Promise((r) => setTimeout(r, 50));
            }
            const refusal = bot.records.find((r) => r.sid === refused.sid);
            assert.equal(refusal?.ended.reason, "decline");
            assert.equal(refusal?.ended.cause, "not on the allow-list");
          } finally {
            await myCalls.stop();
            await strangerCalls.stop();
            await me.close();
            await stranger.close();
          }
        } finally {
          await bot.shutdown();
        }
      });

      await t.step(
        "SIGTERM to a bot/main.ts subprocess mid-call: exit 0, peer's call ends with success",
        async () => {
          const child = new Deno.Command(Deno.execPath(), {
            args: [
              "run",
              "-A",
              "bot/main.ts",
              ...common,
              "--store",
              `${tmp}/bot`,
              "--json",
              "--log-level",
              "info",
            ],
            cwd: root,
            env: { XMPP_JID: `bot@${server.domain}/sub`, XMPP_PASSWORD: "botpw" },
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          const errText: string[] = [];
          const outText: string[] = [];
          const stdoutDone = readLinesUntil(child.stdout, /\n/, outText).catch(() => {});
          let caller;
          try {
            await readLinesUntil(child.stderr, /bot online/, errText);
            caller = await createEndpoint({
              jid: `caller@${server.domain}/c2`,
              password: "callerpw",
              server: { host: server.host, port: server.c2sPort },
              caPem: server.certificatePem,
              storeDir: `${tmp}/caller`,
              logger: quiet,
            });
            const calls = await setupCalls(caller, { logger: quiet, verify: "require" });
            const call = await calls.call(`bot@${server.domain}`);
            await call.connected;
            assert.equal(call.verification.omemo, true);
            await new Promise((r) => setTimeout(r, 500));
            child.kill("SIGTERM");
            const status = await child.status;
            assert.equal(status.code, 0, errText.join(""));
            assert.equal((await call.ended).reason, "success");
            await stdoutDone;
            const record = JSON.parse(outText.join("").trim().split("\n")[0]!) as CallRecord;
            assert.equal(record.sid, call.sid);
            assert.equal(record.ended.cause, "shutdown");
            assert.equal(record.ended.reason, "success");
            await calls.stop();
          } finally {
            try {
              child.kill("SIGKILL");
            } catch { /* exited */ }
            await child.status;
            await caller?.close();
          }
        },
      );
    } finally {
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
