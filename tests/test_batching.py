"""Fair batching across streams: round-robin, no starvation, exact per-stream counts, order kept."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from pipeline.batching import FairCollector, RoundRobinBatcher
from pipeline.frames import EndOfStream
from pipeline.queues import Cancelled, FrameQueue


def _fill(batcher: RoundRobinBatcher, counts: dict[str, int]) -> None:
    for stream, count in counts.items():
        for index in range(count):
            batcher.add(stream, (stream, index))


def _streams_of(batch) -> list[str]:
    return [stream for stream, _item in batch]


def test_a_backlogged_stream_does_not_starve_the_others():
    """Stream a has 100 pairs queued before b and c have any: b and c still go in the first batch."""
    batcher = RoundRobinBatcher(["a", "b", "c"], batch_size=4)
    _fill(batcher, {"a": 100, "b": 5, "c": 5})
    first = batcher.take()
    assert Counter(_streams_of(first)) == {"a": 2, "b": 1, "c": 1}
    batches = [first] + [batcher.take() for _ in range(4)]
    served = Counter(stream for batch in batches for stream in _streams_of(batch))
    assert served["b"] == 5 and served["c"] == 5  # both done within 5 batches, not after a's 100


def test_backlogged_streams_share_every_batch_equally_and_the_start_rotates():
    streams = [f"s{i}" for i in range(8)]
    batcher = RoundRobinBatcher(streams, batch_size=4)
    _fill(batcher, {s: 20 for s in streams})
    assert _streams_of(batcher.take()) == ["s0", "s1", "s2", "s3"]
    assert _streams_of(batcher.take()) == ["s4", "s5", "s6", "s7"]  # the next batch starts where the last stopped
    assert _streams_of(batcher.take()) == ["s0", "s1", "s2", "s3"]
    batcher2 = RoundRobinBatcher(["a", "b", "c"], batch_size=8)
    _fill(batcher2, {"a": 10, "b": 10, "c": 10})
    for _ in range(3):
        counts = Counter(_streams_of(batcher2.take()))
        assert max(counts.values()) - min(counts.values()) <= 1  # within one pair of equal


@pytest.mark.parametrize("seed", range(5))
def test_random_arrivals_every_item_comes_out_once_in_stream_order_with_exact_counts(seed):
    rng = random.Random(seed)
    streams = ["cam0", "cam1", "cam2"]
    batcher = RoundRobinBatcher(streams, batch_size=rng.randint(1, 6))
    sent: Counter[str] = Counter()
    received: dict[str, list[int]] = {s: [] for s in streams}
    for _ in range(300):
        if rng.random() < 0.6:
            stream = rng.choice(streams)
            batcher.add(stream, sent[stream])
            sent[stream] += 1
        else:
            batch = batcher.take()
            assert len(batch) <= batcher.batch_size
            for stream, index in batch:
                received[stream].append(index)
    while batcher.pending():
        for stream, index in batcher.take():
            received[stream].append(index)
    for stream in streams:
        assert received[stream] == list(range(sent[stream]))  # none lost, none repeated, in order
    assert batcher.taken == batcher.added == sent


def test_a_stream_ends_only_after_its_last_item_was_taken_and_is_reported_once():
    batcher = RoundRobinBatcher(["a", "b"], batch_size=2)
    _fill(batcher, {"a": 3, "b": 1})
    batcher.end("a")
    assert batcher.ended() == []  # a still has three items
    assert batcher.take() == [("a", ("a", 0)), ("b", ("b", 0))]
    assert batcher.ended() == []  # a still has two items
    assert batcher.take() == [("a", ("a", 1)), ("a", ("a", 2))]
    assert batcher.ended() == ["a"]
    assert batcher.ended() == []
    assert not batcher.finished
    batcher.end("b")
    assert batcher.ended() == ["b"] and batcher.finished


def test_misuse_names_the_stream():
    batcher = RoundRobinBatcher(["a"], batch_size=2)
    with pytest.raises(KeyError, match="unknown stream 'z'"):
        batcher.add("z", 1)
    batcher.end("a")
    with pytest.raises(ValueError, match="'a' has already ended"):
        batcher.add("a", 1)
    with pytest.raises(ValueError, match="distinct stream ids"):
        RoundRobinBatcher(["a", "a"], batch_size=2)
    with pytest.raises(ValueError, match="at least 1"):
        RoundRobinBatcher(["a"], batch_size=0)


def _queues(streams, size=64):
    condition = threading.Condition()
    return {s: FrameQueue(f"{s}.paired", size, condition=condition) for s in streams}


def test_collector_takes_round_robin_from_the_queues_and_reports_ends_after_the_items():
    queues = _queues(["a", "b"])
    for index in range(5):
        queues["a"].put(("a", index))
    queues["b"].put(("b", 0))
    queues["b"].put_end(EndOfStream("b"))
    queues["a"].put_end(EndOfStream("a"))
    collector = FairCollector(queues, batch_size=4, max_wait_s=0.0)
    outputs = []
    while not collector.batcher.finished:
        outputs.append(collector.collect())
    items = [item for batch, _ended in outputs for item in batch]
    assert items[:2] == [("a", 0), ("b", 0)]
    assert sorted(items) == sorted([("a", i) for i in range(5)] + [("b", 0)])
    ended_at = {stream: n for n, (_batch, ended) in enumerate(outputs) for stream in ended}
    last_item_at = {s: max(n for n, (batch, _e) in enumerate(outputs) for item in batch if item[0] == s) for s in "ab"}
    assert all(ended_at[s] > last_item_at[s] for s in "ab")  # an end never overtakes its stream's pairs


def test_collector_returns_a_partial_batch_after_max_wait():
    queues = _queues(["a", "b"])
    queues["a"].put(("a", 0))
    collector = FairCollector(queues, batch_size=8, max_wait_s=0.05)
    start = time.monotonic()
    batch, ended = collector.collect()
    assert batch == [("a", 0)] and ended == []
    assert 0.04 <= time.monotonic() - start < 2.0


def test_collector_keeps_backpressure_on_a_fast_stream():
    """It buffers at most batch_size per stream: the rest stays in the stream's own queue."""
    queues = _queues(["fast", "slow"])
    for index in range(40):
        queues["fast"].put(("fast", index))
    collector = FairCollector(queues, batch_size=4, max_wait_s=0.0)
    batch, _ = collector.collect()
    assert len(batch) == 4 and collector.batcher.pending("fast") == 0
    assert len(queues["fast"]) == 36


