// The resuming subscription against a fake server that cuts streams: never twice, never a gap.
import { test } from "node:test";
import assert from "node:assert/strict";
import grpc from "@grpc/grpc-js";
import { JourneyClient, backoffDelay } from "../src/index.js";
import { journey } from "../src/proto.js";

const LOG = Array.from({ length: 10 }, (_, i) => ({
  position: String(i + 1),
  id: `e${i + 1}`,
  type: "SYSTEM_EVENT_TYPE_VISIT_ENDED",
}));

// Each Subscribe call takes the next step: send `count` events from the asked-for start
// (`rewind` earlier, to misbehave), then end with `code` (grpc.status.OK: cleanly). Like the
// server, it sends batches of up to maxBatchSize when that is above 1, else one event each.
async function fakeServer(steps, requests, metadata) {
  const server = new grpc.Server();
  server.addService(journey.SystemEventService.service, {
    Subscribe(call) {
      requests.push(call.request);
      metadata.push(call.metadata.get("authorization")[0]);
      const step = steps.shift() ?? { count: LOG.length, code: grpc.status.OK };
      const start = call.request.start;
      const after = start === "beginning" ? 0 : start === "afterPosition" ? Number(call.request.afterPosition) : LOG.length;
      const first = Math.max(0, after - (step.rewind ?? 0));
      const events = LOG.slice(first, first + step.count);
      const size = call.request.maxBatchSize;
      if (size > 1) {
        // Batches of 2 at most here, whatever was asked, so that a cut can fall mid-batch.
        for (let i = 0; i < events.length; i += 2) call.write({ batch: { events: events.slice(i, i + 2) } });
      } else {
        for (const event of events) call.write({ event });
      }
      if (step.code === grpc.status.OK) call.end();
      else call.emit("error", { code: step.code, details: "scripted end" });
    },
    ListSystemEvents(call, callback) {
      callback({ code: grpc.status.UNIMPLEMENTED });
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) =>
      error ? reject(error) : resolve(p),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}

async function take(subscription, count) {
  const out = [];
  for await (const event of subscription) {
    out.push(event.position);
    if (out.length === count) break;
  }
  return out;
}

test("a cut stream resumes after the last delivered event, without repeats", async () => {
  const requests = [];
  const metadata = [];
  const steps = [
    { count: 3, code: grpc.status.UNAVAILABLE },
    { count: 0, code: grpc.status.CANCELLED },
    { count: 3, code: grpc.status.OK, rewind: 2 },
  ];
  const { server, address } = await fakeServer(steps, requests, metadata);
  const client = new JourneyClient(address, { apiKey: "k", backoff: { initial: 1, maximum: 10, multiplier: 2 } });
  try {
    const subscription = client.subscribe({ start: "beginning" });
    const got = await take(subscription, 10);
    assert.deepEqual(got, LOG.map((e) => e.position));
    assert.equal(subscription.lastPosition, "10");
    assert.equal(subscription.reconnects, 3);
    assert.deepEqual(
      requests.map((r) => (r.start === "afterPosition" ? r.afterPosition : r.start)),
      ["beginning", "3", "3", "4"],
    );
    assert.deepEqual(new Set(metadata), new Set(["Bearer k"]));
    assert.deepEqual(new Set(requests.map((r) => r.maxBatchSize)), new Set([1000]));

    // A consumer that restarts passes its saved position back.
    const resumed = client.subscribe({ start: "7" });
    assert.deepEqual(await take(resumed, 3), ["8", "9", "10"]);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("asked for one event per message, events come one per message just the same", async () => {
  const requests = [];
  const steps = [{ count: 3, code: grpc.status.UNAVAILABLE, rewind: 0 }];
  const { server, address } = await fakeServer(steps, requests, []);
  const client = new JourneyClient(address, { backoff: { initial: 1, maximum: 10, multiplier: 2 } });
  try {
    const got = await take(client.subscribe({ start: "beginning", maxBatchSize: 0 }), 10);
    assert.deepEqual(got, LOG.map((e) => e.position));
    assert.deepEqual(requests.map((r) => r.maxBatchSize), [0, 0]);
    assert.throws(() => client.subscribe({ maxBatchSize: -1 }), /maxBatchSize must be a whole number/);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("a status other than UNAVAILABLE or CANCELLED is thrown, not retried", async () => {
  const requests = [];
  const { server, address } = await fakeServer([{ count: 0, code: grpc.status.OUT_OF_RANGE }], requests, []);
  const client = new JourneyClient(address);
  try {
    await assert.rejects(take(client.subscribe({ start: "beginning" }), 1), { code: grpc.status.OUT_OF_RANGE });
    assert.equal(requests.length, 1);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("backoff is jittered below an exponential ceiling", () => {
  const backoff = { initial: 100, maximum: 2000, multiplier: 2 };
  for (const attempt of [1, 2, 5, 30]) {
    const ceiling = Math.min(2000, 100 * 2 ** (attempt - 1));
    const delays = Array.from({ length: 200 }, () => backoffDelay(attempt, backoff));
    assert.ok(delays.every((d) => d >= 0 && d <= ceiling));
    assert.ok(new Set(delays).size > 1);
  }
});
