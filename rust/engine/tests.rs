//! Engine tests without Python: a Rust executor, a real SQLite file.

use std::any::Any;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{Done, Engine, EngineConfig, Executor, Job, Outcome, Reads, Recall, Workers};
use crate::context::{Found, Map, View};
use crate::graph::TaskSpec;
use crate::registry::{self, TaskBody, TaskDef, WorkflowDef};
use crate::store::sqlite::library as sqlite_library;
use crate::store::{RunFilter, SqliteConfig, SqliteStore};

type Func = dyn Fn(&Input) -> Result<Map, String> + Send + Sync;

/// What a Rust test task sees: its input, values evicted from memory read back.
struct Input {
    view: View,
    recall: Recall,
}

impl Input {
    fn get(&self, key: &str) -> Option<Value> {
        match self.view.find(key)? {
            Found::Resident(map) => map.get(key).cloned(),
            Found::Stored(delta) => {
                let map = futures::executor::block_on(self.recall.values(&delta, Reads::Inline)).unwrap();
                map.get(key).cloned()
            }
        }
    }

    /// Whether `key`'s value is only in the database now.
    fn evicted(&self, key: &str) -> bool {
        matches!(self.view.find(key), Some(Found::Stored(_)))
    }
}

struct RustBody(Arc<Func>);

