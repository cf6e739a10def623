/** Measurements of recorded media files for tests: ffprobe fields and a Goertzel tone detector. */

/** Runs ffprobe on `path` and returns the requested `-show_entries` as key/value pairs. */
export async function probe(
  path: string,
  entries: string,
  extra: string[] = [],
): Promise<Record<string, string>> {
  const out = await new Deno.Command("ffprobe", {
    args: ["-v", "error", ...extra, "-show_entries", entries, "-of", "default=nw=1", path],
  }).output();
  const r: Record<string, string> = {};
  for (const l of new TextDecoder().decode(out.stdout).split("\n")) {
    const [k, v] = l.split("=");
    if (k && v !== undefined) r[k] = v;
  }
  return r;
}

/** Goertzel power of `freq` in s16 mono samples. */
export function power(x: Int16Array, freq: number, rate: number): number {
  const k = 2 * Math.cos((2 * Math.PI * freq) / rate);
  let s1 = 0, s2 = 0;
  for (let i = 0; i < x.length; i++) {
    const s0 = x[i]! + k * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return s1 * s1 + s2 * s2 - k * s1 * s2;
}
