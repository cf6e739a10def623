/**
 * The bot's file features and `deno task send-file` end to end on a real Prosody: flags, the chat commands
 * "files" / "send NAME" (safe lookup inside --files-dir), receiving into --download-dir, the send-file
 * process with --json and its exit status.
 */
import assert from "node:assert/strict";
import { connectionOn, endpointOn, quiet } from "./_support.ts";
import { filesLog, nextIncoming, randomFile, sha256Of } from "./_files_support.ts";
import { CliError, helpText, parseCli, parseSize } from "../../bot/cli.ts";
import { safeLookup, startBot } from "../../bot/main.ts";
import { setupFileTransfer } from "../../bot/files.ts";
import { progressLine } from "../../bot/send_file.ts";
import { startProsody } from "../../scripts/prosody.ts";
import type { ChatMessage } from "../../bot/endpoint.ts";

const root = new URL("../../", import.meta.url).pathname;
const base = ["--jid", "bot@example.org", "--password", "pw"];

Deno.test("CLI: file flags of the bot and of send-file", () => {
  const bot = parseCli("bot", [
    ...base,
    "--download-dir",
    "in",
    "--max-file-size",
    "10M",
    "--files-unencrypted",
    "accept",
    "--files-dir",
    "out",
  ]);
  assert.equal(bot.downloadDir, "in");
  assert.equal(bot.maxFileSize, 10 * 1024 * 1024);
  assert.equal(bot.filesUnencrypted, "accept");
  assert.equal(bot.filesDir, "out");
  const defaults = parseCli("bot", base);
  assert.equal(defaults.downloadDir, undefined);
  assert.equal(defaults.maxFileSize, 1024 ** 3);
  assert.equal(defaults.filesUnencrypted, "refuse");

  const send = parseCli("send-file", [
    "peer@x.org/phone",
    "a.bin",
    ...base,
    "--transport",
    "ibb",
    "--no-encrypt",
  ]);
  assert.equal(send.peer, "peer@x.org/phone");
  assert.equal(send.path, "a.bin");
  assert.equal(send.transport, "ibb");
  assert.equal(send.encrypt, false);
  const plain = parseCli("send-file", ["peer@x.org/phone", "a.bin", ...base, "--json"]);
  assert.equal(plain.transport, "auto");
  assert.equal(plain.encrypt, true);
  assert.equal(plain.json, true);
  // A bare JID is taken (resolved to a resource when sending).
  assert.equal(parseCli("send-file", ["peer@x.org", "a.bin", ...base]).peer, "peer@x.org");

  assert.equal(parseSize("x", "1048576"), 1048576);
  assert.equal(parseSize("x", "512K"), 512 * 1024);
  assert.equal(parseSize("x", "1G"), 1024 ** 3);
  assert.equal(parseSize("x", "1.5m"), 1.5 * 1024 * 1024);
  for (
    const [args, re] of [
      [["peer@@x.org", "a.bin", ...base], /JID to send to/],
      [["peer@x.org/r", ...base], /usage: deno task send-file JID PATH/],
      [["peer@x.org/r", "a", ...base, "--transport", "udp"], /--transport/],
      [["peer@x.org/r", "a", ...base, "--video"], /unknown flag "--video" for send-file/],
    ] as const
  ) {
    assert.throws(
      () => parseCli("send-file", args),
      (e: unknown) => e instanceof CliError && re.test(e.message),
    );
  }
  for (const v of ["", "10X", "-1", "0"]) {
    assert.throws(() => parseCli("bot", [...base, "--max-file-size", v]), CliError, v);
  }
  assert.throws(() => parseCli("bot", [...base, "--files-unencrypted", "maybe"]), CliError);
  assert.throws(() => parseCli("call", ["a@x.org", ...base, "--download-dir", "d"]), CliError);
  assert.match(helpText("send-file"), /--no-encrypt/);
  assert.match(helpText("bot"), /--download-dir/);
  assert.doesNotMatch(helpText("send-file"), /--play/);
  assert.equal(progressLine(50, 100, 1, 10), "[#####.....]  50.0% 0.0/0.0 MB 0.0 MB/s");
});