impl TaskBody for RustBody {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct RustExecutor(Workers);

/// Every job started by a `RustExecutor`: (task, `Job.followed`).
static FOLLOWED: std::sync::Mutex<Vec<(String, bool)>> = std::sync::Mutex::new(Vec::new());

impl Executor for RustExecutor {
    fn execute(&self, job: Job, done: Done) {
        let body = job.body.as_any().downcast_ref::<RustBody>().expect("a Rust body").0.clone();
        let input = Input { view: job.input, recall: job.recall };
        FOLLOWED.lock().unwrap().push((job.task_id.to_string(), job.followed));
        let (workers, followed) = (self.0.clone(), job.followed);
        self.0.submit(Box::new(move || {
            let outcome = match body(&input) {
                Ok(delta) => Outcome::Completed(delta),
                Err(error) => Outcome::failed(error),
            };
            if followed {
                workers.expect_work();
            }
            done.send(outcome);
        }));
    }
}

fn define(
    id: &str,
    deps: &[&str],
    f: impl Fn(&Input) -> Result<Map, String> + Send + Sync + 'static,
) -> TaskSpec {
    define_with(id, deps, json!({}), f)
}

fn define_with(
    id: &str,
    deps: &[&str],
    policy: Value,
    f: impl Fn(&Input) -> Result<Map, String> + Send + Sync + 'static,
) -> TaskSpec {
    registry::register_task(TaskDef {
        id: id.into(),
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        pull_in: Vec::new(),
        fingerprint: id.into(),
        policy: crate::policy::TaskPolicy::parse(id, &policy).unwrap(),
        body: Arc::new(RustBody(Arc::new(f))),
    });
    TaskSpec {
        id: id.into(),
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        fingerprint: id.into(),
    }
}

/// The ids of `specs`, as a workflow lists them.
fn ids(specs: &[TaskSpec]) -> Vec<String> {
    specs.iter().map(|s| s.id.clone()).collect()
}

fn obj(v: Value) -> Map {
    v.as_object().cloned().unwrap()
}

fn add_one(key: &'static str) -> impl Fn(&Input) -> Result<Map, String> + Send + Sync {
    move |ctx| Ok(obj(json!({ key: ctx.get("x").as_ref().and_then(Value::as_i64).unwrap_or(0) + 1 })))
}

async fn engine(dir: &tempfile::TempDir) -> Engine {
    sqlite_library::bind(None).expect("a SQLite library");
    let store = Arc::new(SqliteStore::open(&SqliteConfig::new(Some(dir.path().join("t.db")))).await.unwrap());
    Engine::start(
        store,
        Arc::new(RustExecutor(Workers::new("test-worker", None))),
        EngineConfig { max_concurrency: 4, ..Default::default() },
    )
    .unwrap()
}

/// Runs `wf` to its end and returns it as stored, having checked that the run its
/// waiter gets (kept in memory: `kept.rs`) is exactly that.
async fn run(engine: &Engine, wf: &Arc<WorkflowDef>, input: Value) -> crate::store::RunRecord {
    let id = engine.submit(wf.clone(), obj(input), None, Reads::Offloaded).await.unwrap();
    engine.wait(&id, Reads::Offloaded).await.unwrap();
    let stored = engine.get_run(&id, Reads::Offloaded).await.unwrap().unwrap();
    assert!(super::lock(&engine.shared.ended).holds(&id), "a run that ended here is kept");
    let kept = engine.ended_run(&id, Reads::Offloaded).await.unwrap().unwrap();
    // The lease is the database's alone (not kept, not shown).
    let shown = |r: &crate::store::RunRecord| {
        format!("{:?}", crate::store::RunRecord { lease_expires_at: None, ..r.clone() })
    };
    assert_eq!(shown(&kept), shown(&stored));
    assert!(!super::lock(&engine.shared.ended).holds(&id), "handed over once");
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_leave_memory_once_their_readers_ran_and_are_read_back_from_the_database() {
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<(&str, bool, Option<i64>)>> = Mutex::new(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    // ev_a writes "a"; ev_b (its only successor) reads it from memory; once ev_b is
    // final, ev_a's writes leave memory: ev_c reads "a" back from the store, which keeps
    // it in memory again for ev_d.
    let probe = |id: &'static str, write: &'static str| {
        move |ctx: &Input| {
            let evicted = ctx.evicted("a");
            let a = ctx.get("a").as_ref().and_then(Value::as_i64);
            SEEN.lock().unwrap().push((id, evicted, a));
            Ok(obj(json!({ write: 1 })))
        }
    };
    let specs = vec![
        define("ev_a", &[], |_| Ok(obj(json!({"a": 41, "pad": "x".repeat(100)})))),
        define("ev_b", &["ev_a"], probe("ev_b", "b")),
        define("ev_c", &["ev_b"], probe("ev_c", "c")),
        define("ev_d", &["ev_c"], probe("ev_d", "d")),
    ];
    let wf = registry::register_workflow("ev_chain", None, &ids(&specs), None).unwrap();
    let run = run(&engine, &wf, json!({})).await;
    assert_eq!(run.status, "completed");
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![("ev_b", false, Some(41)), ("ev_c", true, Some(41)), ("ev_d", false, Some(41))],
        "a child reads its parent's writes from memory; a later task reads them back, once"
    );
    assert_eq!(run.context().get("a"), Some(&json!(41)));
    engine.close().await;
}

#[test]
fn a_chain_is_followed_through_slow_commits_but_concurrent_attempts_are_not() {
    use super::scheduler::worth_following;
    use std::time::Duration;
    let (sqlite, postgres, slow) =
        (Duration::from_micros(30), Duration::from_micros(300), Duration::from_millis(5));
    // Commits shorter than a spin: whatever runs beside it.
    assert!(worth_following(sqlite, 1));
    assert!(worth_following(sqlite, 8));
    // A PostgreSQL commit: a chain alone, yes; among other attempts, no.
    assert!(worth_following(postgres, 1));
    assert!(!worth_following(postgres, 2));
    assert!(!worth_following(postgres, 8));
    // Longer than the worker would wait: no.
    assert!(!worth_following(slow, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_is_followed_when_a_successor_waits_for_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let chain: Vec<TaskSpec> = (0..10)
        .map(|i| {
            let deps = if i == 0 { vec![] } else { vec![format!("fo_c{}", i - 1)] };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            define(&format!("fo_c{i}"), &deps, add_one("x"))
        })
        .collect();
    let wf = registry::register_workflow("fo_chain", None, &ids(&chain), None).unwrap();
    assert_eq!(run(&engine, &wf, json!({})).await.status, "completed");
    // Two parents started together: the join waits for both, so neither is followed.
    let fan = vec![
        define("fo_p1", &[], add_one("p1")),
        define("fo_p2", &[], add_one("p2")),
        define("fo_join", &["fo_p1", "fo_p2"], add_one("j")),
    ];
    let wf = registry::register_workflow("fo_fan", None, &ids(&fan), None).unwrap();
    assert_eq!(run(&engine, &wf, json!({})).await.status, "completed");
    engine.close().await;
    let seen: Vec<(String, bool)> =
        FOLLOWED.lock().unwrap().iter().filter(|(id, _)| id.starts_with("fo_")).cloned().collect();
    let followed = |id: &str| seen.iter().find(|(t, _)| t == id).map(|(_, f)| *f).unwrap();
    for id in ["fo_c9", "fo_p1", "fo_p2", "fo_join"] {
        assert!(!followed(id), "{id}: no successor waits for it alone");
    }
    // Followed unless the last commit took longer than a spin (a very slow disk).
    let chained = (0..9).filter(|i| followed(&format!("fo_c{i}"))).count();
    assert!(chained >= 5, "only {chained} of 9 chain steps followed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_in_order_and_persists_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let specs = vec![
        define("rt_a", &[], add_one("x")),
        define("rt_b", &["rt_a"], add_one("x")),
        define("rt_c", &["rt_b"], add_one("x")),
    ];
    let wf = registry::register_workflow("rt_chain", None, &ids(&specs), None).unwrap();
    let run = run(&engine, &wf, json!({"x": 10})).await;
    assert_eq!(run.status, "completed");
    assert_eq!(run.context().get("x"), Some(&json!(13)));
    for t in &run.tasks {
        assert_eq!(t.status, "completed");
        assert_eq!(t.attempts, 1);
        assert_eq!(t.output.as_ref().unwrap().len(), 1, "only the task's own writes are stored");
    }
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_blocks_downstream_and_independent_branch_completes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let specs = vec![
        define("rf_root", &[], add_one("x")),
        define("rf_bad", &["rf_root"], |_| Err("boom".into())),
        define("rf_after_bad", &["rf_bad"], add_one("y")),
        define("rf_good", &["rf_root"], add_one("z")),
    ];
    let wf = registry::register_workflow("rt_fail", None, &ids(&specs), None).unwrap();
    let run = run(&engine, &wf, json!({})).await;
    let status = |id: &str| run.tasks.iter().find(|t| t.task_id == id).unwrap().status.clone();
    assert_eq!(run.status, "failed");
    assert_eq!(status("rf_bad"), "failed");
    assert_eq!(status("rf_after_bad"), "upstream_failed");
    let after = run.tasks.iter().find(|t| t.task_id == "rf_after_bad").unwrap();
    assert_eq!(after.reason.as_deref(), Some("upstream task 'rf_bad' failed"));
    assert_eq!(status("rf_good"), "completed");
    assert!(run.error.unwrap().contains("rf_bad"));
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_runs_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(engine(&dir).await);
    let specs: Vec<TaskSpec> = (0..5)
        .map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("rc_{}", i - 1)] };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            define(&format!("rc_{i}"), &deps, add_one("x"))
        })
        .collect();
    let wf = registry::register_workflow("rt_many", None, &ids(&specs), None).unwrap();
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(engine.submit(wf.clone(), obj(json!({"x": 0})), None, Reads::Offloaded).await.unwrap());
    }
    for id in &ids {
        engine.wait(id, Reads::Offloaded).await.unwrap();
    }
    let runs = engine
        .list_runs(
            &RunFilter {
                workflow: Some("rt_many".into()),
                status: Some("completed".into()),
                run_id: None,
                limit: 1000,
            },
            Reads::Offloaded,
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 200);
    assert!(runs.iter().all(|r| r.task_counts == [("completed".to_string(), 5)]));
    for id in &ids {
        let run = engine.get_run(id, Reads::Offloaded).await.unwrap().unwrap();
        assert_eq!(run.context().get("x"), Some(&json!(5)));
    }
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_success_and_records_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = calls.clone();
    let specs = vec![define_with("rr_flaky", &[], json!({"retries": 3, "retry_delay": 0.01}), move |_| {
        if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            Err("not yet".into())
        } else {
            Ok(obj(json!({"ok": true})))
        }
    })];
    let wf = registry::register_workflow("rt_retry", None, &ids(&specs), None).unwrap();
    let run = run(&engine, &wf, json!({})).await;
    assert_eq!(run.status, "completed");
    let task = &run.tasks[0];
    assert_eq!(task.attempts, 3);
    let statuses: Vec<&str> = task.history.iter().map(|a| a.status.as_str()).collect();
    assert_eq!(statuses, ["failed", "failed", "completed"]);
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_done_rule_runs_cleanup_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let specs = vec![
        define("rd_bad", &[], |_| Err("boom".into())),
        define("rd_next", &["rd_bad"], add_one("x")),
        define_with("rd_cleanup", &["rd_next"], json!({"trigger": {"rule": "all_done"}}), add_one("c")),
    ];
    let wf = registry::register_workflow("rt_rules", None, &ids(&specs), None).unwrap();
    let run = run(&engine, &wf, json!({})).await;
    let status = |id: &str| run.tasks.iter().find(|t| t.task_id == id).unwrap().status.clone();
    assert_eq!(status("rd_next"), "upstream_failed");
    assert_eq!(status("rd_cleanup"), "completed");
    assert_eq!(run.status, "failed");
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_the_run_and_its_pending_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let specs = vec![
        define("rk_slow", &[], |_| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(Map::new())
        }),
        define("rk_after", &["rk_slow"], add_one("x")),
    ];
    let wf = registry::register_workflow("rt_cancel", None, &ids(&specs), None).unwrap();
    let id = engine.submit(wf, obj(json!({})), None, Reads::Offloaded).await.unwrap();
    assert!(engine.cancel(&id).await.unwrap());
    engine.wait(&id, Reads::Offloaded).await.unwrap();
    let run = engine.get_run(&id, Reads::Offloaded).await.unwrap().unwrap();
    assert_eq!(run.status, "cancelled");
    assert!(run.tasks.iter().all(|t| t.status == "cancelled"));
    assert!(!engine.cancel(&id).await.unwrap(), "a final run cannot be cancelled again");
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_root_skips_its_successors_and_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let never = json!({"trigger": {"rule": "context_value", "key": "absent", "op": "exists"}});
    let specs = vec![
        define_with("rs_root", &[], never, add_one("x")),
        define("rs_next", &["rs_root"], add_one("y")),
        define_with("rs_last", &["rs_next"], json!({"trigger": {"rule": "all_done"}}), add_one("z")),
    ];
    let wf = registry::register_workflow("rt_skip_root", None, &ids(&specs), None).unwrap();
    let run = tokio::time::timeout(std::time::Duration::from_secs(10), run(&engine, &wf, json!({})))
        .await
        .expect("the run must end");
    let status = |id: &str| run.tasks.iter().find(|t| t.task_id == id).unwrap().status.clone();
    assert_eq!(status("rs_root"), "skipped");
    assert_eq!(status("rs_next"), "skipped");
    assert_eq!(status("rs_last"), "completed");
    assert_eq!(run.status, "completed");
    engine.close().await;
}

