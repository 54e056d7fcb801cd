//! Contexts as JSON maps: a run's input, each task's [`Delta`] (its writes), and the
//! [`View`] a task sees (the input plus its ancestors' writes, shared, never copied).

use std::sync::{Arc, Mutex, PoisonError};

use rpds::HashTrieMapSync;
use serde_json::Value;

/// A context: string keys to JSON values, in insertion order.
pub type Map = serde_json::Map<String, Value>;

/// How deep a value may nest (a scalar is 0, `[[1]]` is 2). Stored documents (a value
/// under its key) are then at most one level deeper, well within what the reader
/// parses (serde_json's 128): everything written can be read back.
pub const MAX_DEPTH: usize = 100;

/// The merge position of the run's input in a [`View`]: before every task.
pub const INPUT: i64 = -1;

/// One writer's writes as views hold them: the keys always, the values while they are
/// in memory. Once the writes are committed and no task that depends on their writer
/// directly is left to run, the engine drops the values ([`Delta::evict`]); a task
/// that reads one of them later reads it back from the database (by `writer`).
pub struct Delta {
    /// The task that wrote them; None for the run's input, which is never evicted.
    writer: Option<Arc<str>>,
    /// The keys, in the order written (shared with the views' entries).
    keys: Box<[Arc<str>]>,
    /// The values, while in memory.
    values: Mutex<Option<Arc<Map>>>,
}

impl std::fmt::Debug for Delta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delta").field("writer", &self.writer).field("keys", &self.keys).finish()
    }
}

impl Delta {
    /// The writes `values` of task `writer` (None: the run's input).
    pub fn new(writer: Option<Arc<str>>, values: Map) -> Arc<Delta> {
        let keys = values.keys().map(|k| Arc::from(k.as_str())).collect();
        Arc::new(Delta { writer, keys, values: Mutex::new(Some(Arc::new(values))) })
    }

    /// The task that wrote these values; None for the run's input.
    pub fn writer(&self) -> Option<&Arc<str>> {
        self.writer.as_ref()
    }

    /// The keys, in the order written.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.keys
    }

    /// The values, when they are in memory.
    pub fn resident(&self) -> Option<Arc<Map>> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts back in memory the values read back from the database.
    pub fn readmit(&self, values: Arc<Map>) {
        *self.values.lock().unwrap_or_else(PoisonError::into_inner) = Some(values);
    }

    /// Drops the values from memory (the database holds them). The run's input stays.
    pub fn evict(&self) {
        if self.writer.is_some() {
            self.values.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }

    /// Whether one of `keys` is among these writes.
    pub fn writes_any(&self, keys: &[Arc<str>]) -> bool {
        !keys.is_empty() && self.keys.iter().any(|k| keys.contains(k))
    }
}

/// Where a key's value is in a view.
#[derive(Clone)]
struct Entry {
    /// The writes that hold the value: the run's input or a task's delta (shared, not
    /// copied).
    source: Arc<Delta>,
    /// The merge position of the writer whose value wins: the latest one.
    writer: i64,
    /// Where the key first appeared (first writer's position, the key's index in its
    /// delta): the key's place in iteration order.
    first: (i64, u32),
}

/// Where a key's value is: in memory, or in the database only.
pub enum Found {
    /// The writes holding the value, in memory: the value is `map[key]`.
    Resident(Arc<Map>),
    /// The writes holding the value were evicted: read them back.
    Stored(Arc<Delta>),
}

/// What a task sees: the run's input plus its ancestors' writes, merged in position
/// (topological) order, later writes winning, keys in the order they first appeared;
/// exactly what folding the maps in that order gives.
///
/// A view is a persistent map: cloning it is O(1), adding a task's writes costs what
/// they hold (not what the view holds), and views share everything they have in common.
/// The merge does not depend on the order in which writes are added (the latest writer
/// wins, the first appearance orders), so a join can start from one parent's view and
/// add only what the others' ancestors wrote.
#[derive(Clone)]
pub struct View {
    entries: HashTrieMapSync<Arc<str>, Entry>,
}

