// consume() against a fake ConsumerGroupService: settles, redelivery, rejoining, errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import grpc from "@grpc/grpc-js";
import { JourneyClient } from "../src/index.js";
import { journey } from "../src/proto.js";

const FAST = { initial: 1, maximum: 10, multiplier: 2 };

const event = (position) => ({ position: String(position), id: `e${position}`, type: "SYSTEM_EVENT_TYPE_VISIT_ENDED" });

// One group's worth of rules: pending events go to a member with room, ack/nack/reject are
// answered with `settled` (nack puts the event back, reject dead-letters it), a stream that
// ends gives back what it held. `failNext` codes fail the next calls at once; cut() ends every
// stream with UNAVAILABLE. Every request is recorded.
async function fakeGroups(positions) {
  const state = { pending: positions.map((p) => [event(p), 0]), requests: [], acked: [], deadLetters: [], failNext: [], tooLate: new Set(), members: new Set(), ids: 0, holdSettled: false };
  const pump = () => {
    for (const member of state.members) {
      const batch = [];
      while (state.pending.length && member.held.size < member.maxInFlight) {
        const [e, attempt] = state.pending.shift();
        const deliveryId = `d${++state.ids}`;
        member.held.set(deliveryId, [e, attempt + 1]);
        batch.push({ deliveryId, attempt: attempt + 1, event: e });
      }
      if (batch.length) member.call.write({ deliveries: { deliveries: batch } });
    }
  };
  const server = new grpc.Server();
  server.addService(journey.ConsumerGroupService.service, {
    Consume(call) {
      const code = state.failNext.shift();
      if (code !== undefined) {
        call.emit("error", { code, details: code === grpc.status.NOT_FOUND ? "no group" : "scripted" });
        return;
      }
      let member = null;
      call.on("data", (request) => {
        state.requests.push(request);
        if (request.request === "start") {
          member = { call, maxInFlight: request.start.maxInFlight, held: new Map() };
          state.members.add(member);
          pump();
          return;
        }
        if (request.request === "extend") return;
        const held = request[request.request].deliveryIds.filter((id) => member.held.has(id));
        // Settles of tooLate positions are ignored (as after an ack timeout): pending again.
        const late = held.filter((id) => state.tooLate.has(Number(member.held.get(id)[0].position)));
        const ids = held.filter((id) => !late.includes(id));
        for (const id of late) {
          state.pending.push(member.held.get(id));
          member.held.delete(id);
        }
        for (const id of ids) {
          const [e, attempt] = member.held.get(id);
          member.held.delete(id);
          if (request.request === "ack") state.acked.push(Number(e.position));
          else if (request.request === "nack") state.pending.push([e, attempt]);
          else state.deadLetters.push([Number(e.position), request.reject.reason]);
        }
        if (state.holdSettled) return;
        call.write({ settled: { deliveryIds: ids, ignoredDeliveryIds: late } });
        pump();
      });
      const gone = () => {
        if (!member || !state.members.delete(member)) return;
        state.pending.unshift(...member.held.values());
        pump();
      };
      call.on("end", gone);
      call.on("cancelled", gone);
      member = member ?? null;
      call.cut = () => {
        gone();
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "scripted cut" });
      };
    },
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  state.cut = () => {
    for (const member of [...state.members]) member.call.cut();
  };
  return { server, state, address: `127.0.0.1:${port}` };
}

async function take(consumer, count) {
  const out = [];
  for await (const delivery of consumer) {
    out.push(delivery);
    if (out.length === count) break;
  }
  return out;
}

test("deliveries are acked, nacked, rejected and extended as the contract says", async () => {
  const { server, state, address } = await fakeGroups([1, 2, 3, 4]);
  const client = new JourneyClient(address, { backoff: FAST });
  try {
    const consumer = client.consume("followups", { maxInFlight: 10 });
    const [one, two, three, four] = await take(consumer, 4);
    assert.deepEqual(state.requests[0].start, { group: "followups", maxInFlight: 10 });
    assert.deepEqual([one, two, three, four].map((d) => [d.event.position, d.attempt]), [["1", 1], ["2", 1], ["3", 1], ["4", 1]]);
    assert.equal(one.extend(), true);
    assert.deepEqual(await Promise.all([one.ack(), two.nack({ delayMs: 1500 }), three.nack(), four.reject("bad payload")]), [true, true, true, true]);
    assert.throws(() => one.nack(), /already settled/);
    assert.equal(one.extend(), false);
    const kinds = state.requests.map((r) => r.request);
    assert.deepEqual(kinds.slice(1, 3), ["extend", "ack"]); // the extend went first, in one turn
    const nacks = state.requests.filter((r) => r.request === "nack").map((r) => r.nack);
    assert.deepEqual(nacks.map((n) => [n.deliveryIds, n.retryDelay]), [[[two.deliveryId], { seconds: "1", nanos: 500000000 }], [[three.deliveryId], null]]);
    assert.deepEqual(state.deadLetters, [[4, "bad payload"]]);
    const again = await take(consumer, 2);
    assert.deepEqual(again.map((d) => [d.event.position, d.attempt]), [["2", 2], ["3", 2]]);
    await Promise.all(again.map((d) => d.ack()));
    assert.deepEqual(state.acked, [1, 2, 3]);
    await consumer.close();
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("ack waits for settled; a cut stream voids its deliveries and the events come again", async () => {
  const { server, state, address } = await fakeGroups([1, 2]);
  const client = new JourneyClient(address, { backoff: FAST });
  try {
    const consumer = client.consume("g");
    const old = await take(consumer, 2);
    state.holdSettled = true;
    let answered = null;
    const acking = old[0].ack().then((settled) => (answered = settled));
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(answered, null); // the server has not said `settled`: not durable yet
    assert.deepEqual(state.acked, [1]);
    state.cut();
    assert.equal(await acking, false);
    state.holdSettled = false;
    // The server stored the ack of 1 but could not say so: only 2 comes again, as attempt 2.
    const again = await take(consumer, 1);
    assert.deepEqual(again.map((d) => [d.event.position, d.attempt]), [["2", 2]]);
    assert.ok(old.every((d) => d.void));
    const sent = state.requests.length;
    assert.equal(await old[1].ack(), false); // not sent: the server would ignore it
    assert.equal(state.requests.length, sent);
    assert.equal(await again[0].ack(), true);
    assert.deepEqual(state.acked, [1, 2]);
    assert.equal(consumer.reconnects, 1);
    await consumer.close();
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("it rejoins after UNAVAILABLE and CANCELLED, answers false to an ignored ack, throws NOT_FOUND", async () => {
  const { server, state, address } = await fakeGroups([1]);
  const client = new JourneyClient(address, { backoff: FAST });
  try {
    state.failNext = [grpc.status.UNAVAILABLE, grpc.status.CANCELLED];
    const consumer = client.consume("g");
    const [delivery] = await take(consumer, 1);
    assert.equal(consumer.reconnects, 2);
    assert.equal(await delivery.ack(), true);
    await consumer.close();
    state.tooLate.add(2);
    state.pending.push([event(2), 0]);
    const late = client.consume("g");
    const [first] = await take(late, 1);
    assert.equal(await first.ack(), false); // too late: it did not count, and comes again
    const [again] = await take(late, 1);
    assert.deepEqual([again.event.position, again.attempt], ["2", 2]);
    await late.close({ graceMs: 0 });
    state.failNext = [grpc.status.NOT_FOUND];
    await assert.rejects(take(client.consume("nope"), 1), (error) => error.code === grpc.status.NOT_FOUND);
    assert.throws(() => client.consume("g", { maxInFlight: 0 }), /1 to 1000/);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
