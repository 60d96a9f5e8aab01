// The client: channels with an API key and TLS, track and the other calls, resuming subscribe.
import crypto from "node:crypto";
import fs from "node:fs";
import grpc from "@grpc/grpc-js";
import { eventFilter, journey, systemEvent, trackedEvent } from "./proto.js";
import { serviceConfig, splitServers, targets } from "./servers.js";
import { Consumer, DEFAULT_MAX_IN_FLIGHT } from "./consumer.js";
import { DEFAULT_MAX_BATCH_SIZE, Subscription } from "./subscription.js";

export const DEFAULT_SERVER = "127.0.0.1:50051";
// With several addresses: rounds of a retried call that ends UNAVAILABLE, the pause before the
// second (doubling), and the time a round needs before the deadline to be worth starting.
const RETRY_ROUNDS = 4;
const RETRY_PAUSE_MS = 100;
const MIN_RETRY_WINDOW_MS = 250;

const ORDERINGS = { none: "CONSUMER_GROUP_ORDERING_NONE", session: "CONSUMER_GROUP_ORDERING_SESSION", profile: "CONSUMER_GROUP_ORDERING_PROFILE" };

function orderingOf(name) {
  const value = ORDERINGS[name] ?? name;
  if (!Object.values(ORDERINGS).includes(value)) throw new Error(`ordering must be none, session or profile, not ${name}`);
  return value;
}

// grpc's own reconnect backoff grows to 120 s; a restarted server should be found quickly.
const CHANNEL_OPTIONS = {
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.min_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 2000,
};

function credentials(tls) {
  if (!tls) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  if (Boolean(tls.cert) !== Boolean(tls.key)) throw new Error("a client certificate and its key go together");
  // rootCa: the CA that signed the server's certificate (null: the system's); cert+key: mTLS.
  return grpc.credentials.createSsl(read(tls.rootCa), read(tls.key), read(tls.cert));
}

// The stubs over one channel to a target.
function stubs(target, creds) {
  const options = { ...CHANNEL_OPTIONS, "grpc.service_config": serviceConfig(target) };
  const tracker = new journey.TrackerService(target, creds, options);
  const channelOverride = tracker.getChannel();
  return {
    tracker,
    events: new journey.SystemEventService(target, creds, { channelOverride }),
    sessions: new journey.SessionService(target, creds, { channelOverride }),
    settings: new journey.SettingsService(target, creds, { channelOverride }),
    groups: new journey.ConsumerGroupService(target, creds, { channelOverride }),
  };
}

// An event as the caller gave it, with an id: its own, or a new UUID, so that a Track retried
// on another server after UNAVAILABLE cannot store it twice.
function withId(event) {
  const given = typeof event === "string" ? { type: event } : event;
  return given.id ? given : { ...given, id: crypto.randomUUID() };
}

export class JourneyClient {
  // server: "host:port" (all its DNS records are used), several ("a:1,b:2" or an array), or a
  // grpc target such as "dns:///journey.internal:50051". Calls are spread round-robin; Track and
  // the reads are retried on UNAVAILABLE on another server; subscriptions resume on another.
  // options: { apiKey, tls: { rootCa, cert, key } (PEM file paths), timeoutMs, backoff }
  constructor(server = DEFAULT_SERVER, { apiKey = null, tls = null, timeoutMs = 30000, backoff } = {}) {
    const creds = credentials(tls);
    this.servers = splitServers(server);
    // Usually one channel, whose round_robin policy spreads calls over every address; one per
    // address only when grpc has no target for them all.
    this.channels = targets(this.servers).map((target) => stubs(target, creds));
    this.turn = 0;
    this.metadata = new grpc.Metadata();
    if (apiKey) this.metadata.set("authorization", `Bearer ${apiKey}`);
    this.timeoutMs = timeoutMs;
    this.backoff = backoff;
  }

  pick() {
    const channel = this.channels[this.turn % this.channels.length];
    this.turn += 1;
    return channel;
  }

