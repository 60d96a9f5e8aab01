"""Delivery, member and group ids: unique, UUID-shaped, and not repeated by a forked child."""

from __future__ import annotations

import os
import uuid

from journey import groups


def test_ids_are_unique_and_shaped_like_uuids() -> None:
    ids = [groups.next_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids[:100])


def test_a_forked_child_makes_other_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, groups.next_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    parent = groups.next_id()
    assert child[:24] != parent[:24]
