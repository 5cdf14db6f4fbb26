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
use std::collections::{BTreeMap, BTreeSet};

/// Something a [`List`] can hold.
pub trait Row {
    type Key: Ord + Clone + std::fmt::Debug;
    fn key(&self) -> &Self::Key;
    /// The text the filter searches, lower-cased by [`List`].
    fn haystack(&self) -> String;
}

struct Slot<T> {
    item: T,
    hay: Box<str>,
}

pub struct List<T: Row> {
    slots: Vec<Option<Slot<T>>>,
    free: Vec<u32>,
    index: BTreeMap<T::Key, u32>,
    visible: Vec<u32>,
    filter: String,
    terms: Vec<String>,
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
            free: Vec::new(),
            index: BTreeMap::new(),
            visible: Vec::new(),
            filter: String::new(),
            terms: Vec::new(),
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
        self.index.len()
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
        let slot = *self.index.get(key)?;
        self.slot(slot).map(|s| &s.item)
    }

    /// The `i`-th visible row.
    pub fn visible_at(&self, i: usize) -> Option<&T> {
        let slot = *self.visible.get(i)?;
        self.slot(slot).map(|s| &s.item)
    }

    /// Visible rows `from..from+n` (clamped), for drawing.
    pub fn window(&self, from: usize, n: usize) -> impl Iterator<Item = &T> {
        let from = from.min(self.visible.len());
        let to = from.saturating_add(n).min(self.visible.len());
        self.visible[from..to]
            .iter()
            .filter_map(|&s| self.slot(s).map(|s| &s.item))
    }

    /// Every visible row, in order.
    pub fn iter_visible(&self) -> impl Iterator<Item = &T> {
        self.window(0, usize::MAX)
    }

    /// Every row, ignoring the filter.
    pub fn iter_all(&self) -> impl Iterator<Item = &T> {
        self.index
            .values()
            .filter_map(|&s| self.slot(s).map(|s| &s.item))
    }

    pub fn selected(&self) -> Option<&T> {
        self.visible_at(self.cursor)
    }

    fn slot(&self, slot: u32) -> Option<&Slot<T>> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn key_at(&self, slot: u32) -> Option<&T::Key> {
        self.slot(slot).map(|s| s.item.key())
    }

    fn matches(&self, hay: &str) -> bool {
        self.terms.iter().all(|t| hay.contains(t.as_str()))
    }

    /// Position in `visible` where `key` is or would be.
    fn visible_pos(&self, key: &T::Key) -> Result<usize, usize> {
        self.visible.binary_search_by(|&s| match self.key_at(s) {
            Some(k) => k.cmp(key),
            None => std::cmp::Ordering::Less,
        })
    }

    // ---- changes ----

    /// Insert or replace one item. Keeps the selection on its key.
    pub fn upsert(&mut self, item: T) {
        let key = item.key().clone();
        let hay = item.haystack().to_lowercase().into_boxed_str();
        let matches = self.matches(&hay);
        let new = Slot { item, hay };
        if let Some(&slot) = self.index.get(&key) {
            let was_visible = self.visible_pos(&key).ok();
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Some(new);
            }
            match (was_visible, matches) {
                (Some(pos), false) => {
                    self.visible.remove(pos);
                }
                (None, true) => {
                    if let Err(pos) = self.visible_pos(&key) {
                        self.visible.insert(pos, slot);
                    }
                }
                _ => {}
            }
        } else {
            let slot = match self.free.pop() {
                Some(s) => {
                    if let Some(cell) = self.slots.get_mut(s as usize) {
                        *cell = Some(new);
                    }
                    s
                }
                None => {
                    self.slots.push(Some(new));
                    u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            self.index.insert(key.clone(), slot);
            if matches && let Err(pos) = self.visible_pos(&key) {
                self.visible.insert(pos, slot);
            }
        }
        self.restore_cursor();
    }

    /// Remove one item (no-op when absent). Keeps the cursor in place.
    pub fn remove(&mut self, key: &T::Key) -> Option<T> {
        let slot = self.index.get(key).copied()?;
        if let Ok(pos) = self.visible_pos(key) {
            self.visible.remove(pos);
        }
        self.index.remove(key);
        self.marked.remove(key);
        let old = self.slots.get_mut(slot as usize).and_then(Option::take);
        self.free.push(slot);
        self.restore_cursor();
        old.map(|s| s.item)
    }

    /// Replace every item (a fresh snapshot from the daemon). Marks on keys
    /// that still exist are kept; the selection stays on its key if it can.
    pub fn replace_all(&mut self, items: impl IntoIterator<Item = T>) {
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        for item in items {
            let key = item.key().clone();
            let hay = item.haystack().to_lowercase().into_boxed_str();
            let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
            self.slots.push(Some(Slot { item, hay }));
            if let Some(old) = self.index.insert(key, slot)
                && let Some(cell) = self.slots.get_mut(old as usize)
            {
                // A duplicate key in one snapshot: the later one wins.
                *cell = None;
                self.free.push(old);
            }
        }
        let index = &self.index;
        self.marked.retain(|k| index.contains_key(k));
        self.refilter_all();
    }

    /// Keep only the `n` last items (by key). Used to cap the audit log.
    pub fn truncate_front(&mut self, keep: usize) {
        while self.index.len() > keep {
            let Some(first) = self.index.keys().next().cloned() else {
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
        self.terms = self.filter.split_whitespace().map(str::to_owned).collect();
        if narrows {
            let mut visible = std::mem::take(&mut self.visible);
            visible.retain(|&s| self.slot(s).is_some_and(|sl| self.matches(&sl.hay)));
            self.visible = visible;
        } else {
            self.refilter_all();
            return;
        }
        self.restore_cursor();
    }

    fn refilter_all(&mut self) {
        let mut visible = std::mem::take(&mut self.visible);
        visible.clear();
        visible.extend(
            self.index
                .values()
                .copied()
                .filter(|&s| self.slot(s).is_some_and(|sl| self.matches(&sl.hay))),
        );
        self.visible = visible;
        self.restore_cursor();
    }

    // ---- selection ----

    /// After the visible rows changed: follow the selected key, or stay at the
    /// same position when it is gone.
    fn restore_cursor(&mut self) {
        if let Some(key) = &self.selected
            && let Ok(pos) = self.visible_pos(key)
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
        match self.visible_pos(key) {
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
            && self.visible_pos(&key).is_ok()
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
        assert_eq!(keys(&l), [10, 21, 30, 40]);
    }

    #[test]
    fn truncate_front_drops_the_oldest() {
        let mut l = sample();
        l.truncate_front(2);
        assert_eq!(keys(&l), [30, 40]);
    }
}
