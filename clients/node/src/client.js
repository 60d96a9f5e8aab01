// The client: a channel with an API key and TLS, track and the other calls, resuming subscribe.
import fs from "node:fs";
import grpc from "@grpc/grpc-js";
import { eventFilter, journey, systemEvent, trackedEvent } from "./proto.js";
import { DEFAULT_MAX_BATCH_SIZE, Subscription } from "./subscription.js";

export const DEFAULT_SERVER = "127.0.0.1:50051";

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

export class JourneyClient {
  // options: { apiKey, tls: { rootCa, cert, key } (PEM file paths), timeoutMs, backoff }
  constructor(server = DEFAULT_SERVER, { apiKey = null, tls = null, timeoutMs = 30000, backoff } = {}) {
    const creds = credentials(tls);
    this.tracker = new journey.TrackerService(server, creds, CHANNEL_OPTIONS);
    const channel = this.tracker.getChannel();
    // All stubs share one channel.
    this.events = new journey.SystemEventService(server, creds, { channelOverride: channel });
    this.sessions = new journey.SessionService(server, creds, { channelOverride: channel });
    this.settings = new journey.SettingsService(server, creds, { channelOverride: channel });
    this.metadata = new grpc.Metadata();
    if (apiKey) this.metadata.set("authorization", `Bearer ${apiKey}`);
    this.timeoutMs = timeoutMs;
    this.backoff = backoff;
  }

  unary(stub, method, request) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + this.timeoutMs);
      stub[method](request, this.metadata, { deadline }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  // track({ sourceId, profileId, sessionId, events: ["page-view", { type, properties, id }] })
  async track({ sourceId, profileId = "", sessionId = "", events }) {
    const response = await this.unary(this.tracker, "Track", {
      sourceId,
      profileId,
      sessionId,
      events: events.map(trackedEvent),
    });
    return { ...response, systemEvents: response.systemEvents.map(systemEvent) };
  }

  async getSession(sessionId) {
    return (await this.unary(this.sessions, "GetSession", { sessionId })).session;
  }

  async getSettings() {
    return this.unary(this.settings, "GetSettings", {});
  }

  // subscribe({ types: ["visit-ended"], profileId, sessionId, sourceId, start, maxAttempts, maxBatchSize })
  // start: "beginning", "end" (default) or a position (exclusive), e.g. a saved lastPosition.
  // maxBatchSize: events per message from the server (default 1000; 0 or 1: one each); the
  // subscription yields one event at a time either way.
  subscribe({ start = "end", maxAttempts = null, maxBatchSize = DEFAULT_MAX_BATCH_SIZE, ...filter } = {}) {
    const open = (request) => this.events.Subscribe(request, this.metadata);
    return new Subscription(open, { filter: eventFilter(filter), start, backoff: this.backoff, maxAttempts, maxBatchSize });
  }

  close() {
    this.tracker.close();
  }
}
