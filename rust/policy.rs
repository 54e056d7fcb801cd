//! How a task is run: retries with backoff and jitter, a timeout, a trigger rule.
//! Given as JSON by the Python layer, validated here.

use std::time::Duration;

use serde_json::Value;

use crate::errors::{Error, Result};
use crate::rules::Rule;

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    Fixed,
    Linear,
    Exponential,
}

/// A task's execution options.
#[derive(Debug, Clone)]
pub struct TaskPolicy {
    /// Retries after the first attempt (at most `retries + 1` attempts).
    pub retries: u32,
    /// Base delay in seconds.
    pub retry_delay: f64,
    pub backoff: Backoff,
    pub max_retry_delay: Option<f64>,
    /// Spread each delay uniformly within [0, delay].
    pub jitter: bool,
    /// Longest an attempt may run, in seconds.
    pub timeout: Option<f64>,
    /// Whether a timed-out attempt may be retried (TaskTimeout matches `retry_on`).
    pub retry_on_timeout: bool,
    pub trigger: Rule,
}

impl Default for TaskPolicy {
    fn default() -> Self {
        TaskPolicy {
            retries: 0,
            retry_delay: 1.0,
            backoff: Backoff::Fixed,
            max_retry_delay: None,
            jitter: false,
            timeout: None,
            retry_on_timeout: true,
            trigger: Rule::AllSuccess,
        }
    }
}

impl TaskPolicy {
    /// Parses `{"retries": 3, "retry_delay": 1.0, "backoff": "exponential", ...}`;
    /// absent keys keep their defaults. `task` names the task in errors.
    pub fn parse(task: &str, v: &Value) -> Result<TaskPolicy> {
        let bad = |msg: String| Error::Task(format!("task '{task}': {msg}"));
        let mut p = TaskPolicy::default();
        let Some(obj) = v.as_object() else {
            return Ok(p);
        };
        let seconds = |key: &str| -> Result<Option<f64>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => {
                    let what = format!("task '{task}': {key}");
                    let s = x
                        .as_f64()
                        .ok_or_else(|| bad(format!("{key} must be a number of seconds, not {x}")))?;
                    crate::duration::seconds(&what, s)?;
                    Ok(Some(s))
                }
            }
        };
        if let Some(r) = obj.get("retries") {
            p.retries = r
                .as_u64()
                .filter(|&r| r <= 1_000_000)
                .ok_or_else(|| bad(format!("retries must be a non-negative int, not {r}")))?
                as u32;
        }
        if let Some(d) = seconds("retry_delay")? {
            p.retry_delay = d;
        }
        p.max_retry_delay = seconds("max_retry_delay")?;
        p.timeout = seconds("timeout")?;
        if p.timeout == Some(0.0) {
            return Err(bad("timeout must be more than 0 seconds".into()));
        }
        if let Some(b) = obj.get("backoff") {
            p.backoff = match b.as_str() {
                Some("fixed") => Backoff::Fixed,
                Some("linear") => Backoff::Linear,
                Some("exponential") => Backoff::Exponential,
                _ => {
                    return Err(bad(format!(
                        "backoff must be \"fixed\", \"linear\" or \"exponential\", not {b}"
                    )))
                }
            };
        }
        if let Some(j) = obj.get("jitter") {
            p.jitter = j.as_bool().ok_or_else(|| bad(format!("jitter must be a bool, not {j}")))?;
        }
        if let Some(j) = obj.get("retry_on_timeout") {
            p.retry_on_timeout = j.as_bool().unwrap_or(true);
        }
        if let Some(rule) = obj.get("trigger").filter(|r| !r.is_null()) {
            p.trigger = Rule::parse(rule).map_err(|e| Error::Workflow(format!("task '{task}': {e}")))?;
        }
        Ok(p)
    }

    /// True when attempt number `attempt` (1-based) may be followed by another.
    pub fn may_retry_after(&self, attempt: u32) -> bool {
        attempt <= self.retries
    }

    /// The wait after failed attempt `attempt` (1-based), before jitter.
    pub fn base_delay(&self, attempt: u32) -> f64 {
        let n = attempt.max(1) as f64;
        let d = match self.backoff {
            Backoff::Fixed => self.retry_delay,
            Backoff::Linear => self.retry_delay * n,
            Backoff::Exponential => self.retry_delay * 2f64.powf((n - 1.0).min(1000.0)),
        };
        match self.max_retry_delay {
            Some(cap) => d.min(cap),
            None => d,
        }
    }

    /// The wait after failed attempt `attempt`, with jitter if asked for.
    pub fn delay(&self, attempt: u32) -> Duration {
        let d = self.base_delay(attempt);
        let d = if self.jitter { d * fastrand::f64() } else { d };
        crate::duration::saturating(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_shapes() {
        let p = |b: &str| {
            TaskPolicy::parse(
                "t",
                &json!({"retries": 5, "retry_delay": 2.0, "backoff": b, "max_retry_delay": 10.0}),
            )
            .unwrap()
        };
        let delays = |p: &TaskPolicy| (1..=4).map(|a| p.base_delay(a)).collect::<Vec<_>>();
        assert_eq!(delays(&p("fixed")), [2.0, 2.0, 2.0, 2.0]);
        assert_eq!(delays(&p("linear")), [2.0, 4.0, 6.0, 8.0]);
        assert_eq!(delays(&p("exponential")), [2.0, 4.0, 8.0, 10.0]);
        let jittered = TaskPolicy::parse("t", &json!({"retry_delay": 1.0, "jitter": true})).unwrap();
        for _ in 0..100 {
            assert!(jittered.delay(1) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn budget_and_validation() {
        let p = TaskPolicy::parse("t", &json!({"retries": 2})).unwrap();
        assert!(p.may_retry_after(1) && p.may_retry_after(2) && !p.may_retry_after(3));
        assert!(TaskPolicy::parse("t", &json!({"retries": -1})).is_err());
        assert!(TaskPolicy::parse("t", &json!({"backoff": "cubic"})).is_err());
        assert!(TaskPolicy::parse("t", &json!({"timeout": 0})).is_err());
    }
}
