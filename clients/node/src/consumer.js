// A consumer-group member: deliveries to ack, nack, reject or extend, rejoining with backoff.
import grpc from "@grpc/grpc-js";
import { systemEvent } from "./proto.js";
import { DEFAULT_BACKOFF, backoffDelay } from "./subscription.js";

// The server went away (UNAVAILABLE) or cut the stream while shutting down (CANCELLED): join
// again. Any other status (NOT_FOUND: no such group, or it was deleted) is thrown.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]);

export const DEFAULT_MAX_IN_FLIGHT = 100;

function duration(ms) {
  return { seconds: String(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
}

// One Consume stream. Outcomes asked for in the same turn of the event loop go out together,
// one message per kind, and each waits for the server's `settled` naming it.
class Link {
  constructor(call) {
    this.call = call;
    this.void = false;
    this.waiting = new Map(); // deliveryId -> resolve(bool)
    this.outcomes = new Set(); // the promises of those
    this.queued = [];
    this.scheduled = false;
  }

  settle(kind, deliveryId, arg) {
    if (this.void) return Promise.resolve(false);
    const promise = new Promise((resolve) => this.waiting.set(deliveryId, resolve));
    this.outcomes.add(promise);
    promise.then(() => this.outcomes.delete(promise));
    this.queue(kind, deliveryId, arg);
    return promise;
  }

  queue(kind, deliveryId, arg) {
    this.queued.push({ kind, deliveryId, arg });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    if (this.void) return;
    const groups = new Map();
    for (const { kind, deliveryId, arg } of this.queued) {
      const key = `${kind}\u0000${arg ?? ""}`;
      if (!groups.has(key)) groups.set(key, { kind, arg, deliveryIds: [] });
      groups.get(key).deliveryIds.push(deliveryId);
    }
    this.queued = [];
    // Extends first: an extend of a delivery settled in the same turn is moot.
    const all = [...groups.values()];
    for (const { kind, arg, deliveryIds } of [...all.filter((g) => g.kind === "extend"), ...all.filter((g) => g.kind !== "extend")]) {
      if (kind === "ack") this.call.write({ ack: { deliveryIds } });
      else if (kind === "extend") this.call.write({ extend: { deliveryIds } });
      else if (kind === "reject") this.call.write({ reject: { deliveryIds, reason: arg } });
      else this.call.write({ nack: { deliveryIds, retryDelay: arg === null ? null : duration(arg) } });
    }
  }

  // Ignored ids came too late (their ack timeout had passed): they did not count.
  settled({ deliveryIds, ignoredDeliveryIds = [] }) {
    for (const [ids, durable] of [[deliveryIds, true], [ignoredDeliveryIds, false]]) {
      for (const id of ids) {
        this.waiting.get(id)?.(durable);
        this.waiting.delete(id);
      }
    }
  }

  // The stream is gone: what was not settled on it never will be.
  end() {
    this.void = true;
    for (const resolve of this.waiting.values()) resolve(false);
    this.waiting.clear();
  }
}

// One event handed to this member. ack(), nack() and reject() resolve to true once the server
// says the outcome is durable (`settled`), or false if it did not count (it came after the
// group's ack timeout: the event comes again) or is unconfirmed (the stream broke first: the
// server may have stored it or not; if not, the event comes again). Handlers must be
// idempotent; a long one should extend(). Settle each delivery once.
export class Delivery {
  constructor(link, delivery) {
    this.link = link;
    this.deliveryId = delivery.deliveryId;
    this.attempt = delivery.attempt;
    this.event = systemEvent(delivery.event);
    this.outcome = null;
  }

  // The stream it came on is gone: settling it does nothing, and it will come again.
  get void() {
    return this.link.void;
  }

  settle(kind, arg) {
    if (this.outcome) throw new Error(`delivery ${this.deliveryId} was already settled`);
    this.outcome = this.link.settle(kind, this.deliveryId, arg);
    return this.outcome;
  }

  ack() {
    return this.settle("ack", null);
  }

  // delayMs: deliver again after this long; null: the group's backoff.
  nack({ delayMs = null } = {}) {
    if (delayMs !== null && !(delayMs >= 0)) throw new Error(`delayMs must be >= 0, not ${delayMs}`);
    return this.settle("nack", delayMs);
  }

  reject(reason = "") {
    return this.settle("reject", reason);
  }

  // Still working: restart its ack timeout. False when settled already, or void.
  extend() {
    if (this.outcome || this.link.void) return false;
    this.link.queue("extend", this.deliveryId, null);
    return true;
  }
}

// Async-iterate it for the group's deliveries. It rejoins with backoff when the stream breaks
// (on another server when several are given); deliveries of a broken stream are void. Call
// close() to leave the group: what it still holds goes to the other members at once.
export class Consumer {
  constructor(openCall, group, { maxInFlight = DEFAULT_MAX_IN_FLIGHT, backoff = DEFAULT_BACKOFF, maxAttempts = null } = {}) {
    if (!Number.isInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 1000) {
      throw new Error(`maxInFlight must be 1 to 1000, not ${maxInFlight}`);
    }
    this.openCall = openCall;
    this.group = group;
    this.maxInFlight = maxInFlight;
    this.backoff = backoff;
    this.maxAttempts = maxAttempts;
    this.queue = []; // at most maxInFlight: the server never has more unsettled
    this.wake = null;
    this.error = null;
    this.closed = false;
    this.running = null;
    this.call = null;
    this.link = null;
    this.reconnects = 0;
  }

  notify() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator]() {
    this.running ??= this.run();
    for (;;) {
      const next = this.queue.shift();
      if (next) {
        if (!next.void) yield next;
        continue;
      }
      if (this.error) throw this.error;
      if (this.closed) return;
      await new Promise((resolve) => {
        this.wake = resolve;
      });
    }
  }

  async run() {
    let failures = 0;
    while (!this.closed) {
      const call = (this.call = this.openCall());
      const link = (this.link = new Link(call));
      const outcome = await new Promise((resolve) => {
        call.on("data", (response) => {
          failures = 0; // the server answered: the next break starts a fresh backoff
          if (response.response === "deliveries") {
            for (const delivery of response.deliveries.deliveries) this.queue.push(new Delivery(link, delivery));
            this.notify();
          } else {
            link.settled(response.settled);
          }
        });
        call.on("error", resolve);
        // A stream ends with OK only when the server shuts down: join again after it.
        call.on("end", () => resolve(Object.assign(new Error("the server ended the stream"), { code: grpc.status.UNAVAILABLE })));
        call.write({ start: { group: this.group, maxInFlight: this.maxInFlight } });
      });
      link.end();
      this.queue = this.queue.filter((delivery) => delivery.link !== link);
      call.cancel();
      if (this.closed) break;
      failures += 1;
      if (!RETRYABLE.has(outcome.code) || (this.maxAttempts !== null && failures >= this.maxAttempts)) {
        this.error = outcome;
        break;
      }
      this.reconnects += 1;
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(failures, this.backoff)));
    }
    this.notify();
  }

  // Leave the group, after waiting up to graceMs for outcomes sent but not yet settled.
  async close({ graceMs = 5000 } = {}) {
    const outcomes = [...(this.link?.outcomes ?? [])];
    if (outcomes.length && graceMs > 0) {
      let timer;
      const late = new Promise((resolve) => {
        timer = setTimeout(resolve, graceMs);
      });
      await Promise.race([Promise.all(outcomes), late]);
      clearTimeout(timer);
    }
    this.closed = true;
    this.call?.cancel();
    this.notify();
  }
}
