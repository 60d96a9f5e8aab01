// Several addresses as grpc targets, and the service config that spreads and retries calls.
import net from "node:net";

// Calls that may run twice without harm: Track because every event carries an id (the client
// gives one when the caller did not, and a server stores an id once per source), the reads
// because they only read. Subscribe is resumed by Subscription itself.
const RETRIED = [
  ["journey.v1.TrackerService", "Track"],
  ["journey.v1.SessionService", "GetSession"],
  ["journey.v1.SessionService", "GetProfile"],
  ["journey.v1.SettingsService", "GetSettings"],
  ["journey.v1.SystemEventService", "ListSystemEvents"],
];

const RETRY_POLICY = {
  maxAttempts: 5,
  initialBackoff: "0.05s",
  maxBackoff: "1s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};

// The retry policy (each attempt is a new pick, so under round_robin it goes to another
// replica), and round_robin to spread calls over every address of the target (an ipv4:/ipv6:
// list, or a DNS name's records). One IP address keeps pick_first, which connects when a call
// comes: a server restarted while nobody called is found at once, where round_robin reconnects
// in the background and may still be backing off.
export function serviceConfig(target) {
  const config = { methodConfig: [{ name: RETRIED.map(([service, method]) => ({ service, method })), retryPolicy: RETRY_POLICY }] };
  if (family(target) === 0) config.loadBalancingConfig = [{ round_robin: {} }];
  return JSON.stringify(config);
}

// Targets in grpc's own URI syntax go to grpc as they are.
const SCHEMES = /^(dns|ipv4|ipv6|unix|unix-abstract):/;

// "a:1,b:2" or ["a:1", "b:2,c:3"] -> ["a:1", "b:2", "c:3"].
export function splitServers(servers) {
  const out = [];
  for (const item of typeof servers === "string" ? [servers] : [...servers]) {
    if (SCHEMES.test(item.trim())) out.push(item.trim());
    else out.push(...item.split(",").map((s) => s.trim()).filter(Boolean));
  }
  if (out.length === 0) throw new Error("no server address given");
  if (out.length > 1 && out.some((s) => SCHEMES.test(s))) {
    throw new Error("a grpc target (dns:, ipv4:, ...) must be the only address");
  }
  return out;
}

function family(address) {
  const at = address.lastIndexOf(":");
  if (at < 0 || !/^\d+$/.test(address.slice(at + 1))) return 0;
  return net.isIP(address.slice(0, at).replace(/^\[(.*)\]$/, "$1"));
}

// One target when grpc can take every address (one address, whose DNS records are all used;
// IP literals of one family as an ipv4:/ipv6: list), else one target per address: grpc has no
// target for a list of host names.
export function targets(servers) {
  if (servers.length === 1) return servers;
  const families = new Set(servers.map(family));
  if (families.size === 1 && families.has(4)) return [`ipv4:${servers.join(",")}`];
  if (families.size === 1 && families.has(6)) return [`ipv6:${servers.join(",")}`];
  return servers;
}
