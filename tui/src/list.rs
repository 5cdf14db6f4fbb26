//! A keyed, filtered, selectable list: the state behind every table view.
//!
//! Items live in a slab and are ordered by key (device id, audit sequence).
//! `visible` holds the slab slots that match the filter, in key order, so a
//! frame only touches the rows on screen and a live insert costs a binary
//! search plus a `u32` memmove — it stays cheap at 100,000 rows.
//!
//! The selection is remembered by key, not by position: when rows arrive or
//! leave above it, the cursor stays on the same device. When the selected row
//! itself goes away, the cursor stays at the same position (the next row).

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use memchr::memmem::Finder;

/// Something a [`List`] can hold.
pub trait Row {
    type Key: Ord + Clone + std::fmt::Debug;
    fn key(&self) -> &Self::Key;
    /// The order rows are listed in: the key's own by default (device IDs
    /// override it with the natural order, `sensor-2` before `sensor-10`).
    /// A total order that agrees with the key's equality.
    fn order(a: &Self::Key, b: &Self::Key) -> Ordering {
        a.cmp(b)
    }
    /// The text the filter searches, lower-cased by [`List`].
    fn haystack(&self) -> String;
}

pub struct List<T: Row> {
    /// The slab; `None` marks a free slot (listed in `free`).
    slots: Vec<Option<T>>,
    /// Lower-cased search text of each slot, kept apart from the items so
    /// a filter pass reads a compact array instead of whole records.
    hays: Vec<Box<str>>,
    free: Vec<u32>,
    /// Every live slot, in key order.
    order: Vec<u32>,
    /// The slots that match the filter, in key order.
    visible: Vec<u32>,
    filter: String,
    /// One substring searcher per filter word, built once per filter.
    finders: Vec<Finder<'static>>,
    cursor: usize,
    selected: Option<T::Key>,
    marked: BTreeSet<T::Key>,
    /// First row on screen; kept by the drawing code between frames.
    pub offset: Cell<usize>,
    /// Rows the last frame had room for (for PgUp/PgDn).
    pub page: Cell<usize>,
}

impl<T: Row> Default for List<T> {
    fn default() -> Self {
        List {
            slots: Vec::new(),
            hays: Vec::new(),
            free: Vec::new(),
            order: Vec::new(),
            visible: Vec::new(),
            filter: String::new(),
            finders: Vec::new(),
            cursor: 0,
            selected: None,
            marked: BTreeSet::new(),
            offset: Cell::new(0),
            page: Cell::new(10),
        }
    }
}

