//! `skerry rollout restart`: stamps the pod template with `kubectl.kubernetes.io/restartedAt`
//! (now, RFC 3339 in local time), which makes the Deployment roll out new pods.

use serde_json::{json, Value};

use super::{patch_each, refuse, Targets, RESTARTED_AT};
use crate::cmd::Ctx;
use crate::error::{Error, Result};

pub async fn run(ctx: &mut Ctx, t: Targets) -> Result<()> {
    let now = now_rfc3339();
    patch_each(ctx, &t, "restarted", |s, obj| {
        if !s.is_kind("Deployment") {
            return Err(refuse(s, "restarting is not supported"));
        }
        if obj.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
            return Err(refuse(s, "can't restart paused deployment (run rollout resume first)"));
        }
        let current = obj.pointer("/spec/template/metadata/annotations").and_then(|a| a.get(RESTARTED_AT));
        if current.and_then(Value::as_str) == Some(now.as_str()) {
            return Err(Error::msg(format!(
                "failed to create patch for {}: if restart has already been triggered within the past second, please wait before attempting to trigger another",
                s.name
            )));
        }
        Ok(json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}))
    })
    .await
}

/// Go's `time.Now().Format(time.RFC3339)`: local time with its offset (`Z` for UTC).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        // Without the local zone, UTC is still a valid RFC 3339 time.
        let (days, rest) = ((secs / 86400) as i64, secs % 86400);
        let (y, m, d) = civil_from_days(days);
        return format_rfc3339([y, m, d, (rest / 3600) as i64, (rest % 3600 / 60) as i64, (rest % 60) as i64], 0);
    }
    format_rfc3339(
        [
            i64::from(tm.tm_year) + 1900,
            i64::from(tm.tm_mon) + 1,
            i64::from(tm.tm_mday),
            i64::from(tm.tm_hour),
            i64::from(tm.tm_min),
            i64::from(tm.tm_sec),
        ],
        tm.tm_gmtoff as i64,
    )
}

/// `[year, month, day, hour, minute, second]` and the offset east of UTC in seconds.
pub fn format_rfc3339(t: [i64; 6], offset: i64) -> String {
    let zone = if offset == 0 {
        "Z".to_string()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", offset.abs() / 3600, offset.abs() % 3600 / 60)
    };
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}", t[0], t[1], t[2], t[3], t[4], t[5])
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339([2024, 3, 5, 7, 8, 9], 0), "2024-03-05T07:08:09Z");
        assert_eq!(format_rfc3339([2024, 12, 31, 23, 59, 0], 3600 + 1800), "2024-12-31T23:59:00+01:30");
        assert_eq!(format_rfc3339([2024, 1, 1, 0, 0, 0], -5 * 3600), "2024-01-01T00:00:00-05:00");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_797), (2024, 3, 15));
        let now = now_rfc3339();
        assert!(now.len() >= 20, "{now}");
    }
}
