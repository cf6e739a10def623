import assert from "node:assert/strict";
import { MediaSourceError, sharedSource, sharedSourceCount, startSource } from "../../media/sources.ts";

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
