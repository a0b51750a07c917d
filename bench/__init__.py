"""The nsai-work benchmark suite: ``python -m bench`` (``make bench``).

Scenarios (the foundation issue's acceptance figures):

- ``throughput``: a bare asyncio pipeline (the baseline, measured in the same run), then 50,000
  no-op jobs end to end through ``work.Scheduler``, with no telemetry handler and again with one
  handler attached to every event of the catalogue (:mod:`bench.throughput`);
- ``memory``: bytes per waiting job with 100,000 jobs waiting (:mod:`bench.memory`);
- ``latency-async`` / ``latency-facade``: realtime submit-to-start latency while a 100,000-job
  batch backlog drains, through the async API and the blocking facade (:mod:`bench.latency`);
- ``list``: the time of a page of ``JobTable.list`` at 10,000, 200,000 and 1,000,000 jobs of
  one tenant, and of paging through all of them (:mod:`bench.listing`).

Each scenario runs ``--runs`` times in one process; the median is reported. Results go to
``bench/results/foundation.{json,md}`` (``quick.{json,md}`` with ``--quick``, ``partial.{json,md}``
with ``--only``).
"""
