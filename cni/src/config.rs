//! The network configuration read from stdin: parsing, defaults and validation.
//!
//! The runtime hands every plugin of a conflist its own object with `cniVersion`
//! and `name` injected. Keys are those of the reference `bridge` plugin and the
//! `host-local` IPAM plugin, so one conflist can drive either skerry-cni or the
//! reference pair; keys skerry-cni does not act on are ignored (the runtime adds
//! its own, such as `runtimeConfig` and `args`).
//!
//! Pure: no IO. Everything is checked here so the commands can trust a [`NetConf`].

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

/// Spec versions this plugin speaks; results are rendered in the requested one.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

pub const DEFAULT_BRIDGE: &str = "skerry0";
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_SUBNET: &str = "10.42.0.0/24";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Code 6: stdin is not the JSON we can read at all.
    #[error("failed to decode the network configuration: {0}")]
    Decode(String),
    /// Code 7: well-formed but wrong.
    #[error("invalid network configuration: {0}")]
    Invalid(String),
    /// Code 2: a field or value this plugin does not support.
    #[error("unsupported network configuration: {0}")]
    Unsupported(String),
    /// Code 1.
    #[error("incompatible CNI version {0}; skerry-cni supports 0.4.0, 1.0.0 and 1.1.0")]
    IncompatibleVersion(String),
}

