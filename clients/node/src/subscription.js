// A subscription that survives the connection: reconnect with backoff, resume, never repeat.
import grpc from "@grpc/grpc-js";
import { systemEvent } from "./proto.js";

// The server went away (UNAVAILABLE) or cut the stream while shutting down (CANCELLED).
// Reading is idempotent, so resuming is safe; other statuses are the caller's to handle.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]);

export const DEFAULT_BACKOFF = { initial: 100, maximum: 5000, multiplier: 2 };

// Events per message asked of the server: a replay or backlog arrives many per message (grpc's
// cost is per message) while a lone live event still comes at once. 0 or 1: one each.
export const DEFAULT_MAX_BATCH_SIZE = 1000;

// Full jitter: many consumers cut off by one restart do not all come back at once.
export function backoffDelay(attempt, { initial, maximum, multiplier } = DEFAULT_BACKOFF) {
  return Math.random() * Math.min(maximum, initial * multiplier ** (attempt - 1));
}

function startOf(start) {
  if (start === "beginning") return { beginning: {} };
  if (start === "end") return { end: {} };
  if (/^\d+$/.test(String(start))) return { afterPosition: String(start) };
  throw new Error(`start must be "beginning", "end" or a position, not ${start}`);
}

// Async-iterate it for the matching SystemEvents, each exactly once, in position order, one at
// a time however many the server put in a message.
// `lastPosition` (a string, or null) is the safe point to persist and pass back as `start`.
export class Subscription {
  constructor(
    openStream,
    { filter = {}, start = "end", backoff = DEFAULT_BACKOFF, maxAttempts = null, maxBatchSize = DEFAULT_MAX_BATCH_SIZE } = {},
  ) {
    startOf(start); // a bad start fails now, not at the first read
    if (!Number.isInteger(maxBatchSize) || maxBatchSize < 0) {
      throw new Error(`maxBatchSize must be a whole number >= 0, not ${maxBatchSize}`);
    }
    this.maxBatchSize = maxBatchSize;
    this.openStream = openStream;
    this.filter = filter;
    this.start = start;
    this.backoff = backoff;
    this.maxAttempts = maxAttempts;
    this.lastPosition = typeof start === "string" && /^\d+$/.test(start) ? start : Number.isInteger(start) ? String(start) : null;
    this.reconnects = 0;
    this.caughtUp = false;
  }

  advance(position) {
    if (this.lastPosition === null || BigInt(position) > BigInt(this.lastPosition)) {
      this.lastPosition = String(position);
    }
  }

  async *[Symbol.asyncIterator]() {
    let failures = 0;
    for (;;) {
      const start = this.lastPosition === null ? this.start : this.lastPosition;
      const call = this.openStream({ filter: this.filter, maxBatchSize: this.maxBatchSize, ...startOf(start) });
      let lastError;
      try {
        for await (const response of call) {
          failures = 0; // the server answered: the next break starts a fresh backoff
          if (response.content === "event" || response.content === "batch") {
            const events = response.content === "batch" ? response.batch.events : [response.event];
            for (const event of events) {
              // Never twice: an overlapping replay after a reconnect is dropped here.
              if (this.lastPosition !== null && BigInt(event.position) <= BigInt(this.lastPosition)) continue;
              this.lastPosition = event.position;
              yield systemEvent(event);
            }
          } else {
            if (response.content === "caughtUp") this.caughtUp = true;
            if (response.content === "fellBehind") this.caughtUp = false;
            this.advance(response[response.content].position);
          }
        }
        // A stream ends with OK only when the server shuts down: come back after it.
        lastError = Object.assign(new Error("the server ended the stream"), { code: grpc.status.UNAVAILABLE });
      } catch (error) {
        if (!RETRYABLE.has(error.code)) throw error;
        lastError = error;
      } finally {
        call.cancel();
      }
      failures += 1;
      if (this.maxAttempts !== null && failures >= this.maxAttempts) throw lastError;
      this.caughtUp = false;
      this.reconnects += 1;
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(failures, this.backoff)));
    }
  }
}
