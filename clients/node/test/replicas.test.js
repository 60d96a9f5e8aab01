// Several addresses against fake replicas: calls spread, Track retried elsewhere, failover.
import { test } from "node:test";
import assert from "node:assert/strict";
import grpc from "@grpc/grpc-js";
import { JourneyClient, splitServers, targets } from "../src/index.js";
import { journey } from "../src/proto.js";

const LOG = Array.from({ length: 10 }, (_, i) => ({
  position: String(i + 1),
  id: `e${i + 1}`,
  type: "SYSTEM_EVENT_TYPE_VISIT_ENDED",
}));
const FAST = { initial: 1, maximum: 10, multiplier: 2 };
const unimplemented = (call, callback) => callback({ code: grpc.status.UNIMPLEMENTED });

// A fake replica. `state.down`: Track and GetSession answer UNAVAILABLE. `shared.dying`: the
// first replica asked to Subscribe sends 3 events and cuts, then refuses every later call.
async function replica(state, shared = {}) {
  Object.assign(state, { tracks: [], gets: [], subscribes: [] });
  const server = new grpc.Server();
  server.addService(journey.TrackerService.service, {
    Track(call, callback) {
      state.tracks.push(call.request);
      if (state.down) return callback({ code: grpc.status.UNAVAILABLE, details: "going away" });
      if (shared.refusals > 0) {
        shared.refusals -= 1;
        return callback({ code: grpc.status.UNAVAILABLE, details: "shutting down" });
      }
      callback(null, { eventIds: call.request.events.map((e) => e.id), systemEvents: [] });
    },
  });
  server.addService(journey.SessionService.service, {
    GetSession(call, callback) {
      state.gets.push(call.metadata.get("authorization")[0]);
      if (state.down) return callback({ code: grpc.status.UNAVAILABLE, details: "going away" });
      callback(null, { session: { id: call.request.sessionId } });
    },
    EndSession: unimplemented,
    GetProfile: unimplemented,
  });
  server.addService(journey.SystemEventService.service, {
    Subscribe(call) {
      const after = call.request.start === "afterPosition" ? Number(call.request.afterPosition) : 0;
      state.subscribes.push(call.request.start === "afterPosition" ? after : call.request.start);
      shared.dying ??= state;
      if (shared.dying === state) {
        if (state.subscribes.length === 1) for (const event of LOG.slice(after, after + 3)) call.write({ event });
        return call.emit("error", { code: grpc.status.UNAVAILABLE, details: "going away" });
      }
      for (const event of LOG.slice(after)) call.write({ event });
      call.end();
    },
    ListSystemEvents: unimplemented,
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) =>
      error ? reject(error) : resolve(p),
    ),
  );
  return { server, address: `127.0.0.1:${port}` };
}

async function replicas(states, shared) {
  return Promise.all(states.map((state) => replica(state, shared)));
}

// The addresses in each form the client takes; "localhost" gets a channel per address.
const FORMS = {
  "comma-separated": (addresses) => addresses.join(","),
  array: (addresses) => addresses,
  "host names": (addresses) => addresses.map((a) => a.replace("127.0.0.1", "localhost")).join(","),
};

test("addresses become as few grpc targets as grpc can take", { timeout: 10000 }, () => {
  assert.deepEqual(splitServers("10.0.0.1:5, 10.0.0.2:6"), ["10.0.0.1:5", "10.0.0.2:6"]);
  assert.deepEqual(targets(splitServers(["10.0.0.1:5", "10.0.0.2:6,10.0.0.3:7"])), ["ipv4:10.0.0.1:5,10.0.0.2:6,10.0.0.3:7"]);
  assert.deepEqual(targets(splitServers("[::1]:5,[fe80::1]:6")), ["ipv6:[::1]:5,[fe80::1]:6"]);
  assert.deepEqual(targets(splitServers("a.example:5,b.example:6")), ["a.example:5", "b.example:6"]);
  assert.deepEqual(targets(splitServers("10.0.0.1:5,[::1]:6")), ["10.0.0.1:5", "[::1]:6"]);
  assert.deepEqual(targets(splitServers("dns:///journey.internal:5")), ["dns:///journey.internal:5"]);
  assert.deepEqual(targets(splitServers("journey.internal:5")), ["journey.internal:5"]);
  assert.throws(() => splitServers(" , "), /no server address/);
  assert.throws(() => splitServers(["dns:///a:1", "b:2"]), /must be the only address/);
});