impl Default for View {
    fn default() -> View {
        View { entries: HashTrieMapSync::new_sync() }
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

impl View {
    /// A view of `input` alone (the run's input, or any map).
    pub fn of(input: &Arc<Delta>) -> View {
        let mut view = View::default();
        view.add(INPUT, input);
        view
    }

    /// Adds the writes `source` of the writer at merge position `writer`.
    pub fn add(&mut self, writer: i64, source: &Arc<Delta>) {
        for (index, key) in source.keys().iter().enumerate() {
            let here = (writer, index as u32);
            let entry = match self.entries.get_key_value(&**key) {
                None => (key.clone(), Entry { source: source.clone(), writer, first: here }),
                Some((_, e)) if e.writer >= writer && e.first <= here => continue,
                Some((k, e)) => {
                    let mut e = e.clone();
                    if writer > e.writer {
                        e.source = source.clone();
                        e.writer = writer;
                    }
                    e.first = e.first.min(here);
                    (k.clone(), e)
                }
            };
            self.entries.insert_mut(entry.0, entry.1);
        }
    }

    /// This view plus the writes `source` of the writer at `writer`.
    pub fn with(&self, writer: i64, source: &Arc<Delta>) -> View {
        let mut view = self.clone();
        view.add(writer, source);
        view
    }

    /// Where the value of `key` is; None when the key is not there.
    pub fn find(&self, key: &str) -> Option<Found> {
        let source = &self.entries.get(key)?.source;
        Some(match source.resident() {
            Some(map) => Found::Resident(map),
            None => Found::Stored(source.clone()),
        })
    }

    /// The value of `key` if it is in memory (None when absent or evicted; for what
    /// knows its values are resident: the run's input, pinned keys, tests).
    pub fn get_resident(&self, key: &str) -> Option<Value> {
        match self.find(key)? {
            Found::Resident(map) => map.get(key).cloned(),
            Found::Stored(_) => None,
        }
    }

    /// Whether `key` is there.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.entries.size()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys, in order (O(n log n)).
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<(&(i64, u32), &str)> = self.entries.iter().map(|(k, e)| (&e.first, &**k)).collect();
        keys.sort_unstable_by_key(|(first, _)| **first);
        keys.into_iter().map(|(_, k)| k).collect()
    }
}

/// Applies `delta` on top of `target` in place.
pub fn apply(target: &mut Map, delta: &Map) {
    for (key, value) in delta {
        target.insert(key.clone(), value.clone());
    }
}

/// Builds a context from the input and a sequence of deltas already in merge order.
pub fn fold<'a>(input: &Map, deltas: impl IntoIterator<Item = &'a Map>) -> Map {
    let mut out = input.clone();
    for delta in deltas {
        apply(&mut out, delta);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: serde_json::Value) -> Map {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn later_deltas_win_and_order_is_kept() {
        let input = map(json!({"a": 1, "b": 2}));
        let d1 = map(json!({"b": 3, "c": 4}));
        let d2 = map(json!({"c": 5}));
        let out = fold(&input, [&d1, &d2]);
        assert_eq!(serde_json::Value::Object(out), json!({"a": 1, "b": 3, "c": 5}));
    }

    fn shared(v: serde_json::Value) -> Arc<Delta> {
        Delta::new(Some("t".into()), map(v))
    }

    fn input(v: serde_json::Value) -> Arc<Delta> {
        Delta::new(None, map(v))
    }

    /// The view as one map (every value must be resident).
    fn to_map(view: &View) -> Map {
        view.keys().into_iter().map(|k| (k.to_string(), view.get_resident(k).expect("resident"))).collect()
    }

    #[test]
    fn a_view_is_the_fold_of_its_maps_in_position_order_whatever_the_order_they_are_added() {
        let input = input(json!({"a": 0, "b": 0, "z": 0}));
        let writes = [
            shared(json!({"b": 1, "c": 1})),
            shared(json!({"d": 2, "a": 2})),
            shared(json!({"c": 3, "e": 3, "b": 3})),
            shared(json!({"f": 4})),
        ];
        let maps: Vec<Arc<Map>> = writes.iter().map(|w| w.resident().unwrap()).collect();
        let expected = fold(&input.resident().unwrap(), maps.iter().map(|m| &**m));
        let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
        for order in orders {
            let mut view = View::of(&input);
            for i in order {
                view.add(i as i64, &writes[i]);
            }
            assert_eq!(to_map(&view), expected, "added in the order {order:?}");
            let keys: Vec<&str> = view.keys();
            let expected_keys: Vec<&str> = expected.keys().map(String::as_str).collect();
            assert_eq!(keys, expected_keys, "keys in the order they first appeared");
            assert_eq!(view.len(), expected.len());
            assert_eq!(view.get_resident("b"), Some(json!(3)));
            assert!(view.contains_key("f") && !view.contains_key("nope"));
        }
    }

    #[test]
    fn views_share_and_never_change_once_taken() {
        let base = View::of(&input(json!({"a": 1})));
        let child = base.with(0, &shared(json!({"a": 2, "b": 2})));
        let grandchild = child.with(1, &shared(json!({"c": 3})));
        assert_eq!(serde_json::Value::Object(to_map(&base)), json!({"a": 1}));
        assert_eq!(serde_json::Value::Object(to_map(&child)), json!({"a": 2, "b": 2}));
        assert_eq!(serde_json::Value::Object(to_map(&grandchild)), json!({"a": 2, "b": 2, "c": 3}));
    }

    #[test]
    fn an_evicted_delta_keeps_its_keys_and_points_to_its_writer() {
        let base = input(json!({"a": 1}));
        let writes = shared(json!({"b": 2, "c": 3}));
        let view = View::of(&base).with(0, &writes);
        writes.evict();
        base.evict();
        assert_eq!(view.keys(), ["a", "b", "c"], "keys survive eviction");
        assert_eq!(view.get_resident("a"), Some(json!(1)), "the run's input is never evicted");
        assert_eq!(view.get_resident("b"), None);
        match view.find("c") {
            Some(Found::Stored(delta)) => assert_eq!(delta.writer().map(|w| &**w), Some("t")),
            _ => panic!("an evicted value is found as stored"),
        }
        assert!(view.find("nope").is_none());
        assert!(writes.writes_any(&["c".into()]) && !writes.writes_any(&["a".into()]));
    }
}
