// Print Journey's system events as they happen, one JSON object per line; resumes by itself.
//   node examples/subscribe.js [--server HOST:PORT ...] [--type visit-ended ...] [--from beginning|end|POSITION]
//                              [--api-key KEY] [--tls-ca PEM [--tls-cert PEM --tls-key PEM]]
import { parseArgs } from "node:util";
import { DEFAULT_SERVER, JourneyClient } from "../src/index.js";

const { values } = parseArgs({
  options: {
    server: { type: "string", multiple: true, default: [DEFAULT_SERVER] }, // repeat, or a,b
    type: { type: "string", multiple: true, default: [] },
    profile: { type: "string", default: "" },
    session: { type: "string", default: "" },
    source: { type: "string", default: "" },
    from: { type: "string", default: "end" },
    "api-key": { type: "string" },
    "tls-ca": { type: "string" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});

const tls =
  values["tls-ca"] || values["tls-cert"]
    ? { rootCa: values["tls-ca"], cert: values["tls-cert"], key: values["tls-key"] }
    : null;
const client = new JourneyClient(values.server, { apiKey: values["api-key"], tls });
const subscription = client.subscribe({
  types: values.type,
  profileId: values.profile,
  sessionId: values.session,
  sourceId: values.source,
  start: values.from,
});

// Ctrl-C and SIGTERM end it cleanly. Persist subscription.lastPosition to resume later.
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    client.close();
    process.exit(0);
  });
}

try {
  for await (const event of subscription) {
    process.stdout.write(`${JSON.stringify(event)}\n`);
  }
} catch (error) {
  process.stderr.write(`subscribe: ${error.details ?? error.message}\n`);
  process.exit(1);
}
