#!/usr/bin/env bash
# Times the retention purge's statements per batch with psql, on a database
# seeded by bench/seed_retention.sql (docs/benchmarks.md, fourteenth round).
#
#   bench/purge_batches.sh DATABASE_URL old BATCHES   # the statements before issue 24's cursor
#   bench/purge_batches.sh DATABASE_URL new           # one round of this build's walk
#
# Each batch is one transaction on a connection with the background pool's
# planner settings (dispatcher_sql::SESSION) and the purge's own
# (retention_sql::SETTINGS), deleting at most 500 deliveries (with their
# attempts) and 500 events created before the cutoff (CUTOFF, default
# T0 + 1 day: the seed's first day). The statements are the store's, with
# their parameters written in. Prints, per statement, how many ran and
# their time in ms (min, median, p95, max, mean), and each whole batch's.
set -euo pipefail
url=$1
mode=$2
batches=${3:-800}
cutoff=${CUTOFF:-$((1767225600 + 86400))}
n=500

session="\\set ON_ERROR_STOP on
SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET jit = off;
SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_bitmapscan = off;
\\timing on"
begin="\\echo @begin
BEGIN;
\\echo @settings
SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('enable_seqscan', 'on', true) \\g /dev/null"
commit="\\echo @commit
COMMIT;
\\echo @end"
delete_deliveries="\\echo @delete_deliveries
WITH a AS (DELETE FROM attempts WHERE delivery_id = ANY(:'ids'::text[]) RETURNING 1),
     gone AS (DELETE FROM deliveries WHERE seq = ANY(:'seqs'::bigint[]) RETURNING 1)
     SELECT (SELECT COUNT(*) FROM a) + (SELECT COUNT(*) FROM gone) \\g /dev/null"
delete_events="\\echo @delete_events
DELETE FROM events e WHERE e.seq = ANY(:'eseqs'::bigint[])
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id);"

script() {
  echo "$session"
  case $mode in
  old)
    for _ in $(seq "$batches"); do
      echo "$begin"
      cat <<SQL
\\echo @select_deliveries
SELECT COALESCE(ARRAY_AGG(seq), '{}') AS seqs, COALESCE(ARRAY_AGG(id), '{}') AS ids FROM (
    SELECT seq, id FROM deliveries
    WHERE created_at < $cutoff AND status <> 'pending'
    ORDER BY seq LIMIT $n
    FOR UPDATE SKIP LOCKED) s \\gset
$delete_deliveries
\\echo @select_events
SELECT COALESCE(ARRAY_AGG(seq), '{}') AS eseqs FROM (
    SELECT e.seq FROM events e
    WHERE e.created_at < $cutoff AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
    ORDER BY e.seq LIMIT $n
    FOR UPDATE SKIP LOCKED) s \\gset
$delete_events
SQL
      echo "$commit"
    done
    ;;
  new)
    # The deliveries' walk, then the events'; each batch is skipped once
    # its walk is over (psql's \if).
    echo "\\set after 0"
    echo "\\set go t"
    for _ in $(seq "$batches"); do
      cat <<SQL
\\if :go
$begin
\\echo @window_deliveries
WITH w AS MATERIALIZED (
    SELECT seq, created_at FROM deliveries WHERE seq > :after ORDER BY seq LIMIT $n),
 locked AS MATERIALIZED (
    SELECT seq, id FROM deliveries
    WHERE seq > :after AND seq <= (SELECT MAX(seq) FROM w)
      AND created_at < $cutoff AND status <> 'pending'
    FOR UPDATE SKIP LOCKED)
 SELECT w.last, w.size, w.reached, l.seqs, l.ids,
        NOT w.reached AND w.size >= $n AS go, COALESCE(w.last, 0) AS after
 FROM (SELECT MAX(seq) AS last, COUNT(*) AS size,
              COALESCE(BOOL_AND(created_at >= $cutoff), false) AS reached FROM w) w,
      (SELECT COALESCE(ARRAY_AGG(seq), '{}') AS seqs,
              COALESCE(ARRAY_AGG(id), '{}') AS ids FROM locked) l \\gset
$delete_deliveries
$commit
\\endif
SQL
    done
    echo "\\set after 0"
    echo "\\set go t"
    for _ in $(seq "$batches"); do
      cat <<SQL
\\if :go
$begin
\\echo @window_events
WITH w AS MATERIALIZED (
    SELECT seq, created_at FROM events WHERE seq > :after ORDER BY seq LIMIT $n),
 locked AS MATERIALIZED (
    SELECT e.seq FROM events e
    WHERE e.seq > :after AND e.seq <= (SELECT MAX(seq) FROM w) AND e.created_at < $cutoff
      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
    FOR UPDATE OF e SKIP LOCKED)
 SELECT w.last, w.size, w.reached, l.seqs AS eseqs,
        NOT w.reached AND w.size >= $n AS go, COALESCE(w.last, 0) AS after
 FROM (SELECT MAX(seq) AS last, COUNT(*) AS size,
              COALESCE(BOOL_AND(created_at >= $cutoff), false) AS reached FROM w) w,
      (SELECT COALESCE(ARRAY_AGG(seq), '{}') AS seqs FROM locked) l \\gset
$delete_events
$commit
\\endif
SQL
    done
    ;;
  *) echo "mode: old or new" >&2; exit 2 ;;
  esac
}

# Each labelled statement's time; a batch's is from its BEGIN to its COMMIT
# (on "new", the deliveries' and the events' apart).
script | psql -X -q "$url" 2>&1 | gawk '
  /^@/ {
    label = substr($0, 2)
    if (label == "begin") kind = "batch"
    if (label ~ /^window_/) kind = "batch of " substr(label, 8)
    next
  }
  /^Time: / && label != "" {
    t[label] = t[label] " " $2; batch += $2
    if (label == "commit") { t[kind] = t[kind] " " batch; batch = 0 }
    if (label == "begin") { batch = $2 }
    label = ""; next
  }
  /ERROR|FATAL/ { print; exit 1 }
  END {
    for (l in t) {
      n = split(substr(t[l], 2), v, " ")
      asort(v); sum = 0; for (i = 1; i <= n; i++) sum += v[i]
      p95 = int(n * 0.95 + 0.5); if (p95 < 1) p95 = 1
      printf "%-22s n=%5d  min %8.2f  median %8.2f  p95 %8.2f  max %8.2f  mean %8.2f ms\n",
        l, n, v[1], v[int((n + 1) / 2)], v[p95], v[n], sum / n
    }
  }' | sort