/// An IPv4 prefix, normalized so `addr` is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn parse(s: &str) -> Result<Subnet, ConfigError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| ConfigError::Invalid(format!("subnet {s:?} is not in CIDR form (like 10.42.0.0/24)")))?;
        if addr.contains(':') {
            return Err(ConfigError::Unsupported(format!("IPv6 subnet {s}: skerry-cni supports IPv4 only")));
        }
        let addr: Ipv4Addr =
            addr.parse().map_err(|_| ConfigError::Invalid(format!("subnet {s:?}: {addr:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| ConfigError::Invalid(format!("subnet {s:?}: prefix length must be 0-32")))?;
        let mask = Self::mask_of(prefix);
        Ok(Subnet { network: Ipv4Addr::from(u32::from(addr) & mask), prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn mask(&self) -> u32 {
        Self::mask_of(self.prefix)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A route to install inside the pod (`ipam.routes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Subnet,
    pub gw: Option<Ipv4Addr>,
}

/// The validated IPAM part: one range inside one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    pub subnet: Subnet,
    /// First and last address handed out (inclusive); never the network or broadcast address.
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// Allocations live in `<data_dir>/<network name>/`.
    pub data_dir: PathBuf,
    pub routes: Vec<Route>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The validated configuration of one plugin invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    pub mtu: u32,
    pub hairpin_mode: bool,
    /// Give the bridge the gateway address.
    pub is_gateway: bool,
    /// Install a default route via the gateway in the pod.
    pub is_default_gateway: bool,
    /// Turn on `net.ipv4.ip_forward` in the host namespace when the bridge is a gateway (as the
    /// reference bridge plugin does). Skerry-specific; tests turn it off.
    pub ip_forward: bool,
    pub ipam: IpamConf,
    pub prev_result: Option<serde_json::Value>,
    /// Present only when the runtime sent it (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    bridge: Option<String>,
    mtu: Option<u32>,
    hairpin_mode: Option<bool>,
    is_gateway: Option<bool>,
    is_default_gateway: Option<bool>,
    ip_forward: Option<bool>,
    ipam: Option<RawIpam>,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    /// The name an earlier draft of the spec used; libcni sends both.
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(rename = "type")]
    ipam_type: Option<String>,
    #[serde(flatten)]
    range: RawRange,
    /// host-local's range sets: `[[{subnet, ...}]]`; skerry-cni takes exactly one range.
    ranges: Option<Vec<Vec<RawRange>>>,
    data_dir: Option<String>,
    routes: Option<Vec<RawRoute>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

/// Only the version, for VERSION (whose stdin may be empty) and for error rendering.
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Parses and validates the configuration of an ADD, DEL, CHECK, GC or STATUS.
pub fn parse(stdin: &[u8]) -> Result<NetConf, ConfigError> {
    let value: serde_json::Value =
        serde_json::from_slice(stdin).map_err(|e| ConfigError::Decode(format!("stdin is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ConfigError::Decode("stdin must be a JSON object".into()));
    }
    let raw: RawConf = serde_path_to_error::deserialize(value)
        .map_err(|e| ConfigError::Invalid(format!("field {}: {}", e.path(), e.inner())))?;
    validate(raw)
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn validate(raw: RawConf) -> Result<NetConf, ConfigError> {
    let cni_version = raw.cni_version.ok_or_else(|| invalid("cniVersion is required"))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(ConfigError::IncompatibleVersion(cni_version));
    }
    let name = raw.name.ok_or_else(|| invalid("name is required"))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(invalid(format!("name {name:?} must be non-empty and usable as a directory name")));
    }
    if raw.plugin_type.as_deref().unwrap_or("").is_empty() {
        return Err(invalid("type is required (\"skerry-cni\")"));
    }
    let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_owned());
    check_ifname(&bridge).map_err(|why| invalid(format!("bridge {bridge:?}: {why}")))?;
    let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(invalid(format!("mtu {mtu} is out of range; use 68-65535")));
    }
    let is_default_gateway = raw.is_default_gateway.unwrap_or(raw.is_gateway.unwrap_or(true));
    // As in the reference bridge plugin, a default gateway implies the bridge is the gateway.
    let is_gateway = raw.is_gateway.unwrap_or(true) || is_default_gateway;
    let ipam = validate_ipam(raw.ipam.unwrap_or_default())?;
    Ok(NetConf {
        cni_version,
        name,
        bridge,
        mtu,
        hairpin_mode: raw.hairpin_mode.unwrap_or(true),
        is_gateway,
        is_default_gateway,
        ip_forward: raw.ip_forward.unwrap_or(true),
        ipam,
        prev_result: raw.prev_result,
        valid_attachments: raw.valid_attachments.or(raw.attachments),
    })
}

fn validate_ipam(raw: RawIpam) -> Result<IpamConf, ConfigError> {
    match raw.ipam_type.as_deref() {
        None | Some("skerry-cni") | Some("host-local") => {}
        Some(other) => {
            return Err(ConfigError::Unsupported(format!(
            "ipam type {other:?}: skerry-cni has host-local IPAM built in; set ipam.type to \"host-local\" or omit it"
        )))
        }
    }
    let range = match raw.ranges {
        Some(sets) => {
            let mut all = sets.into_iter().flatten();
            let first = all.next().ok_or_else(|| invalid("ipam.ranges is empty"))?;
            if all.next().is_some() {
                return Err(ConfigError::Unsupported("ipam.ranges with more than one range".into()));
            }
            if raw.range.subnet.is_some() {
                return Err(invalid("set either ipam.subnet or ipam.ranges, not both"));
            }
            first
        }
        None => raw.range,
    };
    let subnet = Subnet::parse(range.subnet.as_deref().unwrap_or(DEFAULT_SUBNET))?;
    if subnet.prefix > 30 {
        return Err(invalid(format!("subnet {subnet} is too small; use a /30 or larger")));
    }
    let first_host = Ipv4Addr::from(u32::from(subnet.network) + 1);
    let last_host = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
    let host_in_subnet = |field: &str, value: Option<&str>, default: Ipv4Addr| -> Result<Ipv4Addr, ConfigError> {
        let Some(text) = value else { return Ok(default) };
        let ip: Ipv4Addr =
            text.parse().map_err(|_| invalid(format!("ipam.{field} {text:?} is not an IPv4 address")))?;
        if !subnet.contains(ip) || ip == subnet.network || ip == subnet.broadcast() {
            return Err(invalid(format!("ipam.{field} {ip} is not a host address of subnet {subnet}")));
        }
        Ok(ip)
    };
    let gateway = host_in_subnet("gateway", range.gateway.as_deref(), first_host)?;
    let range_start = host_in_subnet("rangeStart", range.range_start.as_deref(), first_host)?;
    let range_end = host_in_subnet("rangeEnd", range.range_end.as_deref(), last_host)?;
    if range_start > range_end {
        return Err(invalid(format!("ipam.rangeStart {range_start} is after ipam.rangeEnd {range_end}")));
    }
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR));
    if !data_dir.is_absolute() {
        return Err(invalid(format!("ipam.dataDir {} must be an absolute path", data_dir.display())));
    }
    let mut routes = Vec::new();
    for r in raw.routes.unwrap_or_default() {
        let dst = Subnet::parse(&r.dst).map_err(|e| invalid(format!("ipam.routes: {e}")))?;
        let gw = match r.gw {
            Some(gw) => Some(gw.parse().map_err(|_| invalid(format!("ipam.routes gw {gw:?} is not an IPv4 address")))?),
            None => None,
        };
        routes.push(Route { dst, gw });
    }
    Ok(IpamConf { subnet, range_start, range_end, gateway, data_dir, routes })
}

/// Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name must be 1-15 characters".into());
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0') {
        return Err("an interface name may not contain '/', ':' or whitespace".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<NetConf, ConfigError> {
        parse(s.as_bytes())
    }

    #[test]
    fn daemon_conflist_plugin_gets_defaults() {
        let conf = parse_str(
            r#"{"cniVersion":"1.0.0","name":"skerry","type":"skerry-cni","bridge":"skerry0","ipam":{"subnet":"10.42.0.0/24"}}"#,
        )
        .unwrap();
        assert_eq!(conf.cni_version, "1.0.0");
        assert_eq!(conf.name, "skerry");
        assert_eq!(conf.bridge, "skerry0");
        assert_eq!(conf.mtu, 1500);
        assert!(conf.hairpin_mode && conf.is_gateway && conf.is_default_gateway && conf.ip_forward);
        assert_eq!(
            conf.ipam,
            IpamConf {
                subnet: Subnet { network: Ipv4Addr::new(10, 42, 0, 0), prefix: 24 },
                range_start: Ipv4Addr::new(10, 42, 0, 1),
                range_end: Ipv4Addr::new(10, 42, 0, 254),
                gateway: Ipv4Addr::new(10, 42, 0, 1),
                data_dir: PathBuf::from("/var/lib/cni/networks"),
                routes: vec![],
            }
        );
        assert_eq!(conf.valid_attachments, None);
    }

    #[test]
    fn everything_defaults_without_ipam() {
        let conf = parse_str(r#"{"cniVersion":"1.1.0","name":"n","type":"skerry-cni"}"#).unwrap();
        assert_eq!(conf.bridge, DEFAULT_BRIDGE);
        assert_eq!(conf.ipam.subnet.to_string(), "10.42.0.0/24");
    }

    #[test]
    fn host_local_style_ranges_and_explicit_fields() {
        let conf = parse_str(
            r#"{"cniVersion":"0.4.0","name":"n","type":"bridge","mtu":1400,"hairpinMode":false,"isGateway":true,
                "isDefaultGateway":false,"ipForward":false,"runtimeConfig":{},"args":{"x":1},
                "ipam":{"type":"host-local","dataDir":"/tmp/x","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.0.0.0/8","gw":"10.9.0.254"}],
                        "ranges":[[{"subnet":"10.9.0.7/24","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.20","gateway":"10.9.0.254"}]]},
                "cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(conf.mtu, 1400);
        assert!(!conf.hairpin_mode && conf.is_gateway && !conf.is_default_gateway && !conf.ip_forward);
        assert_eq!(conf.ipam.subnet.to_string(), "10.9.0.0/24", "host bits are masked off");
        assert_eq!(conf.ipam.range_start, Ipv4Addr::new(10, 9, 0, 10));
        assert_eq!(conf.ipam.range_end, Ipv4Addr::new(10, 9, 0, 20));
        assert_eq!(conf.ipam.gateway, Ipv4Addr::new(10, 9, 0, 254));
        assert_eq!(conf.ipam.routes.len(), 2);
        assert_eq!(conf.ipam.routes[1].gw, Some(Ipv4Addr::new(10, 9, 0, 254)));
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c1");
    }

    #[test]
    fn errors_carry_the_right_kind() {
        type IsExpected = fn(&ConfigError) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("not json", |e| matches!(e, ConfigError::Decode(_))),
            ("[1,2]", |e| matches!(e, ConfigError::Decode(_))),
            (r#"{"name":"n","type":"t"}"#, |e| matches!(e, ConfigError::Invalid(_))),
            (r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#, |e| matches!(e, ConfigError::IncompatibleVersion(_))),
            (r#"{"cniVersion":"1.0.0","type":"t"}"#, |e| matches!(e, ConfigError::Invalid(_))),
            (r#"{"cniVersion":"1.0.0","name":"a/b","type":"t"}"#, |e| matches!(e, ConfigError::Invalid(_))),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, |e| matches!(e, ConfigError::Invalid(_))),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"big"}"#,
                |e| matches!(e, ConfigError::Invalid(m) if m.contains("mtu")),
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":9}"#, |e| matches!(e, ConfigError::Invalid(_))),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","bridge":"a-very-long-bridge-name"}"#, |e| {
                matches!(e, ConfigError::Invalid(_))
            }),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"dhcp"}}"#, |e| {
                matches!(e, ConfigError::Unsupported(_))
            }),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"fd00::/64"}}"#, |e| {
                matches!(e, ConfigError::Unsupported(_))
            }),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0"}}"#, |e| {
                matches!(e, ConfigError::Invalid(_))
            }),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0/31"}}"#, |e| {
                matches!(e, ConfigError::Invalid(_))
            }),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0/24","gateway":"10.0.1.1"}}"#,
                |e| matches!(e, ConfigError::Invalid(m) if m.contains("gateway")),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.3"}}"#,
                |e| matches!(e, ConfigError::Invalid(_)),
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"subnet":"10.0.0.0/24","rangeEnd":"10.0.0.255"}}"#,
                |e| matches!(e, ConfigError::Invalid(_)),
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"dataDir":"relative"}}"#, |e| {
                matches!(e, ConfigError::Invalid(_))
            }),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"10.0.1.0/24"}]]}}"#,
                |e| matches!(e, ConfigError::Unsupported(_)),
            ),
        ];
        for (input, is_expected) in cases {
            let err = parse_str(input).expect_err(input);
            assert!(is_expected(&err), "{input} gave {err:?}");
        }
    }

    #[test]
    fn subnet_math() {
        let s = Subnet::parse("10.42.0.0/29").unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 42, 0, 7));
        assert!(s.contains(Ipv4Addr::new(10, 42, 0, 5)));
        assert!(!s.contains(Ipv4Addr::new(10, 42, 0, 8)));
        assert_eq!(Subnet::parse("0.0.0.0/0").unwrap().broadcast(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn version_is_read_even_from_partial_input() {
        assert_eq!(requested_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(requested_version(b""), None);
    }
}