def test_collector_with_threads_delivers_every_pair_of_unequal_streams_fairly():
    """Three producers of unequal lengths through small blocking queues: nothing lost, order kept,
    every end reported once, exact per-stream counts."""
    counts = {"a": 60, "b": 30, "c": 10}
    queues = _queues(counts, size=2)

    def produce(stream: str) -> None:
        for index in range(counts[stream]):
            queues[stream].put((stream, index))
        queues[stream].put_end(EndOfStream(stream))

    threads = [threading.Thread(target=produce, args=(s,)) for s in counts]
    for thread in threads:
        thread.start()
    collector = FairCollector(queues, batch_size=3, max_wait_s=0.01)
    received: dict[str, list[int]] = {s: [] for s in counts}
    ended: list[str] = []
    deadline = time.monotonic() + 30
    while not collector.batcher.finished and time.monotonic() < deadline:
        batch, done = collector.collect()
        for stream, index in batch:
            received[stream].append(index)
        ended += done
    for thread in threads:
        thread.join(timeout=5)
    assert received == {s: list(range(n)) for s, n in counts.items()}
    assert sorted(ended) == ["a", "b", "c"]
    assert collector.batcher.taken == Counter(counts)


def test_collector_raises_cancelled_when_the_run_is_aborted():
    queues = _queues(["a"])
    collector = FairCollector(queues, batch_size=2, max_wait_s=1.0)
    threading.Timer(0.05, queues["a"].cancel).start()
    with pytest.raises(Cancelled):
        collector.collect()


def test_a_producer_on_a_full_queue_resumes_at_half_and_nothing_is_lost():
    """File mode: a producer that found the queue full wakes once it has drained to half
    (one thread switch per maxsize / 2 items taken, not one per item)."""
    q = FrameQueue("q", 4)
    for i in range(4):
        assert q.put(i)
    done = threading.Event()
    producer = threading.Thread(target=lambda: (q.put(4), done.set()))
    producer.start()
    assert q.get() == 0  # 3 left: still above half
    assert not done.wait(0.2)
    assert q.get() == 1  # 2 left: half
    assert done.wait(5)
    producer.join()
    assert [q.get() for _ in range(len(q))] == [2, 3, 4]


def test_a_cancelled_full_queue_releases_its_producer():
    q = FrameQueue("q", 2)
    q.put(0)
    q.put(1)
    result = []
    producer = threading.Thread(target=lambda: result.append(q.put(2)))
    producer.start()
    q.cancel()
    producer.join(5)
    assert result == [False]
