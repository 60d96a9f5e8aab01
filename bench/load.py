"""The load generator process: `python -m bench.load JSON` runs one workload, prints its result.

JSON is {"workload": NAME, "args": {...}}; the result (or {"error": ...}) is one JSON line on
stdout, so the runner never shares a process, an event loop or a core's scheduling with it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from bench import group_workloads, nats_workloads, workloads

WORKLOADS: dict[str, Callable[..., Coroutine[Any, Any, workloads.Result]]] = {
    "track": workloads.track_throughput,
    "fan_out": workloads.fan_out,
    "latency": workloads.live_latency,
    "replay": workloads.replay,
    "idle_memory": workloads.idle_memory,
    "sweep": workloads.sweep,
    "nats_ingest": nats_workloads.nats_ingest,
    "nats_fan_out": nats_workloads.nats_fan_out,
    "nats_latency": nats_workloads.nats_latency,
    "nats_replay": nats_workloads.nats_replay,
    "group_consume": group_workloads.group_consume,
    "group_redelivery": group_workloads.group_redelivery,
    "group_scaling": group_workloads.group_scaling,
    "nats_group_consume": group_workloads.nats_group_consume,
    "nats_group_redelivery": group_workloads.nats_group_redelivery,
}


def main() -> None:
    """Run the workload named on the command line."""
    spec: dict[str, Any] = json.loads(sys.argv[1])
    try:
        result: workloads.Result = asyncio.run(WORKLOADS[spec["workload"]](**spec["args"]))
    except workloads.WorkloadError as error:
        result = {"error": str(error)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
