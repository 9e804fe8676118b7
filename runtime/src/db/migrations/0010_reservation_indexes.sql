-- Every admission first drops the reservations of calls that died mid-way
-- (older than any run's deadline); unindexed, that read the whole table,
-- so each admission cost grew with the calls in flight. The budget and
-- rate-limit sums still read the reservations of the calls in flight for
-- the same claw or key: with more indexes an admission at 1,000 calls/s
-- cost 12 µs more to keep them than they saved (BENCHMARKS.md).
CREATE INDEX reservations_by_age ON reservations (at_ms);
