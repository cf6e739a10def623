/**
 * Finds the ffmpeg binary: `FFMPEG_PATH`, then ffmpeg-static's binary if its (network-only) install
 * step ever put one on disk, then `ffmpeg` on PATH. The result says which one was chosen.
 *
 * {@link ffmpegCommand} starts it so that it cannot outlive us: through util-linux `setpriv --pdeathsig
 * KILL` when that works here (the kernel SIGKILLs ffmpeg when the thread that spawned it dies, even when
 * Deno itself is SIGKILLed and no `unload` handler runs). `setpriv` execs ffmpeg, so the child's pid is
 * ffmpeg's.
 *
 * @module
 */

/** Where the ffmpeg binary came from. */
export type FfmpegSource = "FFMPEG_PATH" | "ffmpeg-static" | "PATH";

/** A usable ffmpeg binary. */
export interface FfmpegBinary {
  /** Absolute or PATH-relative file name of the binary. */
  path: string;
  /** Which lookup found it. */
  source: FfmpegSource;
  /** First line of `ffmpeg -version`. */
  version: string;
  /** Command prefix that kills ffmpeg when we die (`setpriv --pdeathsig KILL --`); empty when unavailable. */
  deathWrapper: string[];
}

/** No ffmpeg could be found; `tried` lists every candidate and why it was refused. */
export class FfmpegNotFoundError extends Error {
  /**
   * Lists the refused candidates in the message.
   * @param tried every candidate looked at, with why it was refused
   */
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

/** `setpriv --pdeathsig KILL --` if util-linux setpriv exists and accepts it on this machine, else `[]`. */
async function findDeathWrapper(env: { get(key: string): string | undefined }): Promise<string[]> {
  const setpriv = await onPath("setpriv", env) ??
    (await Deno.stat("/usr/bin/setpriv").then((s) => s.isFile, () => false) ? "/usr/bin/setpriv" : null);
  if (!setpriv) return [];
  const wrapper = [setpriv, "--pdeathsig", "KILL", "--"];
  try {
    const out = await new Deno.Command(setpriv, {
      args: [...wrapper.slice(1), "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success ? wrapper : [];
  } catch {
    return [];
  }
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
    const deathWrapper = await findDeathWrapper(env);
    const fromEnv = env.get("FFMPEG_PATH");
    if (fromEnv) {
      const version = await probe(fromEnv);
      if (typeof version === "string") {
        return { path: fromEnv, source: "FFMPEG_PATH" as const, version, deathWrapper };
      }
      tried.push(`FFMPEG_PATH=${fromEnv} (${version.message})`);
    } else {
      tried.push("FFMPEG_PATH (unset)");
    }
    const staticPath = await ffmpegStaticPath();
    if (staticPath) {
      const version = await probe(staticPath);
      if (typeof version === "string") {
        return { path: staticPath, source: "ffmpeg-static" as const, version, deathWrapper };
      }
      tried.push(`ffmpeg-static ${staticPath} (${version.message})`);
    } else {
      tried.push("ffmpeg-static (no binary)");
    }
    const pathBinary = await onPath("ffmpeg", env);
    if (pathBinary) {
      const version = await probe(pathBinary);
      if (typeof version === "string") {
        return { path: pathBinary, source: "PATH" as const, version, deathWrapper };
      }
      tried.push(`PATH ${pathBinary} (${version.message})`);
    } else {
      tried.push("ffmpeg on PATH (none)");
    }
    throw new FfmpegNotFoundError(tried);
  })();
  cached.catch(() => cached = null);
  return cached;
}

/**
 * A `Deno.Command` running `ffmpeg` with `args`, wrapped so that ffmpeg gets SIGKILL when this process dies
 * (see the module doc). `child.pid` is ffmpeg's pid either way.
 */
export function ffmpegCommand(
  ffmpeg: FfmpegBinary,
  args: string[],
  options: Omit<Deno.CommandOptions, "args"> = {},
): Deno.Command {
  const [wrapper, ...wrapperArgs] = ffmpeg.deathWrapper;
  return wrapper
    ? new Deno.Command(wrapper, { ...options, args: [...wrapperArgs, ffmpeg.path, ...args] })
    : new Deno.Command(ffmpeg.path, { ...options, args });
}

/** The lines of a child's output stream (ffmpeg stderr or `-progress`), the last one even without a newline;
 * ends quietly when the stream closes or errors (the child died). */
export async function* outputLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  try {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        yield buf.slice(0, i);
        buf = buf.slice(i + 1);
      }
    }
  } catch { /* stream closed */ }
  if (buf) yield buf;
}
