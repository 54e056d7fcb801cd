//! Trigger rules: plain JSON data, parsed and validated at definition, evaluated by the
//! scheduler when all of a task's dependencies are final. A false rule skips the task.

use serde_json::Value;

use crate::context::Map;
use crate::errors::{Error, Result};

/// What a dependency ended as, for rule evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl Upstream {
    fn word(self) -> &'static str {
        match self {
            Upstream::Completed => "completed",
            Upstream::Failed => "failed",
            Upstream::Skipped => "was skipped",
            Upstream::Cancelled => "was cancelled",
        }
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

/// A trigger rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Rule {
    #[default]
    AllSuccess,
    AllDone,
    OneSuccess,
    OneFailed,
    AllFailed,
    NoneFailed,
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

/// What a rule looks at: the direct dependencies' outcomes, any named upstream task's
/// outcome, and the task's input context.
pub trait Facts {
    fn dependencies(&self) -> Vec<(&str, Upstream)>;
    fn status_of(&self, task: &str) -> Option<Upstream>;
    fn context(&self) -> &Map;
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
        Ok(match name {
            "all_success" => Rule::AllSuccess,
            "all_done" => Rule::AllDone,
            "one_success" => Rule::OneSuccess,
            "one_failed" => Rule::OneFailed,
            "all_failed" => Rule::AllFailed,
            "none_failed" => Rule::NoneFailed,
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

    /// Evaluates the rule.
    pub fn holds(&self, facts: &dyn Facts) -> bool {
        let deps = || facts.dependencies();
        match self {
            Rule::AllSuccess => deps().iter().all(|(_, s)| *s == Upstream::Completed),
            Rule::AllDone => true,
            Rule::OneSuccess => deps().iter().any(|(_, s)| *s == Upstream::Completed),
            Rule::OneFailed => deps().iter().any(|(_, s)| *s == Upstream::Failed),
            Rule::AllFailed => deps().iter().all(|(_, s)| *s == Upstream::Failed),
            Rule::NoneFailed => deps().iter().all(|(_, s)| *s != Upstream::Failed),
            Rule::TaskIs { task, status } => facts.status_of(task) == Some(*status),
            Rule::ContextValue { key, op, value } => compare(facts.context().get(key), *op, value),
            Rule::AllOf(rs) => rs.iter().all(|r| r.holds(facts)),
            Rule::AnyOf(rs) => rs.iter().any(|r| r.holds(facts)),
            Rule::Not(r) => !r.holds(facts),
        }
    }

    /// Why the rule is false, for the skipped task's record.
    pub fn explain(&self, facts: &dyn Facts) -> String {
        match self {
            Rule::AllSuccess => {
                match facts.dependencies().into_iter().find(|(_, s)| *s != Upstream::Completed) {
                    Some((id, s)) => format!("upstream task '{id}' {}", s.word()),
                    None => "trigger rule all_success is false".into(),
                }
            }
            Rule::NoneFailed => {
                match facts.dependencies().into_iter().find(|(_, s)| *s == Upstream::Failed) {
                    Some((id, _)) => format!("trigger rule none_failed: upstream task '{id}' failed"),
                    None => "trigger rule none_failed is false".into(),
                }
            }
            other => format!("trigger rule {} is false", other.describe()),
        }
    }

    /// A short text form of the rule.
    pub fn describe(&self) -> String {
        match self {
            Rule::AllSuccess => "all_success()".into(),
            Rule::AllDone => "all_done()".into(),
            Rule::OneSuccess => "one_success()".into(),
            Rule::OneFailed => "one_failed()".into(),
            Rule::AllFailed => "all_failed()".into(),
            Rule::NoneFailed => "none_failed()".into(),
            Rule::TaskIs { task, status } => {
                let f = match status {
                    Upstream::Completed => "task_succeeded",
                    Upstream::Failed => "task_failed",
                    _ => "task_skipped",
                };
                format!("{f}({task:?})")
            }
            Rule::ContextValue { key, op, value } => {
                format!("context_value({key:?}, {op:?}, {value})")
            }
            Rule::AllOf(rs) => {
                format!("all_of({})", rs.iter().map(Rule::describe).collect::<Vec<_>>().join(", "))
            }
            Rule::AnyOf(rs) => {
                format!("any_of({})", rs.iter().map(Rule::describe).collect::<Vec<_>>().join(", "))
            }
            Rule::Not(r) => format!("not_({})", r.describe()),
        }
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
        fn context(&self) -> &Map {
            &self.ctx
        }
    }

    fn facts(deps: &[(&'static str, Upstream)], ctx: Value) -> F {
        F { deps: deps.to_vec(), ctx: ctx.as_object().cloned().unwrap() }
    }

    #[test]
    fn dependency_rules() {
        use Upstream::*;
        let f = facts(&[("a", Completed), ("b", Failed)], json!({}));
        assert!(!Rule::AllSuccess.holds(&f));
        assert!(Rule::AllDone.holds(&f));
        assert!(Rule::OneSuccess.holds(&f));
        assert!(Rule::OneFailed.holds(&f));
        assert!(!Rule::AllFailed.holds(&f));
        assert!(!Rule::NoneFailed.holds(&f));
        assert_eq!(Rule::AllSuccess.explain(&f), "upstream task 'b' failed");
        let r = Rule::parse(&json!({"rule": "not", "of": {"rule": "task_failed", "task": "b"}})).unwrap();
        assert!(!r.holds(&f));
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
