//! Carrying each daemon's changes to the others: every committed unit's
//! events go into the `events` table in the same transaction, numbered from
//! the `site` row's counter under its lock, so the numbers follow the
//! commit order with no gaps. Every daemon reads the table by cursor (a
//! cheap index range scan, a few times a second) and publishes what the
//! other daemons wrote on its own admin event stream; its own events it has
//! already published after its commit.

use std::time::Duration;

use idprov_proto::admin::AdminEvent;
use idprovd_core::Error;
use idprovd_core::store::{StoreError, StoreResult};

use super::PgStore;
use super::error::{decode, encode};
use super::view::{PgView, get};

/// Where a daemon is in the site's event table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor(i64);

/// Events other daemons committed after a cursor, and the cursor after them.
#[derive(Debug)]
pub struct FollowedEvents {
    pub events: Vec<AdminEvent>,
    pub cursor: EventCursor,
    /// Whether more are waiting (the read was cut at its limit).
    pub more: bool,
}

impl PgView<'_, '_> {
    pub(crate) fn record_events(&self, origin: &str, events: &[AdminEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let row = self
            .query_opt(
                "UPDATE site SET event_seq = event_seq + $1 WHERE id = 1 RETURNING event_seq",
                &[&n],
            )?
            .ok_or_else(|| StoreError::Db("the site row is missing".into()))?;
        let last: i64 = get(&row, 0)?;
        for (seq, e) in (last - n + 1..).zip(events) {
            self.execute(
                "INSERT INTO events (seq, origin, event) VALUES ($1, $2, $3)",
                &[&seq, &origin, &encode(e)?],
            )?;
        }
        Ok(())
    }
}

impl PgStore {
    /// The cursor at the newest committed event: follow from here.
    pub fn event_cursor(&self) -> Result<EventCursor, Error> {
        self.read_tx(|tx| {
            let v = PgView::new(tx);
            let row = v.query_opt("SELECT event_seq FROM site WHERE id = 1", &[])?;
            Ok(EventCursor(match row {
                Some(r) => get(&r, 0)?,
                None => 0,
            }))
        })
    }

    /// At most `max` events that other daemons committed after `cursor`.
    pub fn events_after(&self, cursor: EventCursor, max: usize) -> Result<FollowedEvents, Error> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.read_tx(|tx| {
            let v = PgView::new(tx);
            let rows = v.query(
                "SELECT seq, origin, event FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&cursor.0, &limit],
            )?;
            let more = rows.len() == max;
            let mut out = FollowedEvents {
                events: Vec::new(),
                cursor,
                more,
            };
            for r in rows {
                let seq: i64 = get(&r, 0)?;
                let origin: String = get(&r, 1)?;
                out.cursor = EventCursor(seq);
                if origin != self.origin {
                    out.events
                        .push(decode(&format!("event {seq}"), get(&r, 2)?)?);
                }
            }
            Ok(out)
        })
    }

    /// Forget events older than `age` (every daemon has read them long
    /// since); returns how many.
    pub fn purge_events(&self, age: Duration) -> Result<u64, Error> {
        let secs = f64::from(u32::try_from(age.as_secs()).unwrap_or(u32::MAX));
        let mut conn = self.conn()?;
        conn.execute(
            "DELETE FROM events WHERE created_at < now() - make_interval(secs => $1)",
            &[&secs],
        )
        .map_err(|e| self.shared.watch(Error::Store(super::error::store(e))))
    }
}