for (const [form, given] of Object.entries(FORMS)) {
  test(`${form}: calls are spread over every address`, { timeout: 10000 }, async () => {
    const states = [{}, {}, {}];
    const servers = await replicas(states);
    const client = new JourneyClient(given(servers.map((s) => s.address)), { apiKey: "k" });
    try {
      for (let i = 0; i < 30; i += 1) assert.equal((await client.getSession(`s${i}`)).id, `s${i}`);
      // round_robin picks among READY connections: the first calls may go to the first one up.
      const counts = states.map((s) => s.gets.length);
      assert.equal(counts.reduce((a, b) => a + b), 30);
      assert.ok(Math.min(...counts) >= 8, `${counts}`);
      assert.deepEqual(new Set(states.flatMap((s) => s.gets)), new Set(["Bearer k"]));
    } finally {
      client.close();
      for (const s of servers) s.server.forceShutdown();
    }
  });

  test(`${form}: a Track that meets UNAVAILABLE is retried on another replica, same ids`, { timeout: 10000 }, async () => {
    const [down, up] = [{ down: true }, {}];
    const servers = await replicas([down, up]);
    const client = new JourneyClient(given(servers.map((s) => s.address)));
    try {
      for (let i = 0; i < 10; i += 1) {
        const response = await client.track({ sourceId: "web", events: ["page-view", { type: "click" }] });
        assert.equal(new Set(response.eventIds).size, 2);
      }
      assert.equal(up.tracks.length, 10);
      assert.ok(down.tracks.length > 0, "round-robin never tried the failing replica");
      const stored = new Set(up.tracks.map((r) => r.events.map((e) => e.id).join()));
      for (const r of down.tracks) assert.ok(stored.has(r.events.map((e) => e.id).join()));
      assert.ok(up.tracks.every((r) => r.events.every((e) => e.id)));
    } finally {
      client.close();
      for (const s of servers) s.server.forceShutdown();
    }
  });

  test(`${form}: a Track refused more often than grpc retries is tried again in rounds`, { timeout: 10000 }, async () => {
    // 7 UNAVAILABLEs in a row, wherever they land: more than grpc's 5 attempts of one call.
    const shared = { refusals: 7 };
    const states = [{}, {}];
    const servers = await replicas(states, shared);
    const client = new JourneyClient(given(servers.map((s) => s.address)));
    try {
      const response = await client.track({ sourceId: "web", events: ["page-view"] });
      assert.equal(response.eventIds.length, 1);
      assert.equal(shared.refusals, 0);
      const tries = states.flatMap((s) => s.tracks.map((r) => r.events[0].id));
      assert.equal(new Set(tries).size, 1); // every try carried the same event id
      assert.equal(tries.length, 8);
    } finally {
      client.close();
      for (const s of servers) s.server.forceShutdown();
    }
  });

  test(`${form}: a subscription cut on one replica resumes on another`, { timeout: 10000 }, async () => {
    const states = [{}, {}];
    const shared = {};
    const servers = await replicas(states, shared);
    const client = new JourneyClient(given(servers.map((s) => s.address)), { backoff: FAST });
    try {
      // maxAttempts: a failover that never happens fails the test instead of retrying for ever.
      const subscription = client.subscribe({ start: "beginning", maxBatchSize: 0, maxAttempts: 10 });
      const got = [];
      for await (const event of subscription) {
        got.push(event.position);
        if (got.length === 10) break;
      }
      assert.deepEqual(got, LOG.map((e) => e.position)); // nothing lost, nothing twice
      const survivor = states.find((s) => s !== shared.dying);
      assert.equal(shared.dying.subscribes[0], "beginning");
      assert.deepEqual(survivor.subscribes, [3]); // resumed there after the last event delivered
      assert.ok(shared.dying.subscribes.slice(1).every((p) => p === 3));
    } finally {
      client.close();
      for (const s of servers) s.server.forceShutdown();
    }
  });
}

test("track gives every event an id and keeps the caller's", { timeout: 10000 }, async () => {
  const state = {};
  const { server, address } = await replica(state);
  const client = new JourneyClient(address);
  try {
    const mine = { type: "click", properties: { x: 1 } };
    const response = await client.track({ sourceId: "web", events: ["page-view", mine, { type: "buy", id: "own" }] });
    assert.equal(response.eventIds[2], "own");
    assert.equal(new Set(response.eventIds).size, 3);
    assert.ok(response.eventIds.every(Boolean));
    assert.equal(mine.id, undefined); // the caller's object is not changed
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("Track gives up with UNAVAILABLE when every replica is down, having tried both", { timeout: 10000 }, async () => {
  const states = [{ down: true }, { down: true }];
  const servers = await replicas(states);
  const client = new JourneyClient(servers.map((s) => s.address));
  try {
    await assert.rejects(client.track({ sourceId: "web", events: ["page-view"] }), { code: grpc.status.UNAVAILABLE });
    // 4 rounds of grpc's 5 attempts, spread over the two.
    const counts = states.map((s) => s.tracks.length);
    assert.equal(counts[0] + counts[1], 20);
    assert.ok(Math.min(...counts) >= 5, `${counts}`);
  } finally {
    client.close();
    for (const s of servers) s.server.forceShutdown();
  }
});