impl<T: Row> List<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in the list, ignoring the filter.
    pub fn total(&self) -> usize {
        self.order.len()
    }
    /// Entries that match the filter.
    pub fn len(&self) -> usize {
        self.visible.len()
    }
    pub fn is_empty(&self) -> bool {
        self.visible.is_empty()
    }
    pub fn filter(&self) -> &str {
        &self.filter
    }
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn get(&self, key: &T::Key) -> Option<&T> {
        let pos = pos_in(&self.order, &self.slots, key).ok()?;
        self.item(self.order[pos])
    }

    /// The `i`-th visible row.
    pub fn visible_at(&self, i: usize) -> Option<&T> {
        self.item(*self.visible.get(i)?)
    }

    /// Visible rows `from..from+n` (clamped), for drawing.
    pub fn window(&self, from: usize, n: usize) -> impl Iterator<Item = &T> {
        let from = from.min(self.visible.len());
        let to = from.saturating_add(n).min(self.visible.len());
        self.visible[from..to].iter().filter_map(|&s| self.item(s))
    }

    /// Every visible row, in order.
    pub fn iter_visible(&self) -> impl Iterator<Item = &T> {
        self.window(0, usize::MAX)
    }

    /// Every row, ignoring the filter.
    pub fn iter_all(&self) -> impl Iterator<Item = &T> {
        self.order.iter().filter_map(|&s| self.item(s))
    }

    pub fn selected(&self) -> Option<&T> {
        self.visible_at(self.cursor)
    }

    fn item(&self, slot: u32) -> Option<&T> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn matches(&self, slot: u32) -> bool {
        let Some(hay) = self.hays.get(slot as usize) else {
            return false;
        };
        self.finders
            .iter()
            .all(|f| f.find(hay.as_bytes()).is_some())
    }

    // ---- changes ----

    /// Insert or replace one item. Keeps the selection on its key.
    pub fn upsert(&mut self, item: T) {
        let hay = item.haystack().to_lowercase().into_boxed_str();
        match pos_in(&self.order, &self.slots, item.key()) {
            Ok(pos) => {
                let slot = self.order[pos];
                let was_visible = pos_in(&self.visible, &self.slots, item.key()).ok();
                self.slots[slot as usize] = Some(item);
                self.hays[slot as usize] = hay;
                match (was_visible, self.matches(slot)) {
                    (Some(v), false) => {
                        self.visible.remove(v);
                    }
                    (None, true) => self.show(slot),
                    _ => {}
                }
            }
            Err(pos) => {
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.slots[s as usize] = Some(item);
                        self.hays[s as usize] = hay;
                        s
                    }
                    None => {
                        self.slots.push(Some(item));
                        self.hays.push(hay);
                        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                    }
                };
                self.order.insert(pos, slot);
                if self.matches(slot) {
                    self.show(slot);
                }
            }
        }
        self.restore_cursor();
    }

    /// Insert a live slot into `visible` at its key position.
    fn show(&mut self, slot: u32) {
        if let Some(key) = self.item(slot).map(Row::key)
            && let Err(pos) = pos_in(&self.visible, &self.slots, key)
        {
            self.visible.insert(pos, slot);
        }
    }

    /// Remove one item (no-op when absent). Keeps the cursor in place.
    pub fn remove(&mut self, key: &T::Key) -> Option<T> {
        let pos = pos_in(&self.order, &self.slots, key).ok()?;
        if let Ok(v) = pos_in(&self.visible, &self.slots, key) {
            self.visible.remove(v);
        }
        let slot = self.order.remove(pos);
        self.marked.remove(key);
        let old = self.slots.get_mut(slot as usize).and_then(Option::take);
        if let Some(h) = self.hays.get_mut(slot as usize) {
            *h = Box::default();
        }
        self.free.push(slot);
        self.restore_cursor();
        old
    }

    /// Replace every item (a fresh snapshot from the daemon). Marks on keys
    /// that still exist are kept; the selection stays on its key if it can.
    pub fn replace_all(&mut self, items: impl IntoIterator<Item = T>) {
        self.slots.clear();
        self.hays.clear();
        self.free.clear();
        for item in items {
            self.hays
                .push(item.haystack().to_lowercase().into_boxed_str());
            self.slots.push(Some(item));
        }
        let n = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let mut order: Vec<u32> = (0..n).collect();
        let slots = &self.slots;
        let key = |s: &u32| slots[*s as usize].as_ref().map(Row::key);
        // Stable sort: of duplicate keys in one snapshot, the later one wins.
        order.sort_by(|a, b| match (key(a), key(b)) {
            (Some(x), Some(y)) => T::order(x, y),
            (x, y) => x.is_some().cmp(&y.is_some()),
        });
        let mut deduped: Vec<u32> = Vec::with_capacity(order.len());
        for s in order {
            match deduped.last_mut() {
                Some(last) if key(last) == key(&s) => {
                    self.free.push(*last);
                    *last = s;
                }
                _ => deduped.push(s),
            }
        }
        for &f in &self.free {
            self.slots[f as usize] = None;
            self.hays[f as usize] = Box::default();
        }
        self.order = deduped;
        let (order, slots) = (&self.order, &self.slots);
        self.marked.retain(|k| pos_in(order, slots, k).is_ok());
        self.refilter_all();
    }

    /// Keep only the `keep` last items (by key). Used to cap the audit log.
    pub fn truncate_front(&mut self, keep: usize) {
        while self.order.len() > keep {
            let Some(first) = self.iter_all().next().map(|i| i.key().clone()) else {
                break;
            };
            self.remove(&first);
        }
    }

    // ---- filter ----

    /// Set the filter: whitespace-separated terms, all of which must occur
    /// (case-insensitively) in a row. A filter that extends the previous one
    /// only narrows the current result, so typing stays fast.
    pub fn set_filter(&mut self, filter: &str) {
        let filter = filter.trim_start().to_lowercase();
        if filter == self.filter {
            return;
        }
        let narrows = filter.starts_with(&self.filter);
        self.filter = filter;
        self.finders = self
            .filter
            .split_whitespace()
            .map(|t| Finder::new(t).into_owned())
            .collect();
        if narrows {
            let mut visible = std::mem::take(&mut self.visible);
            visible.retain(|&s| self.matches(s));
            self.visible = visible;
            self.restore_cursor();
        } else {
            self.refilter_all();
        }
    }

    fn refilter_all(&mut self) {
        let mut visible = std::mem::take(&mut self.visible);
        visible.clear();
        if self.finders.is_empty() {
            visible.extend_from_slice(&self.order);
        } else {
            visible.extend(self.order.iter().copied().filter(|&s| self.matches(s)));
        }
        self.visible = visible;
        self.restore_cursor();
    }

    // ---- selection ----

    /// After the visible rows changed: follow the selected key, or stay at the
    /// same position when it is gone.
    fn restore_cursor(&mut self) {
        if let Some(key) = &self.selected
            && let Ok(pos) = pos_in(&self.visible, &self.slots, key)
        {
            self.cursor = pos;
            return;
        }
        self.cursor = self.cursor.min(self.visible.len().saturating_sub(1));
        self.selected = self.visible_at(self.cursor).map(|i| i.key().clone());
    }

    pub fn select_index(&mut self, i: usize) {
        self.cursor = i.min(self.visible.len().saturating_sub(1));
        self.selected = self.visible_at(self.cursor).map(|i| i.key().clone());
    }

    /// Put the cursor on `key` if it is visible. Returns whether it is.
    pub fn select_key(&mut self, key: &T::Key) -> bool {
        match pos_in(&self.visible, &self.slots, key) {
            Ok(pos) => {
                self.select_index(pos);
                true
            }
            Err(_) => false,
        }
    }

    pub fn move_by(&mut self, delta: isize) {
        let target = self.cursor.saturating_add_signed(delta);
        self.select_index(target);
    }
    pub fn first(&mut self) {
        self.select_index(0);
    }
    pub fn last(&mut self) {
        self.select_index(usize::MAX);
    }
    pub fn page_down(&mut self) {
        self.move_by(self.page.get().max(1).cast_signed());
    }
    pub fn page_up(&mut self) {
        self.move_by(-(self.page.get().max(1).cast_signed()));
    }

    /// The first row to draw so that the cursor is inside a viewport of
    /// `height` rows, moving the viewport as little as possible.
    pub fn scroll_for(&self, height: usize) -> usize {
        let height = height.max(1);
        let mut offset = self.offset.get();
        if self.cursor < offset {
            offset = self.cursor;
        } else if self.cursor >= offset + height {
            offset = self.cursor + 1 - height;
        }
        // Do not leave empty space below the last row when rows went away.
        offset = offset.min(self.visible.len().saturating_sub(height));
        self.offset.set(offset);
        self.page.set(height);
        offset
    }

    // ---- marks (multi-select) ----

    pub fn toggle_mark(&mut self) {
        if let Some(key) = self.selected.clone()
            && pos_in(&self.visible, &self.slots, &key).is_ok()
            && !self.marked.remove(&key)
        {
            self.marked.insert(key);
        }
    }
    pub fn is_marked(&self, key: &T::Key) -> bool {
        self.marked.contains(key)
    }
    pub fn marked_count(&self) -> usize {
        self.marked.len()
    }
    pub fn clear_marks(&mut self) {
        self.marked.clear();
    }
    /// The marked items, in key order.
    pub fn marked_items(&self) -> impl Iterator<Item = &T> {
        self.marked.iter().filter_map(|k| self.get(k))
    }
}

