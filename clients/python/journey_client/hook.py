"""`journey consume --exec`: run a command per delivery; exit 0 acks, anything else nacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from journey_client import pb
from journey_client.consumer import Consumer, Delivery
from journey_client.filters import TYPE_NAMES

log = logging.getLogger("journey_client")

_TYPE_BY_NUMBER = {number: name for name, number in TYPE_NAMES.items()}


@dataclass(frozen=True)
class Hook:
    """The command, how many run at once, how long one may run, how often to extend."""

    command: str
    concurrency: int = 1
    timeout: float = 30.0
    # Extend a running delivery this often (None: never), so that a run allowed longer than
    # the group's ack timeout is not handed to another member meanwhile.
    extend_every: float | None = None


def environment(delivery: Delivery, base: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ours, plus what the event is and which attempt this is."""
    event = delivery.event
    return {
        **base,
        "JOURNEY_EVENT_TYPE": _TYPE_BY_NUMBER.get(event.type, str(event.type)),
        "JOURNEY_EVENT_ID": event.id,
        "JOURNEY_POSITION": str(event.position),
        "JOURNEY_ATTEMPT": str(delivery.attempt),
    }


def _kill(process: asyncio.subprocess.Process) -> None:
    # The command runs in its own process group (a shell and what it started): end them all.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _extend(delivery: Delivery, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await delivery.extend()


async def run_once(hook: Hook, delivery: Delivery, event_json: str) -> None:
    """Run the command for one delivery and ack or nack it by the outcome."""
    event = delivery.event
    what = f"{_TYPE_BY_NUMBER.get(event.type, event.type)} at position {event.position} "
    what += f"(attempt {delivery.attempt})"
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_shell(
            hook.command,
            stdin=asyncio.subprocess.PIPE,
            env=environment(delivery, os.environ),
            start_new_session=True,
        )
    )
    try:
        process = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Stopped while the command was starting (it may run already): end it all the same.
        with contextlib.suppress(OSError):
            started = await spawning
            _kill(started)
            await started.wait()
        raise
    extender = (
        None
        if hook.extend_every is None
        else asyncio.create_task(_extend(delivery, hook.extend_every))
    )
    try:
        async with asyncio.timeout(hook.timeout):
            assert process.stdin is not None
            # A command that does not read its input may exit first: not an error.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                process.stdin.write(event_json.encode() + b"\n")
                await process.stdin.drain()
                process.stdin.close()
            code = await process.wait()
    except TimeoutError:
        _kill(process)
        await process.wait()
        log.warning("%s: killed after %gs; nacked", what, hook.timeout)
        await delivery.nack(wait=False)
        return
    except asyncio.CancelledError:
        # We are stopping: the run is not finished, so the event goes to another member.
        _kill(process)
        await process.wait()
        raise
    finally:
        if extender is not None:
            extender.cancel()
            await asyncio.wait([extender])
    if code == 0:
        await delivery.ack(wait=False)
    else:
        log.warning("%s: exit %s; nacked (retried with the group's backoff)", what, code)
        await delivery.nack(wait=False)


async def run_hooks(
    consumer: Consumer, hook: Hook, render: Callable[[pb.SystemEvent], str]
) -> None:
    """Run the hook for every delivery (its event as `render` writes it on stdin), at most
    `concurrency` at once, until cancelled."""
    slots = asyncio.Semaphore(hook.concurrency)
    running: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and task.exception() is not None:
            failed.append(task.exception())  # type: ignore[arg-type]

    try:
        while not failed:
            await slots.acquire()  # a slot first: no delivery waits here for a free one
            delivery = await anext(consumer)
            task = asyncio.create_task(run_once(hook, delivery, render(delivery.event)))
            running.add(task)
            task.add_done_callback(done)
        raise failed[0]
    finally:
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.wait(list(running))
