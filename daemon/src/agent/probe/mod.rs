//! Container probes as kubelet runs them: the probe specs (`livenessProbe`, `readinessProbe`,
//! `startupProbe`) read from a container, and [`ContainerProbes`], the pure state machine that
//! turns probe outcomes into the container's `started` and `ready` and a verdict to restart it.
//!
//! Kubelet's rules, kept here: a probe's result changes only after `successThreshold`
//! consecutive successes or `failureThreshold` consecutive failures; no probe runs before
//! `initialDelaySeconds` after the container started; while a startup probe has not succeeded,
//! liveness and readiness do not run and the container is neither started nor ready; readiness
//! starts false; a startup or liveness probe that reaches its failure threshold asks for the
//! container to be killed and then holds until the next run of the container (which gets a new
//! machine). Time is passed in, so the machine is tested without clocks. The IO (exec, HTTP,
//! TCP) and the task that drives a machine are in [`run`].

pub mod run;

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// The three kinds of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Startup, Kind::Liveness, Kind::Readiness];

    /// The container field holding this probe.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Startup => "startupProbe",
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
        }
    }

    /// As kubelet names it in events ("Liveness probe failed: ...").
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// What a probe does, with named ports already resolved against the container's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Exec {
        command: Vec<String>,
    },
    /// `host` empty means the pod's address.
    Http {
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    /// A probe that cannot run as written (an HTTPS scheme, a port name the container does not
    /// have): every attempt fails with this message, so the user sees why in the events.
    Invalid(String),
}

/// One probe of one container, with Kubernetes' defaults for absent fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// A probe Skerry does not run (gRPC), with the reason, so the agent can warn once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub kind: Kind,
    pub reason: String,
}

/// The probes of one container: the ones that run, and the ones Skerry ignores.
pub fn specs(container: &Value) -> (Vec<Spec>, Vec<Ignored>) {
    let mut specs = Vec::new();
    let mut ignored = Vec::new();
    for kind in Kind::ALL {
        match parse(container, kind) {
            Some(Ok(s)) => specs.push(s),
            Some(Err(reason)) => ignored.push(Ignored { kind, reason }),
            None => {}
        }
    }
    (specs, ignored)
}

fn seconds(probe: &Value, field: &str, default: u64, min: u64) -> Duration {
    let v = probe.get(field).and_then(Value::as_i64).filter(|v| *v > 0).map(|v| v as u64).unwrap_or(default);
    Duration::from_secs(v.max(min))
}

fn count(probe: &Value, field: &str) -> u32 {
    probe.get(field).and_then(Value::as_i64).filter(|v| *v > 0).map(|v| v.min(u32::MAX as i64) as u32).unwrap_or(0)
}

/// Reads one probe of a container: `None` when absent, `Err` when Skerry ignores it.
pub fn parse(container: &Value, kind: Kind) -> Option<Result<Spec, String>> {
    let probe = container.get(kind.field()).filter(|p| p.is_object())?;
    let handler = if let Some(exec) = probe.get("exec").filter(|v| v.is_object()) {
        let command: Vec<String> =
            exec["command"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect();
        if command.is_empty() {
            Handler::Invalid("the exec probe has no command".into())
        } else {
            Handler::Exec { command }
        }
    } else if let Some(http) = probe.get("httpGet").filter(|v| v.is_object()) {
        let scheme = http["scheme"].as_str().unwrap_or("HTTP");
        match resolve_port(container, &http["port"]) {
            _ if !scheme.eq_ignore_ascii_case("HTTP") => Handler::Invalid(format!(
                "scheme {scheme} is not supported by skerry's HTTP probes; use scheme HTTP or a tcpSocket probe"
            )),
            Err(e) => Handler::Invalid(e),
            Ok(port) => {
                let path = http["path"].as_str().unwrap_or("");
                let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
                let headers = http["httpHeaders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|h| {
                        Some((h["name"].as_str()?.to_string(), h["value"].as_str().unwrap_or("").to_string()))
                    })
                    .collect();
                Handler::Http { host: http["host"].as_str().unwrap_or("").to_string(), port, path, headers }
            }
        }
    } else if let Some(tcp) = probe.get("tcpSocket").filter(|v| v.is_object()) {
        match resolve_port(container, &tcp["port"]) {
            Ok(port) => Handler::Tcp { host: tcp["host"].as_str().unwrap_or("").to_string(), port },
            Err(e) => Handler::Invalid(e),
        }
    } else if probe.get("grpc").is_some_and(|v| v.is_object()) {
        return Some(Err(format!("gRPC probes are not supported by skerry; the {} is ignored", kind.field())));
    } else {
        return Some(Err(format!("the {} has no handler (exec, httpGet or tcpSocket); it is ignored", kind.field())));
    };
    let mut success_threshold = count(probe, "successThreshold").max(1);
    if kind != Kind::Readiness {
        // The API requires 1 for these; never let a stored object make it otherwise.
        success_threshold = 1;
    }
    Some(Ok(Spec {
        kind,
        handler,
        initial_delay: Duration::from_secs(
            probe.get("initialDelaySeconds").and_then(Value::as_i64).unwrap_or(0).max(0) as u64,
        ),
        period: seconds(probe, "periodSeconds", 10, 1),
        timeout: seconds(probe, "timeoutSeconds", 1, 1),
        success_threshold,
        failure_threshold: match count(probe, "failureThreshold") {
            0 => 3,
            n => n,
        },
    }))
}