/// Where `key` is (or would go) in `slots_in_order`, a key-ordered vector of
/// slab slots.
fn pos_in<T: Row>(
    slots_in_order: &[u32],
    slab: &[Option<T>],
    key: &T::Key,
) -> Result<usize, usize> {
    slots_in_order.binary_search_by(|&s| match slab.get(s as usize).and_then(Option::as_ref) {
        Some(item) => T::order(item.key(), key),
        None => Ordering::Less,
    })
}

/// The list operations that do not depend on the row type, so key handling
/// can drive whichever view is on screen.
pub trait ListNav {
    fn move_by(&mut self, delta: isize);
    fn first(&mut self);
    fn last(&mut self);
    fn page_up(&mut self);
    fn page_down(&mut self);
    fn set_filter(&mut self, filter: &str);
    fn filter(&self) -> &str;
    fn clear_marks(&mut self);
    fn marked_count(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn total(&self) -> usize;
}

impl<T: Row> ListNav for List<T> {
    fn move_by(&mut self, delta: isize) {
        List::move_by(self, delta)
    }
    fn first(&mut self) {
        List::first(self)
    }
    fn last(&mut self) {
        List::last(self)
    }
    fn page_up(&mut self) {
        List::page_up(self)
    }
    fn page_down(&mut self) {
        List::page_down(self)
    }
    fn set_filter(&mut self, filter: &str) {
        List::set_filter(self, filter)
    }
    fn filter(&self) -> &str {
        List::filter(self)
    }
    fn clear_marks(&mut self) {
        List::clear_marks(self)
    }
    fn marked_count(&self) -> usize {
        List::marked_count(self)
    }
    fn len(&self) -> usize {
        List::len(self)
    }
    fn total(&self) -> usize {
        List::total(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct R(u32, &'static str);
    impl Row for R {
        type Key = u32;
        fn key(&self) -> &u32 {
            &self.0
        }
        fn haystack(&self) -> String {
            self.1.to_string()
        }
    }

    fn keys(l: &List<R>) -> Vec<u32> {
        l.iter_visible().map(|r| r.0).collect()
    }

    fn sample() -> List<R> {
        let mut l = List::new();
        l.replace_all([
            R(30, "Gamma"),
            R(10, "alpha"),
            R(20, "beta"),
            R(40, "alphabet"),
        ]);
        l
    }

    #[test]
    fn rows_are_kept_in_key_order() {
        let mut l = sample();
        assert_eq!(keys(&l), [10, 20, 30, 40]);
        l.upsert(R(25, "new"));
        l.upsert(R(5, "first"));
        assert_eq!(keys(&l), [5, 10, 20, 25, 30, 40]);
        assert_eq!(l.total(), 6);
    }

    #[test]
    fn selection_follows_its_key_when_rows_arrive_and_leave_above() {
        let mut l = sample();
        l.select_index(2); // 30
        l.upsert(R(1, "above"));
        l.upsert(R(2, "above"));
        assert_eq!(l.selected().map(|r| r.0), Some(30));
        assert_eq!(l.cursor(), 4);
        l.remove(&10);
        assert_eq!(l.selected().map(|r| r.0), Some(30));
        assert_eq!(l.cursor(), 3);
    }

    #[test]
    fn removing_the_selected_row_selects_the_next_one() {
        let mut l = sample();
        l.select_index(1); // 20
        l.remove(&20);
        assert_eq!(l.selected().map(|r| r.0), Some(30));
        l.last();
        l.remove(&40);
        assert_eq!(l.selected().map(|r| r.0), Some(30));
        l.remove(&10);
        l.remove(&30);
        assert!(l.selected().is_none());
        assert_eq!(l.cursor(), 0);
    }

    #[test]
    fn filter_is_case_insensitive_and_all_terms_must_match() {
        let mut l = sample();
        l.set_filter("ALPHA");
        assert_eq!(keys(&l), [10, 40]);
        l.set_filter("alpha bet");
        assert_eq!(keys(&l), [40]);
        l.set_filter("gam");
        assert_eq!(keys(&l), [30]);
        l.set_filter("");
        assert_eq!(keys(&l), [10, 20, 30, 40]);
        assert_eq!(l.total(), 4);
    }

    #[test]
    fn narrowing_and_widening_the_filter_agree_with_a_full_scan() {
        let mut l = sample();
        for f in ["a", "al", "alp", "al", "", "b", "be", "bet", "beta", "e"] {
            l.set_filter(f);
            let expect: Vec<u32> = [(10, "alpha"), (20, "beta"), (30, "gamma"), (40, "alphabet")]
                .iter()
                .filter(|(_, h)| f.split_whitespace().all(|t| h.contains(t)))
                .map(|(k, _)| *k)
                .collect();
            assert_eq!(keys(&l), expect, "filter {f:?}");
        }
    }

    #[test]
    fn live_rows_respect_the_filter() {
        let mut l = sample();
        l.set_filter("alp");
        l.upsert(R(15, "ALPINE"));
        l.upsert(R(16, "other"));
        assert_eq!(keys(&l), [10, 15, 40]);
        // An update that stops matching leaves the view, and one that starts
        // matching enters it.
        l.upsert(R(15, "changed"));
        l.upsert(R(16, "alpaca"));
        assert_eq!(keys(&l), [10, 16, 40]);
        assert_eq!(l.total(), 6);
    }

    #[test]
    fn filtering_keeps_the_selection_if_it_still_matches() {
        let mut l = sample();
        l.select_index(3); // 40 alphabet
        l.set_filter("alpha");
        assert_eq!(l.selected().map(|r| r.0), Some(40));
        l.set_filter("beta");
        assert_eq!(l.selected().map(|r| r.0), Some(20));
    }

    #[test]
    fn marks_toggle_and_vanish_with_their_rows() {
        let mut l = sample();
        l.select_index(0);
        l.toggle_mark();
        l.move_by(2);
        l.toggle_mark();
        assert_eq!(l.marked_items().map(|r| r.0).collect::<Vec<_>>(), [10, 30]);
        l.toggle_mark();
        assert_eq!(l.marked_count(), 1);
        l.remove(&10);
        assert_eq!(l.marked_count(), 0);
    }

    #[test]
    fn snapshot_replacement_keeps_selection_and_surviving_marks() {
        let mut l = sample();
        l.select_index(2); // 30
        l.toggle_mark();
        l.select_index(1); // 20
        l.toggle_mark();
        l.select_index(2);
        l.replace_all([R(30, "gamma"), R(5, "x"), R(40, "y")]);
        assert_eq!(l.selected().map(|r| r.0), Some(30));
        assert_eq!(l.marked_items().map(|r| r.0).collect::<Vec<_>>(), [30]);
    }

    #[test]
    fn cursor_moves_are_clamped() {
        let mut l = sample();
        l.move_by(-5);
        assert_eq!(l.cursor(), 0);
        l.move_by(100);
        assert_eq!(l.cursor(), 3);
        l.first();
        l.page.set(2);
        l.page_down();
        assert_eq!(l.cursor(), 2);
        l.page_up();
        assert_eq!(l.cursor(), 0);
        let mut empty: List<R> = List::new();
        empty.move_by(3);
        empty.last();
        assert!(empty.selected().is_none());
    }

    #[test]
    fn scrolling_keeps_the_cursor_on_screen_with_minimal_movement() {
        let mut l: List<R> = List::new();
        l.replace_all((0..100).map(|i| R(i, "r")));
        assert_eq!(l.scroll_for(10), 0);
        l.select_index(15);
        assert_eq!(l.scroll_for(10), 6);
        l.select_index(8);
        assert_eq!(l.scroll_for(10), 6);
        l.select_index(3);
        assert_eq!(l.scroll_for(10), 3);
        l.last();
        assert_eq!(l.scroll_for(10), 90);
        // Rows vanish: no blank space below the last one.
        l.replace_all((0..5).map(|i| R(i, "r")));
        assert_eq!(l.scroll_for(10), 0);
    }

    #[test]
    fn slots_are_reused_after_removal() {
        let mut l = sample();
        l.remove(&20);
        l.upsert(R(21, "reuse"));
        assert_eq!(l.slots.len(), 4);
        assert_eq!(l.hays.len(), 4);
        assert_eq!(keys(&l), [10, 21, 30, 40]);
    }

    #[test]
    fn duplicate_keys_in_a_snapshot_keep_the_later_item() {
        let mut l: List<R> = List::new();
        l.replace_all([R(1, "first"), R(2, "x"), R(1, "second")]);
        assert_eq!(
            l.iter_all().map(|r| r.1).collect::<Vec<_>>(),
            ["second", "x"]
        );
        assert_eq!(l.total(), 2);
        l.upsert(R(3, "reuses the freed slot"));
        assert_eq!(l.slots.len(), 3);
        assert_eq!(keys(&l), [1, 2, 3]);
    }

    #[test]
    fn truncate_front_drops_the_oldest() {
        let mut l = sample();
        l.truncate_front(2);
        assert_eq!(keys(&l), [30, 40]);
    }
}
