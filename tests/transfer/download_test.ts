import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import {
  DownloadError,
  type DownloadOptions,
  DownloadRefusedError,
  openDownload,
  safeFileName,
} from "../../transfer/download.ts";

const MiB = 1024 * 1024;

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "download-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A ReadableStream of `data` in chunks of `size`, optionally failing after `failAfter` bytes. */
function source(data: Uint8Array, size = 4096, failAfter?: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (failAfter !== undefined && off >= failAfter) return c.error(new Error("peer reset"));
      if (off >= data.length) return c.close();
      c.enqueue(data.slice(off, off + size));
      off += size;
    },
  });
}

const opts = (dir: string, over: Partial<DownloadOptions> = {}): DownloadOptions => ({
  dir,
  name: "x.bin",
  expectedSize: 10_000,
  maxSize: 100 * MiB,
  reserveBytes: 0,
  ...over,
});

async function assertDownloadError(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DownloadError, `expected DownloadError, got ${e}`);
    assert.equal(e.code, code);
    return true;
  });
}

Deno.test("safeFileName: traversal, absolute, backslash, URL-encoded, NUL, huge, reserved, hidden, unicode", () => {
  const cases: [string | undefined, string][] = [
    ["../../x", "x"],
    ["/etc/passwd", "passwd"],
    ["..\\x", "x"],
    ["..\\..\\Windows\\System32\\evil.dll", "evil.dll"],
    ["%2e%2e%2fx", "_2e_2e_2fx"],
    ["..%2F..%2Fx", "_2F.._2Fx"],
    ["a\u0000b.txt", "ab.txt"],
    ["line\nbreak\r.txt", "linebreak.txt"],
    ["CON", "_CON"],
    ["con.txt", "_con.txt"],
    ["NUL.tar.gz", "_NUL.tar.gz"],
    ["Lpt9", "_Lpt9"],
    ["console.log", "console.log"],
    [".bashrc", "bashrc"],
    ["...hidden", "hidden"],
    ["trailing. . .", "trailing"],
    ["résumé 日本語 ü.pdf", "résumé 日本語 ü.pdf"],
    ["re\u0301sume\u0301.txt", "résumé.txt"], // NFC
    ["invoice\u202Efdp.exe", "invoicefdp.exe"], // right-to-left override removed
    ['a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"],
    ["-rf", "_-rf"],
    ["", "file"],
    [undefined, "file"],
    [".", "file"],
    ["..", "file"],
    ["/", "file"],
    ["../", "file"],
    ["   ", "file"],
    ["\u0000\u0001", "file"],
  ];
  for (const [input, want] of cases) {
    const got = safeFileName(input);
    assert.equal(got, want, JSON.stringify(input));
    assert.equal(safeFileName(got), got, `idempotent for ${JSON.stringify(input)}`);
  }
});

Deno.test("safeFileName: length capped at 200 UTF-8 bytes, extension and code points kept", () => {
  const enc = (s: string) => new TextEncoder().encode(s).length;
  const long = safeFileName("a".repeat(10_000) + ".jpeg");
  assert.ok(enc(long) <= 200);
  assert.ok(long.endsWith(".jpeg"));
  const cjk = safeFileName("日".repeat(10_000) + ".txt");
  assert.ok(enc(cjk) <= 200, `${enc(cjk)}`);
  assert.ok(cjk.endsWith(".txt"));
  assert.ok(!cjk.includes("\ufffd"), "no split code point");
  const emoji = safeFileName("😀".repeat(3000));
  assert.ok(enc(emoji) <= 200 && enc(emoji) % 4 === 0);
  assert.equal(safeFileName(long), long);
  // Fuzz: whatever comes in, the result is one harmless path component.
  for (let i = 0; i < 2000; i++) {
    const raw = String.fromCharCode(...Array.from(randomBytes(1 + (i % 40)), (b) => b % 3 === 0 ? 46 : b));
    const s = safeFileName(raw + (i % 2 ? "/.." : ""));
    assert.ok(s.length > 0 && s !== "." && s !== "..", JSON.stringify(raw));
    assert.ok(!/[/\\%\p{Cc}]/u.test(s) && !s.startsWith("."), JSON.stringify(s));
    assert.ok(enc(s) <= 200);
    assert.equal(safeFileName(s), s);
  }
});

Deno.test("download: bytes land in a hidden 0600 temp file, commit publishes exactly them under the safe name", async () => {
  await withDir(async (dir) => {
    const data = randomBytes(10_000);
    const dl = await openDownload(opts(dir, { name: "../../../etc/x.bin" }));
    assert.equal(join(dl.tempPath, ".."), dir);
    assert.ok(dl.tempPath.split("/").pop()!.startsWith("."));
    assert.equal((await Deno.stat(dl.tempPath)).mode! & 0o777, 0o600);
    await source(data, 777).pipeTo(dl.writable);
    assert.equal(dl.bytes(), 10_000);
    assert.deepEqual(await listDir(dir), [dl.tempPath.split("/").pop()!], "nothing published before commit");
    const path = await dl.commit();
    assert.equal(path, join(dir, "x.bin"));
    assert.ok(Buffer.from(await Deno.readFile(path)).equals(data));
    assert.deepEqual(await listDir(dir), ["x.bin"], "temp gone, nothing outside the dir");
    // After commit, abort is a no-op: it never deletes the published file.
    await dl.abort("late");
    assert.deepEqual(await listDir(dir), ["x.bin"]);
  });
});

Deno.test("download: collisions get 'x (1)', 'x (2)', existing files untouched, also when committed concurrently", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "report.pdf"), "original");
    const paths: string[] = [];
    const dls = await Promise.all(
      [1, 2, 3].map(() => openDownload(opts(dir, { name: "report.pdf", expectedSize: 3 }))),
    );
    await Promise.all(dls.map((d, i) => source(new Uint8Array([i, i, i])).pipeTo(d.writable)));
    paths.push(...await Promise.all(dls.map((d) => d.commit())));
    assert.deepEqual(paths.map((p) => p.split("/").pop()).sort(), [
      "report (1).pdf",
      "report (2).pdf",
      "report (3).pdf",
    ]);
    assert.equal(await Deno.readTextFile(join(dir, "report.pdf")), "original");
    const contents = await Promise.all(paths.map((p) => Deno.readFile(p)));
    assert.deepEqual(contents.map((c) => c[0]).sort(), [0, 1, 2], "each download kept its own bytes");
    assert.deepEqual(await listDir(dir), [
      "report (1).pdf",
      "report (2).pdf",
      "report (3).pdf",
      "report.pdf",
    ]);
  });
});