/// A probe's port: a number, or the name of one of the container's ports (or a number written
/// as a string, which kubelet also accepts).
pub fn resolve_port(container: &Value, port: &Value) -> Result<u16, String> {
    let number = match port {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(name) => {
            let named = container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str() == Some(name.as_str()))
                .and_then(|p| p["containerPort"].as_i64());
            match named.or_else(|| name.parse().ok()) {
                Some(n) => n,
                None => return Err(format!("couldn't find port: {name} (no container port has that name)")),
            }
        }
        _ => return Err("the probe has no port".into()),
    };
    u16::try_from(number).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port number: {number}"))
}

/// A probe attempt's outcome; a failure says why, as kubelet's events do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// What the container's probes say now: what the status shows and what the agent must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The startup probe has succeeded (or there is none).
    pub started: bool,
    /// Started, and the readiness probe's result is success (or there is none).
    pub ready: bool,
    /// A liveness or startup probe reached its failure threshold: kill the container.
    pub kill: Option<Kind>,
}

/// What recording an outcome asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record `Warning Unhealthy "<Kind> probe failed: <why>"` (every failed attempt, as kubelet).
    Unhealthy { kind: Kind, message: String },
    /// The [`View`] changed; the container's status needs writing (or it must be killed).
    Changed(View),
}

/// One probe's counters (kubelet's probe worker).
#[derive(Debug, Clone)]
struct Tracker {
    spec: Spec,
    /// The published result: `None` until a threshold is first reached.
    result: Option<bool>,
    /// The last attempt's outcome and how many attempts in a row had it.
    last: Option<bool>,
    run: u32,
    next_at: Instant,
    in_flight: bool,
    /// After a liveness or startup failure verdict: no more attempts for this run.
    on_hold: bool,
}

/// All probes of one run of one container. A restarted container gets a new machine.
#[derive(Debug, Clone)]
pub struct ContainerProbes {
    trackers: Vec<Tracker>,
    kill: Option<Kind>,
}

impl ContainerProbes {
    /// A machine for a container that started `since_start` before `now`: each probe's first
    /// attempt comes `initialDelaySeconds` after the start.
    pub fn new(specs: Vec<Spec>, now: Instant, since_start: Duration) -> ContainerProbes {
        let trackers = specs
            .into_iter()
            .map(|spec| Tracker {
                next_at: now + spec.initial_delay.saturating_sub(since_start),
                spec,
                result: None,
                last: None,
                run: 0,
                in_flight: false,
                on_hold: false,
            })
            .collect();
        ContainerProbes { trackers, kill: None }
    }

    /// Seeds the results from a status written before `skerryd` restarted, so an adopted
    /// container that was started and ready stays so until a probe says otherwise.
    pub fn adopt(&mut self, started: bool, ready: bool) {
        for t in &mut self.trackers {
            match t.spec.kind {
                Kind::Startup if started => t.result = Some(true),
                Kind::Readiness if started && ready => t.result = Some(true),
                _ => {}
            }
        }
    }

    fn tracker(&self, kind: Kind) -> Option<&Tracker> {
        self.trackers.iter().find(|t| t.spec.kind == kind)
    }

    fn started(&self) -> bool {
        self.tracker(Kind::Startup).is_none_or(|t| t.result == Some(true))
    }

