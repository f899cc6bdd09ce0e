//! An id-keyed table of rows: ids interned into one byte arena, rows in one `Vec`,
//! and a hash index of row numbers.
//!
//! Compared with `HashMap<String, Row>`, a row costs no allocation of its own and the
//! index holds 4 bytes per entry, which keeps a million players well inside a
//! data-plane pod's memory and the hot rows inside the cache.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

/// A row with its id and its dirty mark.
#[derive(Clone, Debug)]
pub(super) struct Row<T> {
    pub(super) value: T,
    key_start: u32,
    key_len: u8,
    /// 0 when clean, else 1 + the row's index in the world's dirty list.
    pub(super) mark: u32,
}

/// Rows addressed by id; a row's number never changes while it lives.
pub(super) struct Table<T> {
    index: HashTable<u32>,
    rows: Vec<Row<T>>,
    keys: Vec<u8>,
    hasher: RandomState,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            index: HashTable::new(),
            rows: Vec::new(),
            keys: Vec::new(),
            hasher: RandomState::default(),
        }
    }
}

impl<T> Table<T> {
    /// The number of the row with id `key`.
    #[inline]
    pub(super) fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&row| self.key(row) == key).copied()
    }

    /// Adds a row for `key`, which must not be present, and returns its number.
    pub(super) fn insert(&mut self, key: &[u8], value: T) -> u32 {
        debug_assert!(u8::try_from(key.len()).is_ok());
        let row = self.rows.len() as u32;
        let key_start = self.keys.len() as u32;
        self.keys.extend_from_slice(key);
        self.rows.push(Row { value, key_start, key_len: key.len() as u8, mark: 0 });
        let hash = self.hasher.hash_one(key);
        let (rows, keys, hasher) = (&self.rows, &self.keys, &self.hasher);
        self.index.insert_unique(hash, row, |&r| hasher.hash_one(key_of(rows, keys, r)));
        row
    }

    /// The id of row `row`.
    #[inline]
    pub(super) fn key(&self, row: u32) -> &[u8] {
        key_of(&self.rows, &self.keys, row)
    }

    #[inline]
    pub(super) fn row(&self, row: u32) -> &Row<T> {
        &self.rows[row as usize]
    }

    #[inline]
    pub(super) fn row_mut(&mut self, row: u32) -> &mut Row<T> {
        &mut self.rows[row as usize]
    }

    /// Rows in insertion order.
    pub(super) fn rows(&self) -> impl ExactSizeIterator<Item = (&[u8], &T)> {
        self.rows
            .iter()
            .map(|r| (&self.keys[r.key_start as usize..][..usize::from(r.key_len)], &r.value))
    }

    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(super) fn clear(&mut self) {
        self.index.clear();
        self.rows.clear();
        self.keys.clear();
    }

    /// Makes room for `rows` more rows with `key_bytes` more bytes of ids.
    pub(super) fn reserve(&mut self, rows: usize, key_bytes: usize) {
        self.rows.reserve(rows);
        self.keys.reserve(key_bytes);
        let (rows_ref, keys, hasher) = (&self.rows, &self.keys, &self.hasher);
        self.index.reserve(rows, |&r| hasher.hash_one(key_of(rows_ref, keys, r)));
    }
}

#[inline]
fn key_of<'a, T>(rows: &[Row<T>], keys: &'a [u8], row: u32) -> &'a [u8] {
    let r = &rows[row as usize];
    &keys[r.key_start as usize..][..usize::from(r.key_len)]
}
