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
