//! Pure pod-status logic: container state transitions, restart decisions with back-off,
//! pod phase and conditions, as Kubernetes computes them.

use std::time::Duration;

use serde_json::{json, Value};

/// Back-off after a container exits: 10 s doubling to 5 min.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What the agent knows about one container right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Never started (or its task is gone without a record).
    Absent,
    Running {
        started_at: jiff::Timestamp,
    },
    Exited {
        code: i32,
        signal: Option<i32>,
        started_at: Option<jiff::Timestamp>,
        finished_at: jiff::Timestamp,
        oom: bool,
    },
}

/// What to do with a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave it (running, or finished for good).
    Keep,
    /// Start it now (first start or restart).
    Start,
    /// Restart later, at the given back-off.
    Wait(Duration),
}

/// Should an exited container run again under `policy`?
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// The back-off before restart number `restarts + 1`, given how many restarts already counted
/// towards it (`backoff_steps`).
pub fn backoff(backoff_steps: u32) -> Duration {
    let factor = 2u64.saturating_pow(backoff_steps.min(16));
    (BACKOFF_START * factor as u32).min(BACKOFF_MAX)
}

/// The wait before restarting an exited container, as kubelet: the first restart is at once,
/// then 10 s doubling to 5 min (`backoff_steps` restarts already counted towards it).
pub fn restart_delay(backoff_steps: u32) -> Duration {
    match backoff_steps {
        0 => Duration::ZERO,
        n => backoff(n - 1),
    }
}

/// The pure step of a container's lifecycle.
pub fn decide(policy: &str, observed: &Observed, backoff_steps: u32, now: jiff::Timestamp) -> Decision {
    match observed {
        Observed::Absent => Decision::Start,
        Observed::Running { .. } => Decision::Keep,
        Observed::Exited { code, finished_at, .. } => {
            if !restarts(policy, *code) {
                return Decision::Keep;
            }
            let wait = restart_delay(backoff_steps);
            let elapsed = now.duration_since(*finished_at).unsigned_abs();
            if elapsed >= wait {
                Decision::Start
            } else {
                Decision::Wait(wait - elapsed)
            }
        }
    }
}

/// The `state` object of a container status for `observed`.
pub fn state_json(observed: &Observed, container_id: &str) -> Value {
    match observed {
        Observed::Absent => json!({"waiting": {"reason": "ContainerCreating"}}),
        Observed::Running { started_at } => {
            json!({"running": {"startedAt": crate::objects::meta::timestamp(*started_at)}})
        }
        Observed::Exited { code, signal, started_at, finished_at, oom } => {
            let reason = if *oom {
                "OOMKilled"
            } else if *code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let mut t = json!({
                "exitCode": code,
                "reason": reason,
                "finishedAt": crate::objects::meta::timestamp(*finished_at),
                "containerID": container_id,
            });
            if let Some(s) = started_at {
                t["startedAt"] = json!(crate::objects::meta::timestamp(*s));
            }
            if let Some(sig) = signal {
                t["signal"] = json!(sig);
            }
            json!({"terminated": t})
        }
    }
}

/// The pod phase from its container statuses (kubelet's getPhase).
pub fn phase(policy: &str, statuses: &[Value], containers: usize) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = &s["state"];
        if state["running"].is_object() {
            running += 1;
        } else if state["terminated"].is_object() {
            stopped += 1;
            if state["terminated"]["exitCode"].as_i64() == Some(0) {
                succeeded += 1;
            }
        } else if s["lastState"]["terminated"].is_object() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    let unknown = containers.saturating_sub(statuses.len());
    if unknown > 0 || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if policy == "Always" {
            return "Running";
        }
        if succeeded == stopped {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// Sets a condition, keeping its transition time when the status did not change.
pub fn set_condition(conditions: &mut Vec<Value>, kind: &str, status: bool, now: &str) {
    set_condition_why(conditions, kind, status, None, now);
}

/// [`set_condition`] with a reason and message (`why`), as kubelet gives a false `Ready`; both
/// are removed when `why` is `None`.
pub fn set_condition_why(conditions: &mut Vec<Value>, kind: &str, status: bool, why: Option<(&str, &str)>, now: &str) {
    let status = if status { "True" } else { "False" };
    let c = match conditions.iter_mut().position(|c| c["type"] == kind) {
        Some(i) => &mut conditions[i],
        None => {
            conditions.push(json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}));
            conditions.last_mut().expect("just pushed")
        }
    };
    if c["status"] != status {
        c["status"] = json!(status);
        c["lastTransitionTime"] = json!(now);
    }
    let Some(obj) = c.as_object_mut() else { return };
    match why {
        Some((reason, message)) => {
            obj.insert("reason".into(), json!(reason));
            obj.insert("message".into(), json!(message));
        }
        None => {
            obj.remove("reason");
            obj.remove("message");
        }
    }
}

