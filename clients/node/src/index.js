// Journey's Node.js client: JourneyClient (track, subscribe, ...) and its helpers.
export { DEFAULT_SERVER, JourneyClient } from "./client.js";
export { Consumer, DEFAULT_MAX_IN_FLIGHT, Delivery } from "./consumer.js";
export { splitServers, targets } from "./servers.js";
export { DEFAULT_MAX_BATCH_SIZE, Subscription, backoffDelay } from "./subscription.js";
export { eventFilter, fromStruct, toStruct } from "./proto.js";