  // Within a channel grpc's retry policy moves a retried call to another address. But
  // round_robin's turn is shared by every call in flight, so all of one call's attempts can
  // land on the same replica (one that is shutting down answers UNAVAILABLE until its port
  // closes). So with several addresses a retried call that still ends UNAVAILABLE is tried
  // again, with backoff, for a few rounds within its deadline, as the Python client does; with
  // a channel per address each round also goes to the next channel.
  async unary(service, method, request, { retried = true } = {}) {
    const deadline = Date.now() + this.timeoutMs;
    const rounds = retried && this.servers.length > 1 ? Math.max(RETRY_ROUNDS, this.channels.length) : 1;
    let pause = RETRY_PAUSE_MS;
    let unavailable = null;
    for (let round = 1; ; round += 1) {
      try {
        return await new Promise((resolve, reject) => {
          this.pick()[service][method](request, this.metadata, { deadline: new Date(deadline) }, (error, response) =>
            error ? reject(error) : resolve(response),
          );
        });
      } catch (error) {
        // The deadline ran out in a retry: what stopped the call is that no replica answered.
        if (error.code === grpc.status.DEADLINE_EXCEEDED && unavailable) throw unavailable;
        const room = Date.now() + pause + MIN_RETRY_WINDOW_MS < deadline;
        if (error.code !== grpc.status.UNAVAILABLE || round >= rounds || !room) throw error;
        unavailable = error;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause *= 2;
    }
  }

  // track({ sourceId, profileId, sessionId, events: ["page-view", { type, properties, id }] })
  // An event without an id gets a UUID here; the response's eventIds tell which.
  async track({ sourceId, profileId = "", sessionId = "", events }) {
    const response = await this.unary("tracker", "Track", {
      sourceId,
      profileId,
      sessionId,
      events: events.map(withId).map(trackedEvent),
    });
    return { ...response, systemEvents: response.systemEvents.map(systemEvent) };
  }

  async getSession(sessionId) {
    return (await this.unary("sessions", "GetSession", { sessionId })).session;
  }

  async getSettings() {
    return this.unary("settings", "GetSettings", {});
  }

  // subscribe({ types: ["visit-ended"], profileId, sessionId, sourceId, start, maxAttempts, maxBatchSize })
  // start: "beginning", "end" (default) or a position (exclusive), e.g. a saved lastPosition.
  // maxBatchSize: events per message from the server (default 1000; 0 or 1: one each); the
  // subscription yields one event at a time either way. Each reconnect is a new pick, so a
  // stream cut on one server resumes on another.
  subscribe({ start = "end", maxAttempts = null, maxBatchSize = DEFAULT_MAX_BATCH_SIZE, ...filter } = {}) {
    const open = (request) => this.pick().events.Subscribe(request, this.metadata);
    return new Subscription(open, { filter: eventFilter(filter), start, backoff: this.backoff, maxAttempts, maxBatchSize });
  }

  // consume(group, { maxInFlight = 100, maxAttempts = null }): join a consumer group as a member.
  // Async-iterate it for deliveries ({ deliveryId, attempt, event }); settle each with
  // `await d.ack()`, `d.nack({ delayMs })` or `d.reject(reason)` (true once durable, false if the
  // stream broke first and the event will come again); `d.extend()` while still working.
  // It rejoins with backoff, on another server when several are given; `await c.close()` leaves.
  consume(group, { maxInFlight = DEFAULT_MAX_IN_FLIGHT, maxAttempts = null } = {}) {
    const open = () => this.pick().groups.Consume(this.metadata);
    return new Consumer(open, group, { maxInFlight, maxAttempts, backoff: this.backoff });
  }

  // createConsumerGroup({ name, types, profileId, sessionId, sourceId, start, ackTimeoutMs,
  // maxAttempts, ordering: "none" | "session" | "profile" }): the group (or the same one again).
  async createConsumerGroup({ name, start = "end", ackTimeoutMs = null, maxAttempts = 0, ordering = "none", ...filter }) {
    const request = { name, filter: eventFilter(filter), maxAttempts, ordering: orderingOf(ordering) };
    if (start === "beginning") request.beginning = {};
    else if (start === "end") request.end = {};
    else request.afterPosition = String(start);
    if (ackTimeoutMs !== null) request.ackTimeout = { seconds: String(Math.floor(ackTimeoutMs / 1000)), nanos: (ackTimeoutMs % 1000) * 1e6 };
    return this.unary("groups", "CreateConsumerGroup", request);
  }

  async getConsumerGroup(name) {
    return this.unary("groups", "GetConsumerGroup", { name });
  }

  // Every group, in name order, fetching page after page (pageSize 0: the server's default).
  async *listConsumerGroups({ pageSize = 0 } = {}) {
    let pageToken = "";
    do {
      const page = await this.unary("groups", "ListConsumerGroups", { pageSize, pageToken });
      yield* page.consumerGroups;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  // A group's dead letters ({ event, attempts, reason, deadLetterTime }), oldest first.
  async *listDeadLetters(name, { pageSize = 0 } = {}) {
    let pageToken = "";
    do {
      const page = await this.unary("groups", "ListDeadLetters", { name, pageSize, pageToken });
      for (const letter of page.deadLetters) yield { ...letter, event: systemEvent(letter.event) };
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  async deleteConsumerGroup(name) {
    await this.unary("groups", "DeleteConsumerGroup", { name }, { retried: false });
  }

  // Puts a group's dead letters back; resolves to how many (a string: uint64).
  async redriveDeadLetters(name) {
    return (await this.unary("groups", "RedriveDeadLetters", { name }, { retried: false })).count;
  }

  close() {
    for (const channel of this.channels) channel.tracker.close();
  }
}