/// A container status's `started` and `ready`: a running container without probes is both;
/// with probes, what they say (`probes` = started, ready). Nothing that is not running is either.
pub fn started_ready(running: bool, probes: Option<(bool, bool)>) -> (bool, bool) {
    match probes {
        _ if !running => (false, false),
        None => (true, true),
        Some((started, ready)) => (started, started && ready),
    }
}

/// Whether every container is ready (the `ContainersReady` and `Ready` conditions), else
/// kubelet's reason and message naming the containers that are not.
pub fn containers_ready(statuses: &[Value], containers: &[&str]) -> Result<(), (&'static str, String)> {
    let unready: Vec<&str> = containers
        .iter()
        .copied()
        .filter(|name| !statuses.iter().any(|s| s["name"].as_str() == Some(*name) && s["ready"] == true))
        .collect();
    if unready.is_empty() && !containers.is_empty() {
        return Ok(());
    }
    Err(("ContainersNotReady", format!("containers with unready status: [{}]", unready.join(" "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(10));
        assert_eq!(backoff(1), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(160));
        assert_eq!(backoff(5), Duration::from_secs(300));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }

    #[test]
    fn restart_policy_decisions() {
        let exited = |code| Observed::Exited { code, signal: None, started_at: None, finished_at: at(0), oom: false };
        assert_eq!(decide("Always", &Observed::Absent, 0, at(0)), Decision::Start);
        assert_eq!(decide("Always", &Observed::Running { started_at: at(0) }, 0, at(5)), Decision::Keep);
        assert_eq!(decide("Always", &exited(0), 0, at(0)), Decision::Start, "the first restart is at once");
        assert_eq!(decide("Always", &exited(0), 1, at(4)), Decision::Wait(Duration::from_secs(6)));
        assert_eq!(decide("Always", &exited(0), 1, at(10)), Decision::Start);
        assert_eq!(decide("Always", &exited(1), 3, at(30)), Decision::Wait(Duration::from_secs(10)));
        assert_eq!(decide("OnFailure", &exited(0), 0, at(60)), Decision::Keep);
        assert_eq!(decide("OnFailure", &exited(2), 0, at(60)), Decision::Start);
        assert_eq!(decide("Never", &exited(2), 0, at(60)), Decision::Keep);
    }

    #[test]
    fn phases_like_kubelet() {
        let running = json!({"state": {"running": {}}});
        let done = json!({"state": {"terminated": {"exitCode": 0}}});
        let failed = json!({"state": {"terminated": {"exitCode": 1}}});
        let crashloop =
            json!({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"exitCode": 1}}});
        let creating = json!({"state": {"waiting": {"reason": "ContainerCreating"}}});
        assert_eq!(phase("Always", &[], 1), "Pending");
        assert_eq!(phase("Always", &[creating], 1), "Pending");
        assert_eq!(phase("Always", std::slice::from_ref(&running), 1), "Running");
        assert_eq!(phase("Always", &[crashloop], 1), "Running");
        assert_eq!(phase("Never", std::slice::from_ref(&done), 1), "Succeeded");
        assert_eq!(phase("Never", std::slice::from_ref(&failed), 1), "Failed");
        assert_eq!(phase("OnFailure", &[done, running], 2), "Running");
        assert_eq!(phase("OnFailure", &[failed], 1), "Running");
    }

    #[test]
    fn readiness_follows_probes() {
        assert_eq!(started_ready(false, None), (false, false));
        assert_eq!(started_ready(true, None), (true, true));
        assert_eq!(started_ready(true, Some((false, true))), (false, false), "not ready before started");
        assert_eq!(started_ready(true, Some((true, false))), (true, false));
        assert_eq!(started_ready(false, Some((true, true))), (false, false));
        let statuses = [json!({"name": "a", "ready": true}), json!({"name": "b", "ready": false})];
        assert_eq!(containers_ready(&statuses[..1], &["a"]), Ok(()));
        assert_eq!(
            containers_ready(&statuses, &["a", "b", "c"]),
            Err(("ContainersNotReady", "containers with unready status: [b c]".to_string()))
        );
        let mut c = Vec::new();
        set_condition_why(
            &mut c,
            "Ready",
            false,
            Some(("ContainersNotReady", "containers with unready status: [b]")),
            "t1",
        );
        assert_eq!(c[0]["reason"], "ContainersNotReady");
        set_condition_why(&mut c, "Ready", true, None, "t2");
        assert_eq!(c[0], json!({"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "t2"}));
    }

    #[test]
    fn conditions_keep_transition_times() {
        let mut c = Vec::new();
        set_condition(&mut c, "Ready", false, "t1");
        set_condition(&mut c, "Ready", false, "t2");
        assert_eq!(c[0]["lastTransitionTime"], "t1");
        set_condition(&mut c, "Ready", true, "t3");
        assert_eq!((c[0]["status"].as_str(), c[0]["lastTransitionTime"].as_str()), (Some("True"), Some("t3")));
    }
}