Deno.test("safeLookup: only plain names of regular files inside the directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/files`);
    await Deno.writeTextFile(`${dir}/files/ok.txt`, "ok");
    await Deno.writeTextFile(`${dir}/secret`, "no");
    await Deno.writeTextFile(`${dir}/files/.hidden`, "no");
    await Deno.symlink(`${dir}/secret`, `${dir}/files/link`);
    await Deno.mkdir(`${dir}/files/sub`);
    assert.equal(await safeLookup(`${dir}/files`, "ok.txt"), await Deno.realPath(`${dir}/files/ok.txt`));
    for (const name of ["../secret", "link", ".hidden", "sub", "", "/etc/passwd", "..", "missing", "a\0b"]) {
      assert.equal(await safeLookup(`${dir}/files`, name), undefined, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "bot: 'send NAME' answers with the file; send-file delivers into --download-dir; exit status",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "files-bot-" });
    const cleanups: (() => Promise<void>)[] = [];
    try {
      const filesDir = `${tmp}/outbox`;
      const downloadDir = `${tmp}/inbox`;
      await Deno.mkdir(filesDir);
      await Deno.mkdir(downloadDir);
      const helloHash = await randomFile(`${filesDir}/hello.bin`, 100_000);
      await Deno.writeTextFile(`${tmp}/secret.txt`, "not for you");

      const botEndpoint = await endpointOn(server, "bot", `${tmp}/stores`);
      const alice = await endpointOn(server, "alice", `${tmp}/stores`);
      await server.createAccount("sender", "pw");
      const config = parseCli("bot", [
        "--jid",
        botEndpoint.conn.jid,
        "--password",
        "pw",
        "--download-dir",
        downloadDir,
        "--files-dir",
        filesDir,
        "--max-file-size",
        "1M",
        "--allow",
        alice.conn.bareJid,
        "--allow",
        `sender@${server.domain}`,
        "--log-level",
        "silent",
      ]);
      const bot = await startBot(config, { endpoint: botEndpoint, logger: filesLog, summaries: false });
      cleanups.push(async () => {
        await bot.shutdown();
        await botEndpoint.close();
      });
      const aliceFiles = await setupFileTransfer(alice, { logger: quiet, downloadDir: `${tmp}/alice-in` });
      await Deno.mkdir(`${tmp}/alice-in`);
      cleanups.push(async () => {
        await aliceFiles.stop();
        await alice.close();
      });
      assert.ok(botEndpoint.disco.features().includes("urn:xmpp:jingle:jet-omemo:0"));
      const replies: string[] = [];
      alice.onChat((m: ChatMessage) => replies.push(m.body));
      const nextReply = async (n: number) => {
        for (let i = 0; i < 200 && replies.length < n; i++) await new Promise((r) => setTimeout(r, 50));
        return replies[n - 1];
      };

      await t.step("chat 'files' lists, 'send NAME' sends the file to the asking device", async () => {
        await alice.sendChat(botEndpoint.conn.bareJid, "files");
        assert.match((await nextReply(1)) ?? "", /hello\.bin/);
        const incoming = nextIncoming(aliceFiles);
        await alice.sendChat(botEndpoint.conn.bareJid, "send hello.bin");
        const record = await (await incoming).done;
        assert.ok(record.ok, JSON.stringify(record.ended));
        assert.equal(record.encrypted, true);
        assert.equal(await sha256Of(record.path!), helloHash);
      });

      await t.step("'send ../secret.txt' finds nothing outside --files-dir", async () => {
        await alice.sendChat(botEndpoint.conn.bareJid, "send ../secret.txt");
        assert.match((await nextReply(2)) ?? "", /no file "\.\.\/secret\.txt"/);
      });

      const caFile = `${tmp}/ca.pem`;
      await Deno.writeTextFile(caFile, server.certificatePem);
      const sendFile = async (path: string, extra: string[] = [], to = botEndpoint.conn.jid) => {
        const out = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "bot/send_file.ts",
            to,
            path,
            "--jid",
            `sender@${server.domain}/cli`,
            "--server",
            `${server.host}:${server.c2sPort}`,
            "--ca",
            caFile,
            "--store",
            `${tmp}/stores/sender`,
            "--json",
            "--log-level",
            "warn",
            ...extra,
          ],
          cwd: root,
          env: { XMPP_PASSWORD: "pw" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        return {
          code: out.code,
          stdout: new TextDecoder().decode(out.stdout),
          stderr: new TextDecoder().decode(out.stderr),
        };
      };

      await t.step("deno task send-file: JSON record, exit 0, file in the bot's download dir", async () => {
        const path = `${tmp}/upload.bin`;
        const hash = await randomFile(path, 300_000);
        const r = await sendFile(path, ["--transport", "s5b"]);
        assert.equal(r.code, 0, r.stderr);
        const record = JSON.parse(r.stdout.trim());
        assert.equal(record.ok, true);
        assert.equal(record.direction, "outgoing");
        assert.equal(record.encrypted, true);
        assert.equal(record.transport.kind, "s5b");
        assert.equal(record.file.sha256, hash);
        assert.doesNotMatch(r.stderr + r.stdout, /"pw"/);
        const stored = (await Array.fromAsync(Deno.readDir(downloadDir))).map((e) => e.name);
        assert.deepEqual(stored, ["upload.bin"]);
        assert.equal(await sha256Of(`${downloadDir}/upload.bin`), hash);
      });

      await t.step(
        "send-file to the bot's bare JID: needs a subscription, then picks the bot's resource",
        async () => {
          const path = `${tmp}/to-bare.bin`;
          const hash = await randomFile(path, 50_000);
          const bareJid = botEndpoint.conn.bareJid;
          const unsubscribed = await sendFile(path, [], bareJid);
          assert.equal(unsubscribed.code, 1);
          assert.match(unsubscribed.stderr, /no available resource.*not subscribed/);
          // The bot pre-approves, the sender subscribes (the roster lives on the server, so the CLI sees it).
          await botEndpoint.conn.sendPresence({ type: "subscribed", to: `sender@${server.domain}` });
          const setup = await connectionOn(server, "sender", "setup");
          const seen = new Promise<void>((resolve) => {
            setup.onPresence((p, from) => {
              if (from === botEndpoint.conn.jid && p.attrs.type === undefined) resolve();
            });
          });
          await setup.sendPresence(); // available: the server sends presence only to available resources
          await setup.sendPresence({ type: "subscribe", to: bareJid });
          await seen;
          await setup.close();
          const r = await sendFile(path, ["--transport", "ibb"], bareJid);
          assert.equal(r.code, 0, r.stderr);
          const record = JSON.parse(r.stdout.trim());
          assert.equal(record.peer, botEndpoint.conn.jid);
          assert.equal(record.file.sha256, hash);
          assert.equal(await sha256Of(`${downloadDir}/to-bare.bin`), hash);
          await Deno.remove(`${downloadDir}/to-bare.bin`);
        },
      );

      await t.step("send-file: a file over --max-file-size is declined: exit 1 with the reason", async () => {
        const path = `${tmp}/big.bin`;
        await randomFile(path, 2 * 1024 * 1024);
        const r = await sendFile(path, ["--transport", "ibb"]);
        assert.equal(r.code, 1);
        const record = JSON.parse(r.stdout.trim());
        assert.equal(record.ended.reason, "decline");
        assert.match(r.stderr, /send failed: decline.*too large/);
      });

      await t.step("send-file: plain refused by the bot's default policy; missing file: exit 1", async () => {
        const r = await sendFile(`${filesDir}/hello.bin`, ["--no-encrypt", "--transport", "ibb"]);
        assert.equal(r.code, 1);
        assert.equal(JSON.parse(r.stdout.trim()).ended.reason, "decline");
        const missing = await sendFile(`${tmp}/nope.bin`);
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /send failed: .*nope\.bin/);
      });
    } finally {
      for (const c of cleanups.reverse()) await c().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
