//! The map of the tasks an engine holds, by id. Each key keeps the hash of its id, computed once
//! with a per-map random seed (foldhash): growing the map moves keys without reading and hashing
//! every id again (13 % of admission's CPU in a profile of `bench`), and a probe compares hashes
//! before it compares ids. Seeded, so that ids cannot be chosen to collide in advance.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::Equivalent;
use hashbrown::hash_map::{self, HashMap};

/// A held task's key: its id and the id's hash.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    hash: u64,
    id: Arc<str>,
}

impl Key {
    /// The id, shared with whoever else keeps it.
    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.id == other.id
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// An id looked up, with its hash.
struct Lookup<'a> {
    hash: u64,
    id: &'a str,
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.hash == key.hash && *self.id == *key.id
    }
}

/// Hands the precomputed hash on unchanged (foldhash's output is already well mixed).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the keys above; anything else is still folded in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Held tasks by id.
#[derive(Debug)]
pub(crate) struct TaskMap<V> {
    seed: foldhash::fast::RandomState,
    map: HashMap<Key, V, PassThrough>,
}

/// A slot of the map, as [`TaskMap::entry`] finds it.
pub(crate) type Entry<'a, V> = hash_map::Entry<'a, Key, V, PassThrough>;

impl<V> TaskMap<V> {
    /// An empty map with room for `capacity` tasks before it grows.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            seed: foldhash::fast::RandomState::default(),
            map: HashMap::with_capacity_and_hasher(capacity, PassThrough),
        }
    }

    fn lookup<'a>(&self, id: &'a str) -> Lookup<'a> {
        Lookup {
            hash: self.seed.hash_one(id),
            id,
        }
    }

    /// How many tasks it holds.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&V> {
        self.map.get(&self.lookup(id))
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let lookup = self.lookup(id);
        self.map.get_mut(&lookup)
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<V> {
        let lookup = self.lookup(id);
        self.map.remove(&lookup)
    }

    /// Keeps `value` under `id`, replacing what was there.
    pub(crate) fn insert(&mut self, id: Arc<str>, value: V) {
        let hash = self.seed.hash_one(&*id);
        self.map.insert(Key { hash, id }, value);
    }

    /// The slot of `id`, to fill or read.
    pub(crate) fn entry(&mut self, id: Arc<str>) -> Entry<'_, V> {
        let hash = self.seed.hash_one(&*id);
        self.map.entry(Key { hash, id })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut V)> {
        self.map.iter_mut().map(|(key, value)| (&key.id, value))
    }

    /// Keeps only the tasks for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, &mut V) -> bool) {
        self.map.retain(|key, value| keep(&key.id, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_by_their_text_after_the_map_grows() {
        let mut map = TaskMap::with_capacity(4);
        for i in 0..10_000 {
            map.insert(Arc::from(format!("task-{i}")), i);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get("task-9999"), Some(&9999));
        assert_eq!(map.get("task-10000"), None);
        *map.get_mut("task-7").unwrap() += 1;
        assert_eq!(map.remove("task-7"), Some(8));
        assert_eq!(map.get("task-7"), None);
        match map.entry(Arc::from("task-8")) {
            Entry::Occupied(held) => assert_eq!(*held.get(), 8),
            Entry::Vacant(_) => panic!("task-8 is held"),
        }
        map.retain(|id, _| id.ends_with('1'));
        assert_eq!(map.len(), 1_000);
        assert!(
            map.iter_mut()
                .all(|(id, value)| id.ends_with('1') && *value % 10 == 1)
        );
    }

    #[test]
    fn two_maps_hash_the_same_id_differently() {
        let a: TaskMap<()> = TaskMap::with_capacity(1);
        let b: TaskMap<()> = TaskMap::with_capacity(1);
        assert_ne!(a.lookup("task").hash, b.lookup("task").hash);
    }
}
