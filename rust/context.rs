//! Contexts as JSON maps: a run's input, each task's delta (its writes), and the merges
//! that build what a task sees and what a run ends with.

use std::sync::Arc;

/// A context: string keys to JSON values, in insertion order.
pub type Map = serde_json::Map<String, serde_json::Value>;

/// How deep a value may nest (a scalar is 0, `[[1]]` is 2). Stored documents (a value
/// under its key) are then at most one level deeper, well within what the reader
/// parses (serde_json's 128): everything written can be read back.
pub const MAX_DEPTH: usize = 100;

/// Applies `delta` on top of `base` (later writes win), returning a new map.
pub fn merged(base: &Map, delta: &Map) -> Map {
    let mut out = base.clone();
    apply(&mut out, delta);
    out
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

/// An empty shared map, used for tasks that wrote nothing.
pub fn empty() -> Arc<Map> {
    Arc::new(Map::new())
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
}
