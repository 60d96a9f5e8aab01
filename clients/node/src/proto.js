// Loads the journey.v1 contract from protos/ at run time, and converts its values to plain JS.
import { fileURLToPath } from "node:url";
import path from "node:path";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

// The package lives in the repository beside protos/: one source of truth, nothing generated.
export const PROTOS_DIR = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "protos",
);

const definition = protoLoader.loadSync(
  [
    "journey/v1/tracker_service.proto",
    "journey/v1/system_event_service.proto",
    "journey/v1/session_service.proto",
    "journey/v1/settings_service.proto",
    "journey/v1/consumer_group_service.proto",
  ],
  {
    includeDirs: [PROTOS_DIR],
    keepCase: false, // camelCase, as in the protobuf JSON mapping
    longs: String, // positions are uint64: strings, compared as BigInt
    enums: String, // "SYSTEM_EVENT_TYPE_VISIT_ENDED"
    defaults: true,
    oneofs: true, // a message tells which oneof member is set
  },
);

export const journey = grpc.loadPackageDefinition(definition).journey.v1;

// google.protobuf.Struct <-> a plain object.
function toValue(value) {
  if (value === null || value === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value) };
}

function fromValue(value) {
  switch (value.kind) {
    case "numberValue":
      return value.numberValue;
    case "stringValue":
      return value.stringValue;
    case "boolValue":
      return value.boolValue;
    case "listValue":
      return (value.listValue.values ?? []).map(fromValue);
    case "structValue":
      return fromStruct(value.structValue);
    default:
      return null;
  }
}

export function toStruct(object) {
  return {
    fields: Object.fromEntries(Object.entries(object ?? {}).map(([k, v]) => [k, toValue(v)])),
  };
}

export function fromStruct(struct) {
  return Object.fromEntries(Object.entries(struct?.fields ?? {}).map(([k, v]) => [k, fromValue(v)]));
}

function toTimestamp(date) {
  const millis = date.getTime();
  return { seconds: String(Math.floor(millis / 1000)), nanos: (millis % 1000) * 1e6 };
}

function fromTimestamp(timestamp) {
  if (!timestamp) return null;
  const millis = Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
  return new Date(millis).toISOString();
}

// A SystemEvent as plain values: properties an object, occurTime an ISO string.
export function systemEvent(message) {
  return {
    ...message,
    occurTime: fromTimestamp(message.occurTime),
    properties: fromStruct(message.properties),
  };
}

// A tracked event given as plain values (or just its type) as the protobuf message.
export function trackedEvent(event) {
  const { type, id = "", properties = {}, occurTime } = typeof event === "string" ? { type: event } : event;
  return {
    type,
    id,
    properties: toStruct(properties),
    occurTime: occurTime ? toTimestamp(new Date(occurTime)) : null,
  };
}

const TYPE_NAMES = {
  "profile-created": "SYSTEM_EVENT_TYPE_PROFILE_CREATED",
  "session-opened": "SYSTEM_EVENT_TYPE_SESSION_OPENED",
  "visit-started": "SYSTEM_EVENT_TYPE_VISIT_STARTED",
  "visit-ended": "SYSTEM_EVENT_TYPE_VISIT_ENDED",
  "session-closed": "SYSTEM_EVENT_TYPE_SESSION_CLOSED",
};

// A SystemEventFilter from { types: ["visit-ended", ...], profileId, sessionId, sourceId }.
export function eventFilter({ types = [], profileId = "", sessionId = "", sourceId = "" } = {}) {
  return {
    types: types.map((t) => {
      const name = TYPE_NAMES[t] ?? t;
      if (!Object.values(TYPE_NAMES).includes(name)) throw new Error(`unknown system-event type ${t}`);
      return name;
    }),
    profileId,
    sessionId,
    sourceId,
  };
}
