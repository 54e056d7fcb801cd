//! Trigger rules: plain JSON data, parsed and validated at definition, evaluated by the
//! scheduler when all of a task's direct dependencies are final.
//!
//! A rule's verdict is one of three, as in Apache Airflow: run the task, skip it (the
//! rule chose not to run it), or mark it `upstream_failed` (it cannot run because
//! something upstream failed, under a rule that needs success). The dependency rules
//! follow Airflow's `trigger_rule_dep.py` once every direct dependency is done; a task
//! without dependencies satisfies every dependency rule (Airflow runs a task without
//! upstream whatever its rule).

use std::sync::Arc;

use serde_json::Value;

use crate::errors::{Error, Result};

/// What a dependency ended as, for rule evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Completed,
    Failed,
    Skipped,
    /// It did not run because something upstream of it failed.
    UpstreamFailed,
    Cancelled,
}

impl Upstream {
    fn word(self) -> &'static str {
        match self {
            Upstream::Completed => "completed",
            Upstream::Failed => "failed",
            Upstream::Skipped => "was skipped",
            Upstream::UpstreamFailed => "did not run (upstream_failed)",
            Upstream::Cancelled => "was cancelled",
        }
    }

    /// Counted as a failure by the dependency rules (`failed`, `upstream_failed`, and a
    /// cancelled task, which did not succeed either).
    fn is_failure(self) -> bool {
        matches!(self, Upstream::Failed | Upstream::UpstreamFailed | Upstream::Cancelled)
    }
}

/// What a rule decides for its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// The rule chose not to run the task; the reason is recorded.
    Skip(String),
    /// The task cannot run because something upstream failed; the reason names it.
    UpstreamFailed(String),
}

impl Verdict {
    /// True for `Run`.
    pub fn runs(&self) -> bool {
        matches!(self, Verdict::Run)
    }
}

/// A comparison in `context_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    Exists,
}

impl Op {
    /// The operator as written in a rule.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Exists => "exists",
        }
    }
}

/// A trigger rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Rule {
    /// Every dependency completed (the default).
    #[default]
    AllSuccess,
    /// Every dependency failed or is `upstream_failed`.
    AllFailed,
    /// Every dependency is final, however it ended.
    AllDone,
    /// At least one dependency completed.
    OneSuccess,
    /// At least one dependency failed or is `upstream_failed`.
    OneFailed,
    /// At least one dependency completed or failed.
    OneDone,
    /// No dependency failed or is `upstream_failed` (completed or skipped).
    NoneFailed,
    /// No dependency failed or is `upstream_failed`, and at least one completed.
    NoneFailedMinOneSuccess,
    /// No dependency was skipped.
    NoneSkipped,
    /// Every dependency was skipped.
    AllSkipped,
    /// Every dependency is final, none was skipped, and at least one completed.
    AllDoneMinOneSuccess,
    /// Runs whatever its dependencies did.
    Always,
    /// The named upstream task ended with this status.
    TaskIs {
        task: String,
        status: Upstream,
    },
    ContextValue {
        key: String,
        op: Op,
        value: Value,
    },
    AllOf(Vec<Rule>),
    AnyOf(Vec<Rule>),
    Not(Box<Rule>),
}

/// The rules over the direct dependencies' outcomes, by name.
const DEPENDENCY_RULES: [(&str, Rule); 12] = [
    ("all_success", Rule::AllSuccess),
    ("all_failed", Rule::AllFailed),
    ("all_done", Rule::AllDone),
    ("one_success", Rule::OneSuccess),
    ("one_failed", Rule::OneFailed),
    ("one_done", Rule::OneDone),
    ("none_failed", Rule::NoneFailed),
    ("none_failed_min_one_success", Rule::NoneFailedMinOneSuccess),
    ("none_skipped", Rule::NoneSkipped),
    ("all_skipped", Rule::AllSkipped),
    ("all_done_min_one_success", Rule::AllDoneMinOneSuccess),
    ("always", Rule::Always),
];

/// What a rule looks at: the direct dependencies' outcomes, any named upstream task's
/// outcome, and the task's input context.
pub trait Facts {
    fn dependencies(&self) -> Vec<(&str, Upstream)>;
    fn status_of(&self, task: &str) -> Option<Upstream>;
    /// The value of `key` in the task's input context.
    fn context_value(&self, key: &str) -> Option<Value>;
    /// Why an `upstream_failed` task did not run (it names the task that failed).
    fn cause_of(&self, _task: &str) -> Option<&str> {
        None
    }
}

