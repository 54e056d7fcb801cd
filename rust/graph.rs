//! Workflow graphs: validation (empty, duplicate ids, unknown dependencies, cycles),
//! a deterministic topological order, and the version fingerprint.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sha2::{Digest, Sha256};

use crate::errors::{Error, Result};

/// One task as a workflow declares it: its id, the ids it depends on, and a fingerprint
/// of its code (computed by the caller; it feeds the workflow's version).
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub id: String,
    pub dependencies: Vec<String>,
    pub fingerprint: String,
}

/// A validated DAG. Tasks are stored in topological order: index `i` is the task's
/// position, which is also the order in which task writes are merged.
#[derive(Debug, Clone)]
pub struct Graph {
    ids: Vec<String>,
    deps: Vec<Vec<u32>>,
    succs: Vec<Vec<u32>>,
    index: HashMap<String, u32>,
    version: String,
}

impl Graph {
    /// Validates `tasks` for the workflow `name` and builds the graph.
    ///
    /// The topological order is deterministic: among tasks whose dependencies are all
    /// placed, the one listed first goes first.
    pub fn build(name: &str, tasks: &[TaskSpec]) -> Result<Graph> {
        if tasks.is_empty() {
            return Err(Error::Workflow(format!("workflow '{name}' has no tasks")));
        }
        let mut listed: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            if t.id.is_empty() {
                return Err(Error::Workflow(format!("workflow '{name}' has a task with an empty id")));
            }
            if listed.insert(t.id.as_str(), i).is_some() {
                return Err(Error::Workflow(format!(
                    "workflow '{name}' lists task id '{}' more than once",
                    t.id
                )));
            }
        }
        let mut deps_listed: Vec<Vec<usize>> = Vec::with_capacity(tasks.len());
        for t in tasks {
            let mut ds = Vec::with_capacity(t.dependencies.len());
            for d in &t.dependencies {
                match listed.get(d.as_str()) {
                    Some(&j) => {
                        if !ds.contains(&j) {
                            ds.push(j)
                        }
                    }
                    None => {
                        return Err(Error::Workflow(format!(
                            "in workflow '{name}', task '{}' depends on unknown task '{d}'",
                            t.id
                        )))
                    }
                }
            }
            deps_listed.push(ds);
        }
        if let Some(cycle) = find_cycle(&deps_listed) {
            let path: Vec<&str> = cycle.iter().map(|&i| tasks[i].id.as_str()).collect();
            return Err(Error::Workflow(format!(
                "workflow '{name}' has a dependency cycle: {}",
                path.join(" -> ")
            )));
        }

