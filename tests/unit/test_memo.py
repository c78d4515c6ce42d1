"""PerSource: what the pack makes from an object it was given, made once per (source, key), gone with the source."""
import gc

import torch

from precision_safe.nodes.precision.memo import PerSource


def test_made_once_per_source_and_key_and_gone_with_the_source():
    store, calls = PerSource(), []
    source = torch.nn.Linear(2, 2)

    def make():
        calls.append(1)
        return object()

    first, fresh = store.made(source, ("bf16", ""), make)
    again, fresh_again = store.made(source, ("bf16", ""), make)
    other, _ = store.made(source, ("fp16", ""), make)
    assert (fresh, fresh_again, again is first, other is first, len(calls)) == (True, False, True, False, 2)
    assert store.get(source, ("bf16", "")) is first and store.get(torch.nn.Linear(2, 2), ("bf16", "")) is None
    del source
    gc.collect()
    assert len(store._by_source) == 0  # the store never keeps a source alive


def test_put_get_and_clear():
    store, source = PerSource(), torch.nn.Linear(2, 2)
    store.put(source, 8.0, "verdict")
    assert store.get(source, 8.0) == "verdict" and store.get(source, 4.0) is None
    store.clear()
    assert store.get(source, 8.0) is None


def test_current_is_remade_when_what_it_depends_on_changed():
    store, source, calls = PerSource(), torch.nn.Linear(2, 2), []

    def make():
        calls.append(1)
        return len(calls)

    assert store.current(source, "census", ("v", 1), make) == 1
    assert store.current(source, "census", ("v", 1), make) == 1  # still valid: kept
    assert store.current(source, "census", ("v", 2), make) == 2  # changed in place: made again, in its stead
    assert store.current(source, "census", ("v", 2), make) == 2 and len(calls) == 2