Deno.test("download: abort mid-transfer leaves nothing; a failing source (peer reset) deletes the temp file", async () => {
  await withDir(async (dir) => {
    const dl = await openDownload(opts(dir));
    const w = dl.writable.getWriter();
    await w.write(new Uint8Array(5000));
    w.releaseLock();
    await dl.abort("user cancelled");
    assert.deepEqual(await listDir(dir), []);
    await assertDownloadError(dl.commit(), "closed");
    await dl.abort(); // idempotent

    const dl2 = await openDownload(opts(dir));
    await assert.rejects(source(randomBytes(10_000), 1000, 4000).pipeTo(dl2.writable), /peer reset/);
    assert.deepEqual(await listDir(dir), []);
    await assertDownloadError(dl2.commit(), "closed");
  });
});

Deno.test("download: a stream larger than declared is refused and deleted; a short one is not committed", async () => {
  await withDir(async (dir) => {
    const dl = await openDownload(opts(dir, { expectedSize: 1000 }));
    await assertDownloadError(source(new Uint8Array(1001), 100).pipeTo(dl.writable), "oversize");
    assert.equal(dl.bytes(), 1000, "stopped at the declared size");
    assert.deepEqual(await listDir(dir), []);
    await assertDownloadError(dl.commit(), "oversize");

    const single = await openDownload(opts(dir, { expectedSize: 10 }));
    await assertDownloadError(source(new Uint8Array(11), 11).pipeTo(single.writable), "oversize");
    assert.equal(single.bytes(), 0);
    assert.deepEqual(await listDir(dir), []);

    const short = await openDownload(opts(dir, { expectedSize: 1000 }));
    await source(new Uint8Array(999), 100).pipeTo(short.writable);
    await assertDownloadError(short.commit(), "incomplete");
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("download: too large or not fitting on disk is refused before anything is created", async () => {
  await withDir(async (dir) => {
    await assert.rejects(
      openDownload(opts(dir, { expectedSize: 10 * MiB + 1, maxSize: 10 * MiB })),
      (e: unknown) => {
        assert.ok(e instanceof DownloadRefusedError);
        assert.equal(e.reason, "too-large");
        return true;
      },
    );
    // 10 GB declared, limit higher than that: the disk decides.
    const huge = 2 ** 50;
    await assert.rejects(openDownload(opts(dir, { expectedSize: huge, maxSize: huge })), (e: unknown) => {
      assert.ok(e instanceof DownloadRefusedError);
      assert.equal(e.reason, "disk-full");
      return true;
    });
    // The reserve counts: a tiny file is refused when the reserve exceeds the free space.
    await assert.rejects(
      openDownload(opts(dir, { expectedSize: 1, reserveBytes: huge })),
      (e: unknown) => e instanceof DownloadRefusedError && e.reason === "disk-full",
    );
    for (const bad of [-1, 1.5, NaN, 2 ** 53]) {
      await assert.rejects(openDownload(opts(dir, { expectedSize: bad })), RangeError);
    }
    await assert.rejects(openDownload(opts(join(dir, "missing"))), Deno.errors.NotFound);
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("download: a write error (ENOSPC from /dev/full) surfaces clearly and deletes the temp file", async () => {
  await withDir(async (dir) => {
    const dl = await openDownload(opts(dir, { writeTargetForTests: "/dev/full" }));
    assert.ok((await listDir(dir)).length === 1);
    await assert.rejects(source(new Uint8Array(10_000)).pipeTo(dl.writable), (e: unknown) => {
      assert.ok(e instanceof DownloadError);
      assert.equal(e.code, "write-failed");
      assert.match(e.message, /space/i);
      return true;
    });
    assert.deepEqual(await listDir(dir), []);
    await assertDownloadError(dl.commit(), "write-failed");
  });
});

function canMountTmpfs(): boolean {
  if (Deno.uid() !== 0) return false;
  const probe = Deno.makeTempDirSync({ prefix: "tmpfs-probe-" });
  try {
    const ok = new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe] })
      .outputSync();
    if (!ok.success) return false;
    new Deno.Command("umount", { args: [probe] }).outputSync();
    return true;
  } catch {
    return false;
  } finally {
    Deno.removeSync(probe);
  }
}

Deno.test({
  name: "download: a real full disk (1 MiB tmpfs) — refused up front, or ENOSPC mid-transfer cleans up",
  ignore: !canMountTmpfs(),
  fn: async () => {
    const mnt = await Deno.makeTempDir({ prefix: "tmpfs-1m-" });
    const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt] })
      .output();
    assert.ok(mount.success);
    try {
      // Declared size beyond the filesystem: refused before writing.
      await assert.rejects(
        openDownload(opts(mnt, { expectedSize: 2 * MiB })),
        (e: unknown) => e instanceof DownloadRefusedError && e.reason === "disk-full",
      );
      // Fits when opened, then something else fills the disk: ENOSPC while writing.
      const dl = await openDownload(opts(mnt, { expectedSize: 800 * 1024 }));
      await Deno.writeFile(join(mnt, "filler"), new Uint8Array(600 * 1024));
      await assert.rejects(source(randomBytes(800 * 1024), 64 * 1024).pipeTo(dl.writable), (e: unknown) => {
        assert.ok(e instanceof DownloadError);
        assert.equal(e.code, "write-failed");
        assert.match(e.message, /space/i);
        return true;
      });
      assert.deepEqual(await listDir(mnt), ["filler"], "temp deleted");
    } finally {
      await new Deno.Command("umount", { args: [mnt] }).output();
      await Deno.remove(mnt, { recursive: true });
    }
  },
});