/// How the direct dependencies ended.
#[derive(Default)]
struct Counts {
    total: usize,
    success: usize,
    /// Failed (or cancelled): ran and did not succeed.
    failed: usize,
    upstream_failed: usize,
    skipped: usize,
}

impl Rule {
    /// Parses a rule from its JSON form, e.g. `{"rule": "all_of", "rules": [...]}`.
    pub fn parse(v: &Value) -> Result<Rule> {
        let bad = |msg: String| Error::Workflow(format!("invalid trigger rule {v}: {msg}"));
        let obj = v.as_object().ok_or_else(|| bad("a rule is an object".into()))?;
        let name = obj.get("rule").and_then(Value::as_str).ok_or_else(|| bad("missing \"rule\"".into()))?;
        let task = || {
            obj.get("task")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| bad("needs a \"task\" id".into()))
        };
        let list = || -> Result<Vec<Rule>> {
            let rules =
                obj.get("rules").and_then(Value::as_array).ok_or_else(|| bad("needs \"rules\"".into()))?;
            if rules.is_empty() {
                return Err(bad("needs at least one rule".into()));
            }
            rules.iter().map(Rule::parse).collect()
        };
        if let Some((_, rule)) = DEPENDENCY_RULES.iter().find(|(n, _)| *n == name) {
            return Ok(rule.clone());
        }
        Ok(match name {
            "task_succeeded" => Rule::TaskIs { task: task()?, status: Upstream::Completed },
            "task_failed" => Rule::TaskIs { task: task()?, status: Upstream::Failed },
            "task_skipped" => Rule::TaskIs { task: task()?, status: Upstream::Skipped },
            "context_value" => {
                let key = obj
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("needs a \"key\"".into()))?
                    .to_owned();
                let op = match obj.get("op").and_then(Value::as_str).unwrap_or("") {
                    "==" => Op::Eq,
                    "!=" => Op::Ne,
                    ">" => Op::Gt,
                    ">=" => Op::Ge,
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    "in" => Op::In,
                    "not_in" => Op::NotIn,
                    "exists" => Op::Exists,
                    other => {
                        return Err(bad(format!(
                            "unknown op {other:?} (use == != > >= < <= in not_in exists)"
                        )))
                    }
                };
                let value = obj.get("value").cloned().unwrap_or(Value::Null);
                if matches!(op, Op::In | Op::NotIn) && !value.is_array() {
                    return Err(bad("'in' and 'not_in' compare with a list".into()));
                }
                Rule::ContextValue { key, op, value }
            }
            "all_of" => Rule::AllOf(list()?),
            "any_of" => Rule::AnyOf(list()?),
            "not" => {
                Rule::Not(Box::new(Rule::parse(obj.get("of").ok_or_else(|| bad("needs \"of\"".into()))?)?))
            }
            other => return Err(bad(format!("unknown rule {other:?}"))),
        })
    }

    /// Task ids the rule names (they must be upstream of the task).
    pub fn named_tasks(&self) -> Vec<&str> {
        match self {
            Rule::TaskIs { task, .. } => vec![task.as_str()],
            Rule::AllOf(rs) | Rule::AnyOf(rs) => rs.iter().flat_map(Rule::named_tasks).collect(),
            Rule::Not(r) => r.named_tasks(),
            _ => Vec::new(),
        }
    }

    /// Whether the task runs: `verdict(..)` is `Run`.
    pub fn holds(&self, facts: &dyn Facts) -> bool {
        self.verdict(facts).runs()
    }

    /// Decides the task: run it, skip it, or mark it `upstream_failed`, with the reason.
    ///
    /// Combinations: `all_of` runs when every part runs, else it takes a part's
    /// `upstream_failed` verdict if there is one, else it skips; `any_of` runs
    /// when a part runs, else it is `upstream_failed` if a part is, else skipped;
    /// `not_` runs exactly when its part does not.
    pub fn verdict(&self, facts: &dyn Facts) -> Verdict {
        let false_rule = || Verdict::Skip(format!("trigger rule {} is false", self.describe()));
        match self {
            Rule::TaskIs { task, status } => {
                if facts.status_of(task) == Some(*status) {
                    Verdict::Run
                } else {
                    false_rule()
                }
            }
            Rule::ContextValue { key, op, value } => {
                if compare(facts.context_value(key).as_ref(), *op, value) {
                    Verdict::Run
                } else {
                    false_rule()
                }
            }
            Rule::AllOf(rs) => {
                let mut runs = true;
                for r in rs {
                    match r.verdict(facts) {
                        Verdict::Run => {}
                        failed @ Verdict::UpstreamFailed(_) => return failed,
                        Verdict::Skip(_) => runs = false,
                    }
                }
                if runs {
                    Verdict::Run
                } else {
                    false_rule()
                }
            }
            Rule::AnyOf(rs) => {
                let mut failed = None;
                for r in rs {
                    match r.verdict(facts) {
                        Verdict::Run => return Verdict::Run,
                        f @ Verdict::UpstreamFailed(_) => {
                            failed.get_or_insert(f);
                        }
                        Verdict::Skip(_) => {}
                    }
                }
                failed.unwrap_or_else(false_rule)
            }
            Rule::Not(r) => {
                if r.verdict(facts).runs() {
                    false_rule()
                } else {
                    Verdict::Run
                }
            }
            dependency_rule => dependency_rule.dependency_verdict(facts),
        }
    }

    /// The verdict of a rule over the direct dependencies' outcomes, as Airflow decides
    /// it once they are all done.
    fn dependency_verdict(&self, facts: &dyn Facts) -> Verdict {
        let deps = facts.dependencies();
        if deps.is_empty() {
            return Verdict::Run; // as in Airflow: a task without upstream runs
        }
        let mut n = Counts { total: deps.len(), ..Counts::default() };
        for (_, status) in &deps {
            match status {
                Upstream::Completed => n.success += 1,
                Upstream::Failed | Upstream::Cancelled => n.failed += 1,
                Upstream::UpstreamFailed => n.upstream_failed += 1,
                Upstream::Skipped => n.skipped += 1,
            }
        }
        let failures = n.failed + n.upstream_failed;
        let upstream_failed = || Verdict::UpstreamFailed(failure_cause(facts, &deps));
        let skip = |why: &str| Verdict::Skip(format!("trigger rule {}: {why}", self.describe()));
        // "upstream task 'x' <how it ended>" for the first dependency that ended so.
        let first = |pred: &dyn Fn(Upstream) -> bool| {
            let (id, status) =
                deps.iter().find(|(_, s)| pred(*s)).copied().unwrap_or(("?", Upstream::Skipped));
            format!("upstream task '{id}' {}", status.word())
        };
        let all_skipped = n.skipped == n.total;
        match self {
            Rule::AllSuccess if failures > 0 => upstream_failed(),
            // The default rule's skip reads plainly: the skipped dependency.
            Rule::AllSuccess if n.skipped > 0 => Verdict::Skip(first(&|s| s == Upstream::Skipped)),
            Rule::AllFailed if n.success + n.skipped > 0 => skip(&first(&|s| !s.is_failure())),
            Rule::OneSuccess if all_skipped => skip("every upstream task was skipped"),
            Rule::OneSuccess if n.success == 0 => upstream_failed(),
            Rule::OneFailed if failures == 0 => skip("no upstream task failed"),
            Rule::OneDone if n.success + n.failed == 0 => skip("no upstream task completed or failed"),
            Rule::NoneFailed | Rule::NoneFailedMinOneSuccess if failures > 0 => upstream_failed(),
            Rule::NoneFailedMinOneSuccess if all_skipped => skip("every upstream task was skipped"),
            Rule::NoneSkipped if n.skipped > 0 => skip(&first(&|s| s == Upstream::Skipped)),
            Rule::AllSkipped if !all_skipped => skip(&first(&|s| s != Upstream::Skipped)),
            Rule::AllDoneMinOneSuccess if n.skipped > 0 => skip(&first(&|s| s == Upstream::Skipped)),
            Rule::AllDoneMinOneSuccess if n.success == 0 => upstream_failed(),
            _ => Verdict::Run,
        }
    }

    /// Adds the context keys the rule reads (its `context_value` parts) to `keys`.
    pub fn context_keys(&self, keys: &mut Vec<Arc<str>>) {
        match self {
            Rule::ContextValue { key, .. } if !keys.iter().any(|k| **k == **key) => {
                keys.push(Arc::from(key.as_str()));
            }
            Rule::AllOf(rs) | Rule::AnyOf(rs) => rs.iter().for_each(|r| r.context_keys(keys)),
            Rule::Not(r) => r.context_keys(keys),
            _ => {}
        }
    }

    /// A short text form of the rule, as the Python builders write it.
    pub fn describe(&self) -> String {
        if let Some((name, _)) = DEPENDENCY_RULES.iter().find(|(_, r)| r == self) {
            return format!("{name}()");
        }
        match self {
            Rule::TaskIs { task, status } => {
                let f = match status {
                    Upstream::Completed => "task_succeeded",
                    Upstream::Failed => "task_failed",
                    _ => "task_skipped",
                };
                format!("{f}({task:?})")
            }
            Rule::ContextValue { key, op: Op::Exists, .. } => format!("context_value({key:?}, \"exists\")"),
            Rule::ContextValue { key, op, value } => {
                format!("context_value({key:?}, {:?}, {value})", op.symbol())
            }
            Rule::AllOf(rs) => {
                format!("all_of({})", rs.iter().map(Rule::describe).collect::<Vec<_>>().join(", "))
            }
            Rule::AnyOf(rs) => {
                format!("any_of({})", rs.iter().map(Rule::describe).collect::<Vec<_>>().join(", "))
            }
            Rule::Not(r) => format!("not_({})", r.describe()),
            _ => unreachable!("dependency rules are described above"),
        }
    }
}

