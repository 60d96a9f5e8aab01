// Against a live server (its address in TEST_JOURNEY_ADDRESS, set by tests/clients/test_node.py):
// tracked events come back as the subscriber's system events. When the test sets them, the client
// connects with mutual TLS (TEST_JOURNEY_TLS_CA/CERT/KEY) and an API key (TEST_JOURNEY_API_KEY).
import { test } from "node:test";
import assert from "node:assert/strict";
import { JourneyClient } from "../src/index.js";

const address = process.env.TEST_JOURNEY_ADDRESS;
const env = process.env;
const tls = env.TEST_JOURNEY_TLS_CA
  ? { rootCa: env.TEST_JOURNEY_TLS_CA, cert: env.TEST_JOURNEY_TLS_CERT, key: env.TEST_JOURNEY_TLS_KEY }
  : null;
const apiKey = env.TEST_JOURNEY_API_KEY || null;

test("the subscriber receives the system events that Track caused", { skip: !address }, async () => {
  const client = new JourneyClient(address, { tls, apiKey });
  try {
    const first = await client.track({ sourceId: "node", profileId: "ada", events: ["page-view"] });
    assert.equal(first.profileId, "ada");
    assert.deepEqual(
      first.systemEvents.map((e) => e.type),
      ["SYSTEM_EVENT_TYPE_PROFILE_CREATED", "SYSTEM_EVENT_TYPE_SESSION_OPENED", "SYSTEM_EVENT_TYPE_VISIT_STARTED"],
    );
    // Start after the first call's events, so what follows is exactly the next calls' events.
    const subscription = client.subscribe({ start: first.systemEvents.at(-1).position, sourceId: "node" });
    const tracked = [];
    for (const profileId of ["grace", "linus"]) {
      tracked.push(
        await client.track({
          sourceId: "node",
          profileId,
          events: [{ type: "page-view", properties: { url: "/pricing", n: 1 } }],
        }),
      );
    }
    const want = tracked.flatMap((r) => r.systemEvents);
    const got = [];
    for await (const event of subscription) {
      got.push(event);
      if (got.length === want.length) break;
    }
    assert.deepEqual(got, want);
    assert.equal(subscription.lastPosition, want.at(-1).position);
    assert.deepEqual(got.at(-1).properties, { trigger_event_types: ["page-view"], visit_number: 1 });
    const session = await client.getSession(tracked[0].sessionId);
    assert.equal(session.eventCount, "1");
  } finally {
    client.close();
  }
});

// An ipv4: list of addresses (here the same server twice): TLS checks the first address's host.
test("several addresses work with TLS and the API key", { skip: !address }, async () => {
  const client = new JourneyClient([address, address], { tls, apiKey });
  try {
    const tracked = await client.track({ sourceId: "node", profileId: "ida", events: ["page-view"] });
    assert.equal((await client.getSession(tracked.sessionId)).eventCount, "1");
  } finally {
    client.close();
  }
});

// A consumer group on the live server: each event acked once settled; a nack comes again.
test("consume() gets a group's events, and ack and nack are settled", { skip: !address }, async () => {
  const client = new JourneyClient(address, { tls, apiKey });
  const name = `node-${process.pid}`;
  try {
    await client.createConsumerGroup({ name, types: ["profile-created"], sourceId: "node-groups", start: "end", ordering: "profile" });
    for (const profileId of ["g1", "g2"]) await client.track({ sourceId: "node-groups", profileId, events: ["page-view"] });
    const consumer = client.consume(name, { maxInFlight: 10 });
    const seen = [];
    for await (const delivery of consumer) {
      seen.push([delivery.event.profileId, delivery.attempt]);
      let settled;
      if (delivery.event.profileId === "g1" && delivery.attempt === 1) settled = await delivery.nack({ delayMs: 0 });
      else if (delivery.event.profileId === "g2") settled = await delivery.reject("no email address");
      else settled = await delivery.ack();
      assert.equal(settled, true);
      if (seen.length === 3) break;
    }
    assert.deepEqual(seen.sort(), [["g1", 1], ["g1", 2], ["g2", 1]]);
    await consumer.close();
    const group = await client.getConsumerGroup(name);
    assert.equal(group.pendingCount, "0");
    const names = [];
    for await (const listed of client.listConsumerGroups({ pageSize: 1 })) names.push(listed.name);
    assert.ok(names.includes(name), names.join(","));
    const letters = [];
    for await (const letter of client.listDeadLetters(name, { pageSize: 1 })) letters.push(letter);
    assert.deepEqual(letters.map((l) => [l.event.profileId, l.reason, l.attempts]), [["g2", "no email address", 1]]);
    assert.equal(await client.redriveDeadLetters(name), "1");
    await client.deleteConsumerGroup(name);
  } finally {
    client.close();
  }
});
