//! A container's cgroup values from its `resources`, as kubelet computes them (pure).
//!
//! kubelet (`kuberuntime_container_linux.go`, `cm/helpers_linux.go`): the memory limit is the
//! cgroup's limit in bytes (none when absent or zero); the CPU request becomes CFS shares
//! (`millis × 1024 / 1000`, at least 2 and at most 262144; a container without a request gets
//! 2, one with only a limit gets its limit's shares, Kubernetes' defaulting); the CPU limit
//! becomes a CFS quota over a 100 ms period (`millis × 100` µs, at least 1 ms). Values are in
//! cgroup v1 terms, which is what the OCI spec speaks; runc converts them for cgroup v2
//! (shares → `cpu.weight`, quota/period → `cpu.max`, limit → `memory.max`).

use serde_json::Value;

use crate::objects::quantity::{parse_bytes, parse_cpu_millis};

/// The CFS period kubelet uses (µs).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts (µs).
pub const MIN_QUOTA_US: i64 = 1_000;
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;

/// What goes into one container's `linux.resources`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `memory.limit` in bytes.
    pub memory_limit: Option<i64>,
    /// `cpu.shares`; always set, as kubelet does.
    pub cpu_shares: u64,
    /// `cpu.quota` and `cpu.period` (µs), present with a CPU limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// kubelet's `MilliCPUToShares`.
pub fn shares(millis: u64) -> u64 {
    if millis == 0 {
        return MIN_SHARES;
    }
    (millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `milliCPUToQuota`: `None` without a limit.
pub fn quota(millis: u64, period: u64) -> Option<i64> {
    if millis == 0 {
        return None;
    }
    let q = millis.saturating_mul(period) / 1000;
    Some(i64::try_from(q).unwrap_or(i64::MAX).max(MIN_QUOTA_US))
}

/// A quantity as stored (a string; a bare JSON number is tolerated), parsed by `parse`.
fn quantity(v: &Value, parse: fn(&str) -> Result<u64, String>) -> Result<Option<u64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => parse(s).map(Some),
        Value::Number(n) => parse(&n.to_string()).map(Some),
        other => Err(format!("{other} is not a quantity")),
    }
}

/// The cgroup values of container `c` (its JSON as stored). Errors name the bad quantity;
/// admission rejects those, so an error here means a pod stored before validation existed.
pub fn container_limits(c: &Value) -> Result<Limits, String> {
    let r = &c["resources"];
    let field = |e: String, at: &str| format!("resources.{at}: {e}");
    let memory =
        quantity(&r["limits"]["memory"], parse_bytes).map_err(|e| field(e, "limits.memory"))?.filter(|m| *m > 0);
    let cpu_limit = quantity(&r["limits"]["cpu"], parse_cpu_millis).map_err(|e| field(e, "limits.cpu"))?.unwrap_or(0);
    let cpu_request =
        quantity(&r["requests"]["cpu"], parse_cpu_millis).map_err(|e| field(e, "requests.cpu"))?.unwrap_or(0);
    let request = if cpu_request == 0 { cpu_limit } else { cpu_request };
    let quota = quota(cpu_limit, CFS_PERIOD_US);
    Ok(Limits {
        memory_limit: memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        cpu_shares: shares(request),
        cpu_quota: quota,
        cpu_period: quota.map(|_| CFS_PERIOD_US),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(resources: Value) -> Limits {
        container_limits(&json!({"name": "c", "resources": resources})).unwrap()
    }

    #[test]
    fn shares_follow_kubelet() {
        assert_eq!(shares(0), 2);
        assert_eq!(shares(1), 2);
        assert_eq!(shares(2), 2);
        assert_eq!(shares(100), 102);
        assert_eq!(shares(250), 256);
        assert_eq!(shares(500), 512);
        assert_eq!(shares(1000), 1024);
        assert_eq!(shares(2000), 2048);
        assert_eq!(shares(1_000_000), MAX_SHARES);
        assert_eq!(shares(u64::MAX), MAX_SHARES);
    }

    #[test]
    fn quota_follows_kubelet() {
        assert_eq!(quota(0, CFS_PERIOD_US), None);
        assert_eq!(quota(1, CFS_PERIOD_US), Some(1000), "at least 1 ms");
        assert_eq!(quota(10, CFS_PERIOD_US), Some(1000));
        assert_eq!(quota(11, CFS_PERIOD_US), Some(1100));
        assert_eq!(quota(500, CFS_PERIOD_US), Some(50_000));
        assert_eq!(quota(1500, CFS_PERIOD_US), Some(150_000));
    }

    #[test]
    fn container_values() {
        assert_eq!(
            limits(json!({})),
            Limits { memory_limit: None, cpu_shares: 2, cpu_quota: None, cpu_period: None },
            "best effort"
        );
        assert_eq!(container_limits(&json!({"name": "c"})).unwrap().cpu_shares, 2, "no resources at all");
        assert_eq!(
            limits(json!({"limits": {"memory": "64Mi", "cpu": "500m"}})),
            Limits {
                memory_limit: Some(64 << 20),
                cpu_shares: 512,
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000)
            },
            "the request defaults to the limit"
        );
        assert_eq!(
            limits(json!({"requests": {"cpu": "250m", "memory": "32Mi"}, "limits": {"cpu": "1"}})),
            Limits { memory_limit: None, cpu_shares: 256, cpu_quota: Some(100_000), cpu_period: Some(100_000) },
            "a memory request sets no limit"
        );
        assert_eq!(limits(json!({"requests": {"cpu": "0.1"}})), Limits { cpu_shares: 102, ..Limits::default() });
        assert_eq!(limits(json!({"limits": {"memory": "0"}})).memory_limit, None, "zero means no limit");
        assert_eq!(limits(json!({"limits": {"memory": "1G", "cpu": 2}})).memory_limit, Some(1_000_000_000));
        assert_eq!(limits(json!({"limits": {"cpu": 2}})).cpu_quota, Some(200_000), "a bare number");
        assert_eq!(
            limits(json!({"limits": {"cpu": "0.0001"}})).cpu_quota,
            Some(1000),
            "rounded up to 1m, then the minimum"
        );
    }

    #[test]
    fn bad_quantities_name_the_field() {
        let e = container_limits(&json!({"resources": {"limits": {"memory": "lots"}}})).unwrap_err();
        assert!(e.starts_with("resources.limits.memory: \"lots\" is not a quantity"), "{e}");
        let e = container_limits(&json!({"resources": {"requests": {"cpu": "-1"}}})).unwrap_err();
        assert!(e.starts_with("resources.requests.cpu:") && e.contains("negative"), "{e}");
    }
}
