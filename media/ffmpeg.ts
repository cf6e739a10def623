/**
 * Finds the ffmpeg binary: `FFMPEG_PATH`, then ffmpeg-static's binary if its (network-only) install
 * step ever put one on disk, then `ffmpeg` on PATH. The result says which one was chosen.
 *
 * @module
 */

/** Where the ffmpeg binary came from. */
export type FfmpegSource = "FFMPEG_PATH" | "ffmpeg-static" | "PATH";

/** A usable ffmpeg binary. */
export interface FfmpegBinary {
  path: string;
  source: FfmpegSource;
  /** First line of `ffmpeg -version`. */
  version: string;
}

/** No ffmpeg could be found; `tried` lists every candidate and why it was refused. */
export class FfmpegNotFoundError extends Error {
  constructor(readonly tried: string[]) {
    super(`Cannot find ffmpeg: tried ${tried.join("; ")}`);
    this.name = "FfmpegNotFoundError";
  }
}

async function probe(path: string): Promise<string | Error> {
  try {
    const out = await new Deno.Command(path, {
      args: ["-hide_banner", "-version"],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    if (!out.success) return new Error(`exited with ${out.code}`);
    return new TextDecoder().decode(out.stdout).split("\n")[0] ?? "";
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

async function ffmpegStaticPath(): Promise<string | null> {
  try {
    const mod = await import("ffmpeg-static");
    const path = (mod as { default?: unknown }).default;
    return typeof path === "string" ? path : null;
  } catch {
    return null;
  }
}

async function onPath(name: string, env: { get(key: string): string | undefined }): Promise<string | null> {
  for (const dir of (env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const candidate = `${dir}/${name}`;
    try {
      const info = await Deno.stat(candidate);
      if (info.isFile) return candidate;
    } catch { /* not here */ }
  }
  return null;
}

let cached: Promise<FfmpegBinary> | null = null;

/** Resolves ffmpeg once per process (pass `fresh` to look again, e.g. after the env changed). */
export function resolveFfmpeg(
  options: { fresh?: boolean; env?: { get(key: string): string | undefined } } = {},
): Promise<FfmpegBinary> {
  if (cached && !options.fresh) return cached;
  const env = options.env ?? Deno.env;
  cached = (async () => {
    const tried: string[] = [];
    const fromEnv = env.get("FFMPEG_PATH");
    if (fromEnv) {
      const version = await probe(fromEnv);
      if (typeof version === "string") return { path: fromEnv, source: "FFMPEG_PATH" as const, version };
      tried.push(`FFMPEG_PATH=${fromEnv} (${version.message})`);
    } else {
      tried.push("FFMPEG_PATH (unset)");
    }
    const staticPath = await ffmpegStaticPath();
    if (staticPath) {
      const version = await probe(staticPath);
      if (typeof version === "string") return { path: staticPath, source: "ffmpeg-static" as const, version };
      tried.push(`ffmpeg-static ${staticPath} (${version.message})`);
    } else {
      tried.push("ffmpeg-static (no binary)");
    }
    const pathBinary = await onPath("ffmpeg", env);
    if (pathBinary) {
      const version = await probe(pathBinary);
      if (typeof version === "string") return { path: pathBinary, source: "PATH" as const, version };
      tried.push(`PATH ${pathBinary} (${version.message})`);
    } else {
      tried.push("ffmpeg on PATH (none)");
    }
    throw new FfmpegNotFoundError(tried);
  })();
  cached.catch(() => cached = null);
  return cached;
}
