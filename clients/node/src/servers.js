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

// round_robin spreads calls over every address of a target (an ipv4:/ipv6: list, or a DNS
// name's records); each retry attempt is a new pick, so it goes to another replica.
export const SERVICE_CONFIG = JSON.stringify({
  loadBalancingConfig: [{ round_robin: {} }],
  methodConfig: [
    {
      name: RETRIED.map(([service, method]) => ({ service, method })),
      retryPolicy: {
        maxAttempts: 5,
        initialBackoff: "0.05s",
        maxBackoff: "1s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
    },
  ],
});

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
