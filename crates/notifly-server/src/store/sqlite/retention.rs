//! Deleting what is past retention.

use super::*;

/// The window of the next `?2` rows of a table by `seq`, after `?3`: its
/// last `seq` (`NULL` if it is empty), its size, and whether all its rows
/// were created at or after `?1` (none is past the cutoff).
macro_rules! window {
    ($table:literal) => {
        concat!(
            "SELECT MAX(seq), COUNT(*), COALESCE(MIN(created_at >= ?1), 0) FROM (
                SELECT seq, created_at FROM ",
            $table,
            " WHERE seq > ?3 ORDER BY seq LIMIT ?2)"
        )
    };
}

/// The finished deliveries past the cutoff `?1` in the window `(?2, ?3]`.
macro_rules! finished {
    () => {
        "seq > ?2 AND seq <= ?3 AND created_at < ?1 AND status <> 'pending'"
    };
}

/// Reads the next window of a walk (`sql`, one of the `window!`s) after
/// `after`: where the walk goes next, and the window's last `seq` (`None`
/// if it is empty).
fn next_window(
    c: &Connection,
    sql: &str,
    round: &PurgeRound,
    after: i64,
    batch: u32,
) -> StoreResult<(Walk, Option<i64>)> {
    let (last, size, reached) = one(
        c,
        sql,
        params![round.before, i64::from(batch), after],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?
    .unwrap_or((None, 0, false));
    Ok((Walk::past(last, size, reached, batch), last))
}

#[async_trait]
impl Retention for SqliteStore {
    async fn purge(&self, round: &mut PurgeRound, batch: u32) -> StoreResult<u64> {
        if round.finished() {
            return Ok(0);
        }
        // A bounded number of rows per table, each a range of its `seq`, in
        // one short write: the writer is never held for long. The round
        // moves on only if it commits. As on PostgreSQL (see
        // [`PurgeRound`]), the big tables are walked a window at a time.
        let mut next = round.clone();
        let limit = i64::from(batch);
        let tx = self.writer.begin().await?;
        let mut deleted = 0;
        if let Walk::After(after) = next.deliveries {
            let (walk, last) = next_window(&tx, window!("deliveries"), &next, after, batch)?;
            next.deliveries = walk;
            if let Some(last) = last {
                // Finished deliveries with their attempts.
                deleted += exec(
                    &tx,
                    concat!(
                        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE ",
                        finished!(),
                        ")"
                    ),
                    params![next.before, after, last],
                )
                .map_err(sqlite)? as u64;
                deleted += exec(
                    &tx,
                    concat!("DELETE FROM deliveries WHERE ", finished!()),
                    params![next.before, after, last],
                )
                .map_err(sqlite)? as u64;
            }
        }
        // Events once every delivery of the round has been looked at.
        if let (Walk::Done, Walk::After(after)) = (next.deliveries, next.events) {
            let (walk, last) = next_window(&tx, window!("events"), &next, after, batch)?;
            next.events = walk;
            if let Some(last) = last {
                deleted += exec(
                    &tx,
                    "DELETE FROM events WHERE seq > ?2 AND seq <= ?3 AND created_at < ?1
                    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                    params![next.before, after, last],
                )
                .map_err(sqlite)? as u64;
            }
        }
        // The small tables: each asked until a batch finds fewer rows than
        // it may delete.
        if !next.keys_done {
            let gone = exec(
                &tx,
                "DELETE FROM idempotency_keys WHERE rowid IN (
                SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
                params![next.keys_before, limit],
            )
            .map_err(sqlite)? as u64;
            next.keys_done = gone < u64::from(batch);
            deleted += gone;
        }
        if !next.sessions_done {
            let gone = exec(
                &tx,
                "DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= ?1
                ORDER BY expires_at LIMIT ?2)",
                params![next.sessions_at, limit],
            )
            .map_err(sqlite)? as u64;
            next.sessions_done = gone < u64::from(batch);
            deleted += gone;
        }
        tx.commit().await?;
        *round = next;
        Ok(deleted)
    }
}
