/** Drives an independent peer (a Python process speaking JSON lines on stdin/stdout). */

export type PeerEvent = Record<string, unknown> & { event: string };

/** A child process that takes JSON commands and emits JSON events. */
export class JsonLinePeer {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #events: PeerEvent[] = [];
  readonly #waiters: Array<{ match: (e: PeerEvent) => boolean; resolve: (e: PeerEvent) => void }> = [];
  stderr = "";

  constructor(command: string, args: string[]) {
    this.#child = new Deno.Command(command, { args, stdin: "piped", stdout: "piped", stderr: "piped" })
      .spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#pump();
    this.#drainStderr(this.#child.stderr);
  }

  async #drainStderr(stderr: ReadableStream<Uint8Array>): Promise<void> {
    for await (const chunk of stderr.pipeThrough(new TextDecoderStream())) this.stderr += chunk;
  }

  async #pump(): Promise<void> {
    let buffer = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const event = JSON.parse(line) as PeerEvent;
        const waiter = this.#waiters.findIndex((w) => w.match(event));
        if (waiter >= 0) this.#waiters.splice(waiter, 1)[0]!.resolve(event);
        else this.#events.push(event);
      }
    }
  }

  /** Sends one command. */
  async send(command: Record<string, unknown>): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
  }

  /** Waits for the first (queued or future) event matching `match`. */
  next(match: (e: PeerEvent) => boolean, timeoutMs = 15_000): Promise<PeerEvent> {
    const queued = this.#events.findIndex(match);
    if (queued >= 0) return Promise.resolve(this.#events.splice(queued, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(
          new Error(`peer: no matching event within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-3000)}`),
        );
      }, timeoutMs);
      const waiter = {
        match,
        resolve: (e: PeerEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      this.#waiters.push(waiter);
    });
  }

  /** Asks the peer to quit and waits for it (killing it after 5 s). */
  async close(): Promise<void> {
    try {
      await this.send({ cmd: "quit" });
      await this.#writer.close();
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.#child.status;
    clearTimeout(timer);
  }
}
