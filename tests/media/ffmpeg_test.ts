import assert from "node:assert/strict";
import { FfmpegNotFoundError, resolveFfmpeg } from "../../media/ffmpeg.ts";

function envOf(vars: Record<string, string>) {
  return { get: (key: string) => vars[key] };
}

Deno.test("resolveFfmpeg() prefers FFMPEG_PATH and says so", async () => {
  const onPath = await resolveFfmpeg({ fresh: true });
  const found = await resolveFfmpeg({ fresh: true, env: envOf({ FFMPEG_PATH: onPath.path, PATH: "" }) });
  assert.equal(found.source, "FFMPEG_PATH");
  assert.match(found.version, /^ffmpeg version/);
});

Deno.test("resolveFfmpeg() falls back to PATH when FFMPEG_PATH is broken", async () => {
  const found = await resolveFfmpeg({
    fresh: true,
    env: envOf({ FFMPEG_PATH: "/nonexistent/ffmpeg", PATH: Deno.env.get("PATH") ?? "" }),
  });
  assert.equal(found.source, "PATH");
});

Deno.test("resolveFfmpeg() names everything it tried when there is no ffmpeg", async () => {
  const err = await resolveFfmpeg({
    fresh: true,
    env: envOf({ FFMPEG_PATH: "/nonexistent/ffmpeg", PATH: "/nonexistent" }),
  })
    .then(() => null, (e) => e);
  assert.ok(err instanceof FfmpegNotFoundError);
  assert.match(err.message, /FFMPEG_PATH=\/nonexistent\/ffmpeg/);
  assert.match(err.message, /ffmpeg-static/);
  assert.match(err.message, /PATH/);
  await resolveFfmpeg({ fresh: true });
});

/** Whether `pid` still runs (a zombie left to init counts as gone: it no longer runs). */
async function running(pid: number): Promise<boolean> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    return !/^State:\s+Z/m.test(status);
  } catch {
    return false;
  }
}

Deno.test({
  name: "resolveFfmpeg() reports the death wrapper used to tie ffmpeg to this process",
  fn: async () => {
    const found = await resolveFfmpeg({ fresh: true });
    // setpriv is part of util-linux on Debian: without it this machine would leak ffmpeg on a crash.
    assert.equal(found.deathWrapper.length, 4, JSON.stringify(found));
    assert.match(found.deathWrapper[0]!, /setpriv$/);
    assert.deepEqual(found.deathWrapper.slice(1), ["--pdeathsig", "KILL", "--"]);
  },
});

Deno.test({
  name: "a Deno process killed by SIGKILL leaves no ffmpeg source behind",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const sources = new URL("../../media/sources.ts", import.meta.url).href;
    const script = `import { startSource } from "${sources}";
      const s = await startSource({ type: "tone" }, { kind: "audio" });
      console.log(s.pid);
      setInterval(() => {}, 1000);`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      cwd: new URL("../..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const pid = Number(out.trim());
    assert.ok(pid > 0, `child printed ${JSON.stringify(out)}`);
    assert.equal(await running(pid), true, "ffmpeg runs while its parent lives");
    // A second later it still runs: the death signal is tied to the parent, not to a short-lived thread.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await running(pid), true, "ffmpeg still runs a second later");
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    await reader.cancel().catch(() => {});
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      gone = !(await running(pid));
      if (!gone) await new Promise((r) => setTimeout(r, 50));
    }
    if (!gone) Deno.kill(pid, "SIGKILL"); // do not leak it from the test
    assert.ok(gone, `ffmpeg ${pid} survived its parent`);
  },
});
