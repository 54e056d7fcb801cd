//! Contexts as JSON maps: a run's input, each task's delta (its writes), and the
//! [`View`] a task sees (the input plus its ancestors' writes, shared, never copied).

use std::sync::Arc;

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

/// Where a key's value is in a view.
#[derive(Clone)]
struct Entry {
    /// The map that holds the value: the run's input or a task's writes (shared, not
    /// copied).
    source: Arc<Map>,
    /// The merge position of the writer whose value wins: the latest one.
    writer: i64,
    /// Where the key first appeared (first writer's position, the key's index in its
    /// map): the key's place in iteration order.
    first: (i64, u32),
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
        f.debug_map().entries(self.iter()).finish()
    }
}

impl View {
    /// A view of `input` alone (the run's input, or any map).
    pub fn of(input: &Arc<Map>) -> View {
        let mut view = View::default();
        view.add(INPUT, input);
        view
    }

    /// Adds the writes `source` of the writer at merge position `writer`.
    pub fn add(&mut self, writer: i64, source: &Arc<Map>) {
        for (index, key) in source.keys().enumerate() {
            let here = (writer, index as u32);
            let entry = match self.entries.get_key_value(key.as_str()) {
                None => (Arc::from(key.as_str()), Entry { source: source.clone(), writer, first: here }),
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
    pub fn with(&self, writer: i64, source: &Arc<Map>) -> View {
        let mut view = self.clone();
        view.add(writer, source);
        view
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key)?.source.get(key)
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

    /// The keys and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.keys().into_iter().filter_map(|k| Some((k, self.get(k)?)))
    }

    /// The whole context as one map (a copy: for what needs all of it).
    pub fn to_map(&self) -> Map {
        self.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
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

    fn shared(v: serde_json::Value) -> Arc<Map> {
        Arc::new(map(v))
    }

    #[test]
    fn a_view_is_the_fold_of_its_maps_in_position_order_whatever_the_order_they_are_added() {
        let input = shared(json!({"a": 0, "b": 0, "z": 0}));
        let writes = [
            shared(json!({"b": 1, "c": 1})),
            shared(json!({"d": 2, "a": 2})),
            shared(json!({"c": 3, "e": 3, "b": 3})),
            shared(json!({"f": 4})),
        ];
        let expected = fold(&input, writes.iter().map(|w| &**w));
        let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]];
        for order in orders {
            let mut view = View::of(&input);
            for i in order {
                view.add(i as i64, &writes[i]);
            }
            assert_eq!(view.to_map(), expected, "added in the order {order:?}");
            let keys: Vec<&str> = view.keys();
            let expected_keys: Vec<&str> = expected.keys().map(String::as_str).collect();
            assert_eq!(keys, expected_keys, "keys in the order they first appeared");
            assert_eq!(view.len(), expected.len());
            assert_eq!(view.get("b"), Some(&json!(3)));
            assert!(view.contains_key("f") && !view.contains_key("nope"));
        }
    }

    #[test]
    fn views_share_and_never_change_once_taken() {
        let base = View::of(&shared(json!({"a": 1})));
        let child = base.with(0, &shared(json!({"a": 2, "b": 2})));
        let grandchild = child.with(1, &shared(json!({"c": 3})));
        assert_eq!(serde_json::Value::Object(base.to_map()), json!({"a": 1}));
        assert_eq!(serde_json::Value::Object(child.to_map()), json!({"a": 2, "b": 2}));
        assert_eq!(serde_json::Value::Object(grandchild.to_map()), json!({"a": 2, "b": 2, "c": 3}));
    }
}
