import assert from "node:assert/strict";
import { power, probe } from "./analysis.ts";
import { isVp8KeyframeStart, startSource } from "../../media/sources.ts";
import { JitterBuffer, RecorderError, startRecorder } from "../../media/recorder.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "440 Hz tone source → recorder → Ogg/Opus of ~3 s whose dominant frequency is 440 Hz",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/tone.ogg`;
    const rec = await startRecorder({ kind: "audio", path, codec: "opus" });
    const src = await startSource({ type: "tone", frequency: 440 }, { kind: "audio" });
    src.onPacket((p) => rec.write(p));
    await new Promise((r) => setTimeout(r, 3000));
    const res = await rec.stop();
    await src.stop();
    assert.equal(res.lost, 0);
    assert.ok(res.bytes > 1000 && res.packets > 130, JSON.stringify(res));
    const d = Number((await probe(path, "format=duration")).duration);
    assert.ok(Math.abs(d - 3) < 0.3, `duration ${d}`);
    const pcm = await new Deno.Command("ffmpeg", {
      args: ["-v", "error", "-i", path, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
      stdout: "piped",
    }).output();
    const b = pcm.stdout;
    const x = new Int16Array(b.buffer, b.byteOffset, Math.floor(b.byteLength / 2)).slice(4800, 4800 + 48000);
    let best = 0, bestP = 0;
    for (let f = 100; f <= 2000; f += 10) {
      const p = power(x, f, 48000);
      if (p > bestP) [best, bestP] = [f, p];
    }
    assert.ok(best >= 400 && best <= 480, `dominant ${best} Hz`);
    assert.ok(power(x, 440, 48000) > 100 * power(x, 1000, 48000));
    await Deno.remove(dir, { recursive: true });
  },
});

/** Distinct RTP timestamps (= video frames) among `packets`. */
const framesIn = (packets: Uint8Array[]) =>
  new Set(packets.map((p) => new DataView(p.buffer, p.byteOffset).getUint32(4))).size;

Deno.test({
  name: "test video 320x240 → VP8 → WebM: 320x240, every frame sent is in the file",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/video.webm`;
    const rec = await startRecorder({ kind: "video", path, codec: "vp8" });
    const src = await startSource({ type: "testvideo", width: 320, height: 240 }, { kind: "video" });
    const fed: Uint8Array[] = [];
    const off = src.onPacket((p) => {
      fed.push(p);
      rec.write(p);
    });
    await new Promise((r) => setTimeout(r, 2000));
    off(); // what was fed is what the file must hold
    const res = await rec.stop();
    await src.stop();
    const info = await probe(path, "stream=width,height,nb_read_frames", ["-count_frames"]);
    const detail = JSON.stringify({ info, res, framesFed: framesIn(fed) });
    assert.equal(info.width, "320", detail);
    assert.equal(info.height, "240", detail);
    assert.equal(res.packets, fed.length, detail);
    assert.equal(res.lost, 0, detail);
    // Frames are counted, not expected from the wall clock: a loaded machine slows the encoder, never the file.
    assert.ok(framesIn(fed) >= 2, detail);
    assert.ok(Number(info.nb_read_frames) >= framesIn(fed), detail);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name:
    "VP8 recording stopped right after its first keyframe: the keyframe is in the file (stop waits for ffmpeg)",
  ...opts,
  fn: async () => {
    // ffmpeg reads "q" only once its output is open; said earlier it dropped what it had probed (a header-only
    // file). stop() right after the first frame exercises exactly that window.
    const dir = await Deno.makeTempDir();
    const path = `${dir}/one.webm`;
    const rec = await startRecorder({ kind: "video", path, codec: "vp8" });
    const src = await startSource({ type: "testvideo", width: 320, height: 240 }, { kind: "video" });
    const frame: Uint8Array[] = [];
    let complete!: () => void;
    const done = new Promise<void>((r) => complete = r);
    const off = src.onPacket((p) => {
      if (frame.length === 0 && !isVp8KeyframeStart(p)) return;
      if (frame.length && (frame.at(-1)![1]! & 0x80)) return; // marker seen: the keyframe is complete
      frame.push(p);
      if (p[1]! & 0x80) complete();
    });
    await done;
    off();
    for (const p of frame) rec.write(p);
    const res = await rec.stop();
    await src.stop();
    const info = await probe(path, "stream=width,height,nb_read_frames", ["-count_frames"]);
    assert.equal(info.width, "320", JSON.stringify({ info, res }));
    assert.equal(info.height, "240");
    assert.ok(Number(info.nb_read_frames) >= 1, JSON.stringify({ info, res }));
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "VP8 packets without any keyframe → stop() rejects with a RecorderError saying so",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const path = `${dir}/none.webm`;
    const rec = await startRecorder({ kind: "video", path, codec: "vp8" });
    const src = await startSource({ type: "testvideo", width: 320, height: 240 }, { kind: "video" });
    let fed = 0;
    let inKeyframe = false;
    const off = src.onPacket((p) => {
      // Skip every keyframe (from its first packet to its marker).
      if (isVp8KeyframeStart(p)) inKeyframe = true;
      if (inKeyframe) {
        if (p[1]! & 0x80) inKeyframe = false;
        return;
      }
      fed++;
      rec.write(p);
    });
    await new Promise((r) => setTimeout(r, 1000));
    off();
    const err = await rec.stop().catch((e) => e);
    await src.stop();
    assert.ok(fed > 0);
    assert.ok(err instanceof RecorderError, String(err));
    assert.match(err.message, /no VP8 keyframe|none of its \d+ packets started a VP8 keyframe/);
    assert.equal(err.partial?.packets, fed);
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "unwritable recording path → RecorderError (nonexistent dir, /proc, /dev/full = disk full)",
  ...opts,
  fn: async () => {
    for (const path of ["/nonexistent-dir/x.ogg", "/proc/x.ogg"]) {
      const err = await startRecorder({ kind: "audio", path, codec: "opus" }).catch((e) => e);
      assert.ok(err instanceof RecorderError, `${path}: ${err}`);
      assert.match(err.message, /cannot record/);
    }
    const rec = await startRecorder({ kind: "audio", path: "/dev/full", codec: "opus" });
    const src = await startSource({ type: "tone" }, { kind: "audio" });
    src.onPacket((p) => rec.write(p));
    await new Promise((r) => setTimeout(r, 1500));
    const err = await rec.stop().catch((e) => e);
    await src.stop();
    assert.ok(err instanceof RecorderError, String(err));
    assert.match(err.message, /No space left|disk full|failed/);
  },
});

Deno.test("jitter buffer reorders and counts gaps", () => {
  const out: number[] = [];
  const jb = new JitterBuffer(3, (p) => out.push((p[2]! << 8) | p[3]!));
  const pkt = (s: number) => new Uint8Array([0x80, 111, s >> 8, s & 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
  for (const s of [65534, 0, 65535, 1, 3, 4, 5, 6, 1]) jb.push(pkt(s));
  jb.flush();
  assert.deepEqual(out, [65534, 65535, 0, 1, 3, 4, 5, 6]);
  assert.equal(jb.lost, 1);
  assert.equal(jb.late, 1);
});