        // Kahn's algorithm with the listing order as the tie-break.
        let n = tasks.len();
        let mut indegree: Vec<usize> = deps_listed.iter().map(Vec::len).collect();
        let mut succ_listed: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in deps_listed.iter().enumerate() {
            for &d in ds {
                succ_listed[d].push(i);
            }
        }
        let mut heap: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = heap.pop() {
            order.push(i);
            for &s in &succ_listed[i] {
                indegree[s] -= 1;
                if indegree[s] == 0 {
                    heap.push(Reverse(s));
                }
            }
        }
        debug_assert_eq!(order.len(), n);
        let mut position = vec![0u32; n];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos as u32;
        }
        let ids: Vec<String> = order.iter().map(|&i| tasks[i].id.clone()).collect();
        let deps: Vec<Vec<u32>> = order
            .iter()
            .map(|&i| {
                let mut ds: Vec<u32> = deps_listed[i].iter().map(|&d| position[d]).collect();
                ds.sort_unstable();
                ds
            })
            .collect();
        let mut succs: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (p, ds) in deps.iter().enumerate() {
            for &d in ds {
                succs[d as usize].push(p as u32);
            }
        }
        let index = ids.iter().enumerate().map(|(p, id)| (id.clone(), p as u32)).collect();
        let version = fingerprint(tasks);
        Ok(Graph { ids, deps, succs, index, version })
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the graph has no tasks (never, for a built graph).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Task ids in topological order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The id of the task at `position`.
    pub fn id(&self, position: u32) -> &str {
        &self.ids[position as usize]
    }

    /// The position of task `id`, if it is in the graph.
    pub fn position(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// Positions of the direct dependencies of the task at `position`, ascending.
    pub fn dependencies(&self, position: u32) -> &[u32] {
        &self.deps[position as usize]
    }

    /// Positions of the direct successors of the task at `position`.
    pub fn successors(&self, position: u32) -> &[u32] {
        &self.succs[position as usize]
    }

    /// Positions of every ancestor of the task at `position`, ascending (merge order).
    pub fn ancestors(&self, position: u32) -> Vec<u32> {
        let mut seen = vec![false; self.ids.len()];
        let mut stack: Vec<u32> = self.deps[position as usize].clone();
        let mut out = Vec::new();
        while let Some(p) = stack.pop() {
            if !std::mem::replace(&mut seen[p as usize], true) {
                out.push(p);
                stack.extend_from_slice(&self.deps[p as usize]);
            }
        }
        out.sort_unstable();
        out
    }

    /// The version fingerprint: changes when a task, an edge or a task's code changes.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Returns one cycle as a closed path of listing indices (first == last), if any.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = deps.len();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency index to visit).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < deps[node].len() {
                let d = deps[node][*next];
                *next += 1;
                match mark[d] {
                    Mark::New => {
                        mark[d] = Mark::Open;
                        stack.push((d, 0));
                    }
                    Mark::Open => {
                        // Path on the stack from d to node, then back to d. Edges point
                        // from a task to its dependency; show them as "runs before" arrows.
                        let from = stack.iter().position(|&(x, _)| x == d).unwrap_or(0);
                        let mut path: Vec<usize> = stack[from..].iter().map(|&(x, _)| x).collect();
                        path.push(d);
                        path.reverse();
                        return Some(path);
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

fn fingerprint(tasks: &[TaskSpec]) -> String {
    let mut sorted: Vec<&TaskSpec> = tasks.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = Sha256::new();
    for t in sorted {
        let mut deps: Vec<&str> = t.dependencies.iter().map(String::as_str).collect();
        deps.sort_unstable();
        deps.dedup();
        h.update(t.id.as_bytes());
        h.update([0]);
        for d in deps {
            h.update(d.as_bytes());
            h.update([1]);
        }
        h.update(t.fingerprint.as_bytes());
        h.update([2]);
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            fingerprint: format!("code-of-{id}"),
        }
    }

    #[test]
    fn diamond_orders_and_links() {
        let g = Graph::build(
            "d",
            &[
                spec("join", &["left", "right"]),
                spec("left", &["root"]),
                spec("right", &["root"]),
                spec("root", &[]),
            ],
        )
        .unwrap();
        assert_eq!(g.ids(), ["root", "left", "right", "join"]);
        assert_eq!(g.dependencies(3), [1, 2]);
        assert_eq!(g.successors(0), [1, 2]);
        assert_eq!(g.ancestors(3), vec![0, 1, 2]);
    }

    #[test]
    fn cycle_message_names_the_path() {
        let err = Graph::build("c", &[spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"])]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cycle"), "{msg}");
        assert!(
            msg.contains("a -> b -> c -> a")
                || msg.contains("b -> c -> a -> b")
                || msg.contains("c -> a -> b -> c"),
            "{msg}"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = Graph::build("s", &[spec("a", &["a"])]).unwrap_err();
        assert!(err.to_string().contains("a -> a"), "{err}");
    }

    #[test]
    fn validation_errors() {
        assert!(Graph::build("e", &[]).unwrap_err().to_string().contains("no tasks"));
        assert!(Graph::build("u", &[spec("a", &["zz"])])
            .unwrap_err()
            .to_string()
            .contains("unknown task 'zz'"));
        assert!(Graph::build("d", &[spec("a", &[]), spec("a", &[])])
            .unwrap_err()
            .to_string()
            .contains("more than once"));
    }

    #[test]
    fn version_tracks_edges_and_code_but_not_listing_order() {
        let v1 = Graph::build("v", &[spec("a", &[]), spec("b", &["a"])]).unwrap().version().to_string();
        let v2 = Graph::build("v", &[spec("b", &["a"]), spec("a", &[])]).unwrap().version().to_string();
        let v3 = Graph::build("v", &[spec("a", &[]), spec("b", &[])]).unwrap().version().to_string();
        let mut changed = spec("a", &[]);
        changed.fingerprint = "new code".into();
        let v4 = Graph::build("v", &[changed, spec("b", &["a"])]).unwrap().version().to_string();
        assert_eq!(v1, v2);
        assert_ne!(v1, v3);
        assert_ne!(v1, v4);
    }

    #[test]
    fn long_chain_is_linear() {
        let n = 5000;
        let tasks: Vec<TaskSpec> = (0..n)
            .map(|i| if i == 0 { spec("t0", &[]) } else { spec(&format!("t{i}"), &[&format!("t{}", i - 1)]) })
            .collect();
        let g = Graph::build("chain", &tasks).unwrap();
        assert_eq!(g.len(), n);
        assert_eq!(g.id(4999), "t4999");
    }
}