/// Not a test of behaviour: prints the engine's per-task cost on a chain without Python
/// (`cargo test --release -- --ignored --nocapture chain_cost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn chain_cost() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir).await;
    let specs: Vec<TaskSpec> = (0..100)
        .map(|i| {
            let deps: Vec<String> = if i == 0 { vec![] } else { vec![format!("cc_{}", i - 1)] };
            let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
            define(&format!("cc_{i}"), &deps, add_one("x"))
        })
        .collect();
    let wf = registry::register_workflow("rt_cost", None, &ids(&specs), None).unwrap();
    run(&engine, &wf, json!({"x": 0})).await;
    let t = std::time::Instant::now();
    for _ in 0..20 {
        run(&engine, &wf, json!({"x": 0})).await;
    }
    println!("chain: {:.1} us/task", t.elapsed().as_micros() as f64 / 2000.0);
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_only_engine_queues_a_failed_run_and_the_next_engine_resumes_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static BROKEN: AtomicBool = AtomicBool::new(true);
    let dir = tempfile::tempdir().unwrap();
    let first = engine(&dir).await;
    let specs = vec![
        define("rq_a", &[], add_one("x")),
        define("rq_b", &["rq_a"], |ctx| {
            if BROKEN.load(Ordering::SeqCst) {
                return Err("not yet".into());
            }
            Ok(obj(json!({ "y": ctx.get("x").as_ref().and_then(Value::as_i64).unwrap_or(0) * 2 })))
        }),
    ];
    let wf = registry::register_workflow("rq_chain", None, &ids(&specs), None).unwrap();
    let failed = run(&first, &wf, json!({"x": 1})).await;
    assert_eq!(failed.status, "failed");
    first.close().await;

    BROKEN.store(false, Ordering::SeqCst);
    let store = Arc::new(SqliteStore::open(&SqliteConfig::new(Some(dir.path().join("t.db")))).await.unwrap());
    let submitter = Engine::start(
        store,
        Arc::new(RustExecutor(Workers::new("test-worker", None))),
        EngineConfig { max_concurrency: 0, ..Default::default() },
    )
    .unwrap();
    submitter.resume(&failed.run_id).await.unwrap();
    let queued = submitter.get_run(&failed.run_id, Reads::Offloaded).await.unwrap().unwrap();
    assert_eq!((queued.status.as_str(), queued.error.as_deref()), ("queued", None));
    assert!(submitter.resume(&failed.run_id).await.is_err(), "a queued run is not queued twice");

    let second = engine(&dir).await; // claims the queued run as it starts, and resumes it
    second.wait(&failed.run_id, Reads::Offloaded).await.unwrap();
    let resumed = second.get_run(&failed.run_id, Reads::Offloaded).await.unwrap().unwrap();
    assert_eq!(resumed.status, "completed");
    assert_eq!(resumed.context().get("y"), Some(&json!(4)));
    let attempts: Vec<u32> = resumed.tasks.iter().map(|t| t.attempts).collect();
    assert_eq!(attempts, vec![1, 2], "the completed task kept its output");
    let kinds: Vec<&str> = resumed.events.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert!(kinds.ends_with(&["resume_requested", "resumed"]), "{kinds:?}");
    submitter.close().await;
    second.close().await;
}
