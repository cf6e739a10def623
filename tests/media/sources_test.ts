import assert from "node:assert/strict";
import {
  checkMediaFile,
  MediaSourceError,
  RtpContinuity,
  sharedSource,
  sharedSourceCount,
  startSource,
  stopIdleSources,
} from "../../media/sources.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const alive = (pid: number) => Deno.stat(`/proc/${pid}`).then(() => true, () => false);

Deno.test({
  name: "missing media file → MediaSourceError before ffmpeg is spawned",
  ...opts,
  fn: async () => {
    const err = await startSource({ type: "file", path: "/nonexistent/a.ogg" }, { kind: "audio" }).catch((
      e,
    ) => e);
    assert.ok(err instanceof MediaSourceError);
    assert.match(err.message, /does not exist/);
  },
});

Deno.test({
  name: "file without a stream of the requested kind → MediaSourceError",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/tone.ogg`;
    const out = await new Deno.Command("ffmpeg", {
      args: ["-v", "error", "-f", "lavfi", "-i", "sine=d=0.5", "-c:a", "libopus", path],
    }).output();
    assert.ok(out.success);
    const err = await startSource({ type: "file", path }, { kind: "video" }).catch((e) => e);
    assert.ok(err instanceof MediaSourceError, String(err));
    assert.match(err.message, /has no video stream/);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "killing the ffmpeg source mid-stream resolves exited with a reason, no zombie",
  ...opts,
  fn: async () => {
    const logs: string[] = [];
    const src = await startSource({ type: "tone" }, {
      kind: "audio",
      logger: (level, msg) => logs.push(`${level} ${msg}`),
    });
    let n = 0;
    src.onPacket(() => n++);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(n > 3);
    Deno.kill(src.pid, "SIGKILL");
    const ex = await src.exited;
    assert.equal(ex.signal, "SIGKILL");
    assert.match(ex.reason, /killed by SIGKILL/);
    assert.ok(logs.some((l) => l.startsWith("warn media source exited")));
    assert.equal(await alive(src.pid), false); // reaped: not even a zombie entry
  },
});

Deno.test({
  name: "shared source: one encoder for many subscribers, stopped with the last release",
  ...opts,
  fn: async () => {
    const a = await sharedSource({ type: "tone", frequency: 300 }, "audio");
    const b = await sharedSource({ type: "tone", frequency: 300 }, "audio");
    assert.equal(a.source, b.source);
    assert.equal(sharedSourceCount(), 1);
    let na = 0, nb = 0;
    a.source.onPacket(() => na++);
    const off = b.source.onPacket(() => nb++);
    await new Promise((r) => setTimeout(r, 300));
    off();
    assert.ok(na > 5 && nb > 5);
    await a.release();
    assert.equal(await alive(a.source.pid), true);
    await b.release();
    assert.equal(sharedSourceCount(), 0);
    assert.equal((await a.source.exited).reason, "stopped");
    assert.equal(await alive(a.source.pid), false);
  },
});

Deno.test("RtpContinuity: a new source continues the sequence numbers and timestamps of the stream", () => {
  let now = 1000;
  const c = new RtpContinuity(48000, () => now);
  const pkt = (seq: number, ts: number) => {
    const p = new Uint8Array(16);
    p[0] = 0x80;
    const v = new DataView(p.buffer);
    v.setUint16(2, seq);
    v.setUint32(4, ts);
    return p;
  };
  const read = (p: Uint8Array) => {
    const v = new DataView(p.buffer, p.byteOffset);
    return [v.getUint16(2), v.getUint32(4)];
  };
  // The first source passes through untouched (same buffer).
  c.newSource();
  const first = pkt(65534, 4294967000);
  assert.equal(c.rewrite(first), first);
  now += 20;
  assert.deepEqual(read(c.rewrite(pkt(65535, 4294967960 >>> 0))), [65535, 4294967960 >>> 0]);
  // 100 ms later a restarted encoder begins at random numbers: shifted to follow on, across the wrap.
  now += 100;
  c.newSource();
  const fresh = pkt(12, 777);
  const shifted = c.rewrite(fresh);
  assert.notEqual(shifted, fresh);
  assert.deepEqual(read(fresh), [12, 777], "the shared source packet is not modified");
  assert.deepEqual(read(shifted), [0, (4294967960 + 4800) >>> 0]);
  now += 20;
  assert.deepEqual(read(c.rewrite(pkt(13, 777 + 960))), [1, (4294967960 + 4800 + 960) >>> 0]);
});

Deno.test({
  name: "checkMediaFile: missing, not a file, undecodable → MediaSourceError naming the file; streams found",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const garbage = `${dir}/garbage.mp4`;
      await Deno.writeTextFile(garbage, "no media in here\n".repeat(64));
      for (
        const [path, why] of [
          [`${dir}/missing.wav`, /does not exist/],
          [dir, /is not a regular file/],
          [garbage, /cannot be decoded: .*Invalid data/],
        ] as const
      ) {
        const err = await checkMediaFile(path).catch((e) => e);
        assert.ok(err instanceof MediaSourceError, `${path}: ${err}`);
        assert.match(err.message, why);
        assert.ok(err.message.includes(path), err.message);
      }
      const wav = `${dir}/tone.wav`;
      const made = await new Deno.Command("ffmpeg", {
        args: ["-v", "error", "-f", "lavfi", "-i", "sine=d=0.2", wav],
      }).output();
      assert.ok(made.success);
      assert.deepEqual(await checkMediaFile(wav), { audio: true, video: false });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "shared source with lingerMs: reused warm after the last release, stopped by stopIdleSources",
  ...opts,
  fn: async () => {
    const spec = { type: "tone" as const, frequency: 350 };
    const a = await sharedSource(spec, "audio", { lingerMs: 60_000 });
    await a.release();
    // Still running, and the next user gets the same encoder (no new ffmpeg).
    assert.equal(await alive(a.source.pid), true);
    const b = await sharedSource(spec, "audio", { lingerMs: 60_000 });
    assert.equal(b.source, a.source);
    await b.release();
    assert.equal(sharedSourceCount(), 1);
    await stopIdleSources();
    assert.equal(sharedSourceCount(), 0);
    assert.equal((await a.source.exited).reason, "stopped");
    assert.equal(await alive(a.source.pid), false);
    // A short linger runs out on its own.
    const c = await sharedSource(spec, "audio", { lingerMs: 50 });
    assert.notEqual(c.source, a.source);
    await c.release();
    assert.equal((await c.source.exited).reason, "stopped");
    assert.equal(sharedSourceCount(), 0);
  },
});