/// Why a task is `upstream_failed`: the first dependency that failed (or was
/// cancelled), else the cause recorded for the first `upstream_failed` one, which names
/// the task that failed further up.
fn failure_cause(facts: &dyn Facts, deps: &[(&str, Upstream)]) -> String {
    if let Some((id, status)) = deps.iter().find(|(_, s)| matches!(s, Upstream::Failed | Upstream::Cancelled))
    {
        return format!("upstream task '{id}' {}", status.word());
    }
    match deps.iter().find(|(_, s)| *s == Upstream::UpstreamFailed) {
        Some((id, _)) => match facts.cause_of(id) {
            Some(cause) => cause.to_string(),
            None => format!("upstream task '{id}' {}", Upstream::UpstreamFailed.word()),
        },
        None => "an upstream task failed".into(),
    }
}

fn compare(actual: Option<&Value>, op: Op, expected: &Value) -> bool {
    // A missing key satisfies no comparison (and `exists` is false).
    let Some(actual) = actual else { return false };
    match op {
        Op::Exists => true,
        Op::Eq => json_eq(actual, expected),
        Op::Ne => !json_eq(actual, expected),
        Op::In => expected.as_array().is_some_and(|xs| xs.iter().any(|x| json_eq(actual, x))),
        Op::NotIn => expected.as_array().is_some_and(|xs| !xs.iter().any(|x| json_eq(actual, x))),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let ord = match (actual, expected) {
                (Value::Number(a), Value::Number(b)) => {
                    a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b))
                }
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                _ => None,
            };
            match ord {
                None => false,
                Some(o) => match op {
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                    Op::Lt => o.is_lt(),
                    _ => o.is_le(),
                },
            }
        }
    }
}

