"""Fresh ids and keys cut from a buffer of the kernel's random bytes: each handed out once, ids
are version 4 UUIDs, and a forked child never hands out its parent's bytes."""

import os
import uuid

from service.app.ids import new_id, random_bytes


def test_ids_are_random_version_4_uuids_never_repeated() -> None:
    ids = [new_id() for _ in range(5_000)]  # more than one draw of the buffer
    assert len(set(ids)) == len(ids)
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)


def test_keys_are_the_length_asked_and_never_repeated() -> None:
    keys = [random_bytes(32) for _ in range(1_000)]
    assert all(len(k) == 32 for k in keys) and len(set(keys)) == len(keys)
    assert len(random_bytes(10_000)) == 10_000  # more than a draw at once


def test_a_forked_child_draws_bytes_of_its_own() -> None:
    random_bytes(1)  # the buffer holds bytes the child would otherwise hand out again
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.close(read)
        os.write(write, new_id().bytes)
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != new_id().bytes