    /// What the probes say now.
    pub fn view(&self) -> View {
        let started = self.started();
        let ready = started && self.tracker(Kind::Readiness).is_none_or(|t| t.result == Some(true));
        View { started, ready, kill: self.kill }
    }

    /// May this probe run at all now (startup gating, holds)?
    fn eligible(&self, t: &Tracker) -> bool {
        if t.on_hold || t.in_flight || self.kill.is_some() && t.spec.kind != Kind::Readiness {
            return false;
        }
        match t.spec.kind {
            Kind::Startup => !self.started(),
            Kind::Liveness | Kind::Readiness => self.started(),
        }
    }

    /// The probes to run now; each is marked in flight until its outcome is recorded, and its
    /// next attempt is scheduled a period after this one (ticks missed while it ran are skipped).
    pub fn due(&mut self, now: Instant) -> Vec<(Kind, Spec)> {
        let eligible: Vec<bool> = self.trackers.iter().map(|t| self.eligible(t)).collect();
        let mut due = Vec::new();
        for (t, ok) in self.trackers.iter_mut().zip(eligible) {
            if ok && t.next_at <= now {
                t.in_flight = true;
                while t.next_at <= now {
                    t.next_at += t.spec.period;
                }
                due.push((t.spec.kind, t.spec.clone()));
            }
        }
        due
    }

    /// When the next probe is due (`None`: nothing will run until an outcome arrives, or ever).
    pub fn next_wake(&self) -> Option<Instant> {
        self.trackers.iter().filter(|t| self.eligible(t)).map(|t| t.next_at).min()
    }

    /// Records the outcome of a probe started by [`due`](Self::due).
    pub fn record(&mut self, kind: Kind, outcome: Outcome, now: Instant) -> Vec<Effect> {
        let before = self.view();
        let mut effects = Vec::new();
        let Some(t) = self.trackers.iter_mut().find(|t| t.spec.kind == kind) else { return effects };
        t.in_flight = false;
        let success = outcome == Outcome::Success;
        if let Outcome::Failure(message) = outcome {
            effects.push(Effect::Unhealthy { kind, message });
        }
        if t.last == Some(success) {
            t.run = t.run.saturating_add(1);
        } else {
            t.last = Some(success);
            t.run = 1;
        }
        let threshold = if success { t.spec.success_threshold } else { t.spec.failure_threshold };
        if t.run >= threshold {
            t.result = Some(success);
            if !success && kind != Kind::Readiness {
                t.on_hold = true;
                t.run = 0;
                self.kill.get_or_insert(kind);
            }
        }
        if kind == Kind::Startup && success && before.started != self.started() {
            // Liveness and readiness start now, unless their own initial delay is still running.
            for t in &mut self.trackers {
                if t.spec.kind != Kind::Startup && t.next_at < now {
                    t.next_at = now;
                }
            }
        }
        let after = self.view();
        if after != before {
            effects.push(Effect::Changed(after));
        }
        effects
    }
}