/// Equality where 1 == 1.0, as in Python.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Map;
    use serde_json::json;

    struct F {
        deps: Vec<(&'static str, Upstream)>,
        ctx: Map,
    }
    impl Facts for F {
        fn dependencies(&self) -> Vec<(&str, Upstream)> {
            self.deps.clone()
        }
        fn status_of(&self, task: &str) -> Option<Upstream> {
            self.deps.iter().find(|(id, _)| *id == task).map(|(_, s)| *s)
        }
        fn context_value(&self, key: &str) -> Option<Value> {
            self.ctx.get(key).cloned()
        }
        fn cause_of(&self, task: &str) -> Option<&str> {
            (task == "uf").then_some("upstream task 'root' failed")
        }
    }

    fn facts(deps: &[(&'static str, Upstream)], ctx: Value) -> F {
        F { deps: deps.to_vec(), ctx: ctx.as_object().cloned().unwrap() }
    }

    fn rule(name: &str) -> Rule {
        Rule::parse(&json!({ "rule": name })).unwrap()
    }

    /// R: runs, S: skipped, U: upstream_failed.
    fn code(v: &Verdict) -> char {
        match v {
            Verdict::Run => 'R',
            Verdict::Skip(_) => 'S',
            Verdict::UpstreamFailed(_) => 'U',
        }
    }

    #[test]
    fn dependency_rules_decide_as_airflow_does() {
        use Upstream::*;
        // Upstream outcomes: ok+bad, ok+skip, bad+skip, uf alone, skip+skip, ok+ok.
        let cases: [&[(&'static str, Upstream)]; 6] = [
            &[("ok", Completed), ("bad", Failed)],
            &[("ok", Completed), ("sk", Skipped)],
            &[("bad", Failed), ("sk", Skipped)],
            &[("uf", UpstreamFailed)],
            &[("sk", Skipped), ("sk2", Skipped)],
            &[("ok", Completed), ("ok2", Completed)],
        ];
        let expected = [
            ("all_success", "USUUSR"),
            ("all_failed", "SSSRSS"),
            ("all_done", "RRRRRR"),
            ("one_success", "RRUUSR"),
            ("one_failed", "RSRRSS"),
            ("one_done", "RRRSSR"),
            ("none_failed", "URUURR"),
            ("none_failed_min_one_success", "URUUSR"),
            ("none_skipped", "RSSRSR"),
            ("all_skipped", "SSSSRS"),
            ("all_done_min_one_success", "RSSUSR"),
            ("always", "RRRRRR"),
        ];
        for (name, row) in expected {
            let got: String =
                cases.iter().map(|deps| code(&rule(name).verdict(&facts(deps, json!({}))))).collect();
            assert_eq!(got, row, "{name}");
        }
    }

    #[test]
    fn a_task_without_dependencies_runs_whatever_its_dependency_rule() {
        for (name, _) in DEPENDENCY_RULES {
            assert_eq!(rule(name).verdict(&facts(&[], json!({}))), Verdict::Run, "{name}");
        }
        let ctx = Rule::parse(&json!({"rule": "context_value", "key": "k", "op": "exists"})).unwrap();
        assert!(!ctx.holds(&facts(&[], json!({}))), "a context rule still decides a root task");
    }

    #[test]
    fn reasons_name_the_task_that_failed() {
        use Upstream::*;
        let v = Rule::AllSuccess.verdict(&facts(&[("ok", Completed), ("bad", Failed)], json!({})));
        assert_eq!(v, Verdict::UpstreamFailed("upstream task 'bad' failed".into()));
        let v = Rule::NoneFailed.verdict(&facts(&[("uf", UpstreamFailed)], json!({})));
        assert_eq!(v, Verdict::UpstreamFailed("upstream task 'root' failed".into()));
        let v = Rule::AllSuccess.verdict(&facts(&[("sk", Skipped)], json!({})));
        assert_eq!(v, Verdict::Skip("upstream task 'sk' was skipped".into()));
        let v = Rule::OneFailed.verdict(&facts(&[("ok", Completed)], json!({})));
        assert_eq!(v, Verdict::Skip("trigger rule one_failed(): no upstream task failed".into()));
    }

    #[test]
    fn combinations() {
        use Upstream::*;
        let f = facts(&[("ok", Completed), ("bad", Failed)], json!({"n": 1}));
        let parse = |v: Value| Rule::parse(&v).unwrap();
        let r = parse(json!({"rule": "not", "of": {"rule": "task_failed", "task": "bad"}}));
        assert!(!r.holds(&f));
        let both = parse(json!({"rule": "all_of", "rules": [{"rule": "all_success"},
            {"rule": "context_value", "key": "n", "op": "==", "value": 1}]}));
        assert_eq!(code(&both.verdict(&f)), 'U');
        let either = parse(json!({"rule": "any_of", "rules": [{"rule": "all_success"},
            {"rule": "context_value", "key": "n", "op": "==", "value": 2}]}));
        assert_eq!(code(&either.verdict(&f)), 'U');
        let negated = parse(json!({"rule": "not", "of": {"rule": "all_success"}}));
        assert_eq!(code(&negated.verdict(&f)), 'R');
        assert_eq!(
            parse(json!({"rule": "context_value", "key": "n", "op": "==", "value": 2})).describe(),
            "context_value(\"n\", \"==\", 2)"
        );
    }

    #[test]
    fn context_rules() {
        let f = facts(&[], json!({"n": 5, "mode": "fast"}));
        let rule = |op: &str, v: Value| {
            Rule::parse(&json!({"rule": "context_value", "key": "n", "op": op, "value": v})).unwrap()
        };
        assert!(rule(">", json!(4)).holds(&f));
        assert!(rule("==", json!(5.0)).holds(&f));
        assert!(!rule("<", json!(5)).holds(&f));
        assert!(rule("in", json!([1, 5])).holds(&f));
        assert!(rule("exists", Value::Null).holds(&f));
        let missing = Rule::parse(&json!({"rule": "context_value", "key": "zz", "op": "exists"})).unwrap();
        assert!(!missing.holds(&f));
    }

    #[test]
    fn invalid_rules_are_refused() {
        for bad in [
            json!({"rule": "sometimes"}),
            json!({"rule": "context_value", "key": "k", "op": "~"}),
            json!({"rule": "all_of", "rules": []}),
            json!("all_success"),
        ] {
            assert!(Rule::parse(&bad).is_err(), "{bad}");
        }
    }
}
