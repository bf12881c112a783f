//! What the plugin prints: the ADD result, VERSION's answer, and error objects.
//!
//! Pure rendering from plain data, so the JSON is snapshot-tested; `cmd` fills the data.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::config::{Subnet, SUPPORTED_VERSIONS};

/// One interface in the result (`sandbox` is set for the one inside the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

/// What ADD did, independent of the spec version it is reported in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    /// Bridge, host veth, container interface, in that order.
    pub interfaces: Vec<Interface>,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Index into `interfaces` of the interface holding `address`.
    pub interface: usize,
    pub routes: Vec<(Subnet, Option<Ipv4Addr>)>,
}

/// Renders the ADD result in the requested spec version (0.4.0 adds `"version": "4"` to each IP).
pub fn render_add(version: &str, r: &AddResult) -> Value {
    let interfaces: Vec<Value> = r
        .interfaces
        .iter()
        .map(|i| {
            let mut v = json!({"name": i.name, "mac": i.mac});
            if let Some(sandbox) = &i.sandbox {
                v["sandbox"] = json!(sandbox);
            }
            v
        })
        .collect();
    let mut ip = json!({
        "address": format!("{}/{}", r.address, r.prefix),
        "gateway": r.gateway.to_string(),
        "interface": r.interface,
    });
    if version == "0.4.0" {
        ip["version"] = json!("4");
    }
    let routes: Vec<Value> = r
        .routes
        .iter()
        .map(|(dst, gw)| {
            let mut v = json!({"dst": dst.to_string()});
            if let Some(gw) = gw {
                v["gw"] = json!(gw.to_string());
            }
            v
        })
        .collect();
    json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": [ip],
        "routes": routes,
        "dns": {},
    })
}

/// VERSION's answer.
pub fn render_version(requested: Option<&str>) -> Value {
    let version = requested.filter(|v| SUPPORTED_VERSIONS.contains(v)).unwrap_or("1.1.0");
    json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The spec's error object.
pub fn render_error(version: &str, code: u32, msg: &str, details: &str) -> Value {
    json!({"cniVersion": version, "code": code, "msg": msg, "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface { name: "skerry0".into(), mac: "aa:bb:cc:dd:ee:01".into(), sandbox: None },
                Interface { name: "sk0123456789a".into(), mac: "aa:bb:cc:dd:ee:02".into(), sandbox: None },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:03".into(),
                    sandbox: Some("/run/skerry/netns/pod1".into()),
                },
            ],
            address: Ipv4Addr::new(10, 42, 0, 5),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 42, 0, 1),
            interface: 2,
            routes: vec![(Subnet::parse("0.0.0.0/0").unwrap(), Some(Ipv4Addr::new(10, 42, 0, 1)))],
        }
    }

    #[test]
    fn add_result_1_0_0() {
        assert_eq!(
            render_add("1.0.0", &sample()).to_string(),
            concat!(
                r#"{"cniVersion":"1.0.0","interfaces":["#,
                r#"{"name":"skerry0","mac":"aa:bb:cc:dd:ee:01"},"#,
                r#"{"name":"sk0123456789a","mac":"aa:bb:cc:dd:ee:02"},"#,
                r#"{"name":"eth0","mac":"aa:bb:cc:dd:ee:03","sandbox":"/run/skerry/netns/pod1"}],"#,
                r#""ips":[{"address":"10.42.0.5/24","gateway":"10.42.0.1","interface":2}],"#,
                r#""routes":[{"dst":"0.0.0.0/0","gw":"10.42.0.1"}],"dns":{}}"#
            )
        );
    }

    #[test]
    fn add_result_0_4_0_marks_the_ip_version() {
        let v = render_add("0.4.0", &sample());
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["ips"].to_string(),
            r#"[{"address":"10.42.0.5/24","gateway":"10.42.0.1","interface":2,"version":"4"}]"#
        );
    }

    #[test]
    fn version_and_error() {
        assert_eq!(
            render_version(None).to_string(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#
        );
        assert_eq!(render_version(Some("1.0.0"))["cniVersion"], "1.0.0");
        assert_eq!(render_version(Some("9.9.9"))["cniVersion"], "1.1.0");
        assert_eq!(
            render_error("1.0.0", 100, "no IP addresses available in range 10.42.0.0/24", "").to_string(),
            r#"{"cniVersion":"1.0.0","code":100,"msg":"no IP addresses available in range 10.42.0.0/24","details":""}"#
        );
    }
}