/// The `Killing` event's message for a container a probe's verdict kills, as kubelet words it.
pub fn killing_message(container: &str, kind: Kind, restart_policy: &str) -> String {
    let what = if kind == Kind::Startup { "startup" } else { "liveness" };
    let mut message = format!("Container {container} failed {what} probe");
    if restart_policy != "Never" {
        message.push_str(", will be restarted");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn killing_messages() {
        assert_eq!(
            killing_message("web", Kind::Liveness, "Always"),
            "Container web failed liveness probe, will be restarted"
        );
        assert_eq!(
            killing_message("web", Kind::Startup, "OnFailure"),
            "Container web failed startup probe, will be restarted"
        );
        assert_eq!(killing_message("web", Kind::Liveness, "Never"), "Container web failed liveness probe");
    }

    fn spec(kind: Kind, period: u64, success: u32, failure: u32, delay: u64) -> Spec {
        Spec {
            kind,
            handler: Handler::Tcp { host: String::new(), port: 80 },
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn fail() -> Outcome {
        Outcome::Failure("nope".into())
    }

    fn kinds(due: Vec<(Kind, Spec)>) -> Vec<Kind> {
        due.into_iter().map(|(k, _)| k).collect()
    }

    fn changed(effects: &[Effect]) -> Option<View> {
        effects.iter().find_map(|e| match e {
            Effect::Changed(v) => Some(*v),
            _ => None,
        })
    }

    #[test]
    fn defaults_and_named_ports() {
        let c = json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "healthz", "port": "http", "httpHeaders": [{"name": "X-A", "value": "1"}]}},
            "readinessProbe": {"tcpSocket": {"port": 81}, "periodSeconds": 2, "successThreshold": 2, "failureThreshold": 5, "initialDelaySeconds": 3},
            "startupProbe": {"exec": {"command": ["true"]}, "successThreshold": 4},
        });
        let (specs, ignored) = specs(&c);
        assert!(ignored.is_empty());
        let live = specs.iter().find(|s| s.kind == Kind::Liveness).unwrap();
        assert_eq!(
            live.handler,
            Handler::Http {
                host: String::new(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![("X-A".into(), "1".into())]
            }
        );
        assert_eq!((live.initial_delay, live.period, live.timeout), (secs(0), secs(10), secs(1)));
        assert_eq!((live.success_threshold, live.failure_threshold), (1, 3));
        let ready = specs.iter().find(|s| s.kind == Kind::Readiness).unwrap();
        assert_eq!(ready.handler, Handler::Tcp { host: String::new(), port: 81 });
        assert_eq!(
            (ready.initial_delay, ready.period, ready.success_threshold, ready.failure_threshold),
            (secs(3), secs(2), 2, 5)
        );
        let startup = specs.iter().find(|s| s.kind == Kind::Startup).unwrap();
        assert_eq!(startup.success_threshold, 1, "startup and liveness always use 1");
    }

    #[test]
    fn unusable_probes_fail_or_are_ignored() {
        let c = json!({
            "name": "web",
            "livenessProbe": {"httpGet": {"port": "nope"}},
            "readinessProbe": {"httpGet": {"port": 443, "scheme": "HTTPS"}},
            "startupProbe": {"grpc": {"port": 9000}},
        });
        let (specs, ignored) = specs(&c);
        assert!(
            matches!(&specs[0].handler, Handler::Invalid(m) if m.contains("couldn't find port: nope")),
            "{specs:?}"
        );
        assert!(matches!(&specs[1].handler, Handler::Invalid(m) if m.contains("HTTPS")), "{specs:?}");
        assert_eq!(ignored.len(), 1);
        assert_eq!(ignored[0].kind, Kind::Startup);
        assert!(ignored[0].reason.contains("gRPC"));
        assert_eq!(resolve_port(&json!({}), &json!("8080")), Ok(8080));
        assert!(resolve_port(&json!({}), &json!(70000)).is_err());
    }

    #[test]
    fn readiness_starts_false_and_follows_thresholds() {
        let t0 = Instant::now();
        let mut m = ContainerProbes::new(vec![spec(Kind::Readiness, 1, 2, 3, 0)], t0, Duration::ZERO);
        assert_eq!(m.view(), View { started: true, ready: false, kill: None });
        assert_eq!(kinds(m.due(t0)), [Kind::Readiness]);
        assert!(m.due(t0).is_empty(), "one attempt in flight at a time");
        assert_eq!(changed(&m.record(Kind::Readiness, Outcome::Success, t0)), None, "one success of two");
        assert_eq!(m.next_wake(), Some(t0 + secs(1)));
        assert!(m.due(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(kinds(m.due(t0 + secs(1))), [Kind::Readiness]);
        let v = changed(&m.record(Kind::Readiness, Outcome::Success, t0 + secs(1))).expect("ready after two");
        assert!(v.ready);
        // Failures: ready until the third in a row; a success in between starts the count again.
        for (i, o) in [fail(), fail(), Outcome::Success, fail(), fail()].into_iter().enumerate() {
            let now = t0 + secs(2 + i as u64);
            assert_eq!(m.due(now).len(), 1);
            let effects = m.record(Kind::Readiness, o.clone(), now);
            assert_eq!(changed(&effects), None, "attempt {i}");
            assert_eq!(
                effects.iter().any(|e| matches!(e, Effect::Unhealthy { .. })),
                o != Outcome::Success,
                "every failure is an event"
            );
        }
        m.due(t0 + secs(7));
        let v = changed(&m.record(Kind::Readiness, fail(), t0 + secs(7))).expect("unready after three failures");
        assert_eq!(v, View { started: true, ready: false, kill: None });
        assert!(m.due(t0 + secs(8)).len() == 1, "readiness keeps probing");
    }

    #[test]
    fn initial_delay_counts_from_the_start() {
        let t0 = Instant::now();
        let mut m = ContainerProbes::new(vec![spec(Kind::Liveness, 10, 1, 3, 5)], t0, Duration::ZERO);
        assert!(m.due(t0 + secs(4)).is_empty());
        assert_eq!(m.next_wake(), Some(t0 + secs(5)));
        assert_eq!(kinds(m.due(t0 + secs(5))), [Kind::Liveness]);
        // An adopted container that started long ago probes at once.
        let m = ContainerProbes::new(vec![spec(Kind::Liveness, 10, 1, 3, 5)], t0, secs(60));
        assert_eq!(m.next_wake(), Some(t0));
    }

    #[test]
    fn liveness_kills_at_the_threshold_then_holds() {
        let t0 = Instant::now();
        let mut m = ContainerProbes::new(
            vec![spec(Kind::Liveness, 1, 1, 3, 0), spec(Kind::Readiness, 1, 1, 3, 0)],
            t0,
            Duration::ZERO,
        );
        assert_eq!(m.view(), View { started: true, ready: false, kill: None }, "liveness starts as success");
        for i in 0..2 {
            let now = t0 + secs(i);
            assert_eq!(kinds(m.due(now)), [Kind::Liveness, Kind::Readiness]);
            m.record(Kind::Readiness, Outcome::Success, now);
            assert_eq!(changed(&m.record(Kind::Liveness, fail(), now)), None);
        }
        assert!(m.view().ready);
        m.due(t0 + secs(2));
        let v = changed(&m.record(Kind::Liveness, fail(), t0 + secs(2))).expect("killed");
        assert_eq!(v.kill, Some(Kind::Liveness));
        m.record(Kind::Readiness, Outcome::Success, t0 + secs(2));
        assert_eq!(kinds(m.due(t0 + secs(3))), [Kind::Readiness], "liveness holds until the next run");
    }

    #[test]
    fn startup_gates_liveness_and_readiness() {
        let t0 = Instant::now();
        let specs = vec![
            spec(Kind::Startup, 1, 1, 3, 0),
            spec(Kind::Liveness, 10, 1, 1, 0),
            spec(Kind::Readiness, 10, 1, 3, 0),
        ];
        let mut m = ContainerProbes::new(specs.clone(), t0, Duration::ZERO);
        assert_eq!(m.view(), View { started: false, ready: false, kill: None });
        assert_eq!(kinds(m.due(t0)), [Kind::Startup]);
        m.record(Kind::Startup, fail(), t0);
        assert_eq!(kinds(m.due(t0 + secs(1))), [Kind::Startup], "liveness and readiness wait for startup");
        let v = changed(&m.record(Kind::Startup, Outcome::Success, t0 + secs(1) + Duration::from_millis(300)))
            .expect("started");
        assert_eq!(v, View { started: true, ready: false, kill: None });
        let now = t0 + secs(1) + Duration::from_millis(300);
        assert_eq!(m.next_wake(), Some(now), "the gated probes run at once");
        assert_eq!(kinds(m.due(now)), [Kind::Liveness, Kind::Readiness], "startup never runs again");
        assert!(changed(&m.record(Kind::Readiness, Outcome::Success, now)).unwrap().ready);
        assert!(m.due(now + secs(5)).is_empty());

        // A startup probe that keeps failing kills the container and holds everything.
        let mut m = ContainerProbes::new(specs, t0, Duration::ZERO);
        for i in 0..3 {
            m.due(t0 + secs(i));
            m.record(Kind::Startup, fail(), t0 + secs(i));
        }
        assert_eq!(m.view(), View { started: false, ready: false, kill: Some(Kind::Startup) });
        assert_eq!(m.next_wake(), None);
    }

    #[test]
    fn adoption_keeps_a_ready_container_ready() {
        let t0 = Instant::now();
        let specs = vec![spec(Kind::Startup, 1, 1, 3, 0), spec(Kind::Readiness, 1, 1, 3, 0)];
        let mut m = ContainerProbes::new(specs.clone(), t0, secs(100));
        m.adopt(true, true);
        assert_eq!(m.view(), View { started: true, ready: true, kill: None });
        assert_eq!(kinds(m.due(t0)), [Kind::Readiness]);
        let mut m = ContainerProbes::new(specs, t0, secs(100));
        m.adopt(true, false);
        assert_eq!(m.view(), View { started: true, ready: false, kill: None });
    }
}
