//! `skerry top pods|nodes`: CPU and memory usage from the resource metrics API
//! (`metrics.k8s.io/v1beta1`), printed with kubectl's columns, rounding and messages.

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::Ctx;
use crate::client::{self, query};
use crate::error::{Error, Result};
use crate::output;

const METRICS: &str = "/apis/metrics.k8s.io/v1beta1";
/// kubectl blames a pod older than this for having no metrics (`metricsCreationDelay`).
const METRICS_CREATION_DELAY: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Display resource (CPU/memory) usage of pods
    #[command(visible_aliases = ["pods", "po"])]
    Pod(PodArgs),
    /// Display resource (CPU/memory) usage of nodes
    #[command(visible_aliases = ["nodes", "no"])]
    Node(NodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct PodArgs {
    pub name: Option<String>,
    /// If present, list the requested object(s) across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Selector (label query) to filter on, supports '=', '==', '!=', 'in', 'notin'
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// If present, print usage of containers within a pod
    #[arg(long)]
    pub containers: bool,
    /// If non-empty, sort pods list using specified field. The field can be either 'cpu' or 'memory'
    #[arg(long)]
    pub sort_by: Option<String>,
    /// If present, print output without headers
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    pub name: Option<String>,
    /// Selector (label query) to filter on, supports '=', '==', '!=', 'in', 'notin'
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// If non-empty, sort nodes list using specified field. The field can be either 'cpu' or 'memory'
    #[arg(long)]
    pub sort_by: Option<String>,
    /// If present, print output without headers
    #[arg(long)]
    pub no_headers: bool,
    /// Print node resources based on Capacity instead of Allocatable(default) of the nodes.
    #[arg(long)]
    pub show_capacity: bool,
}

pub async fn run(ctx: &mut Ctx, cmd: Command) -> Result<()> {
    match cmd {
        Command::Pod(a) => pods(ctx, a).await,
        Command::Node(a) => nodes(ctx, a).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Cpu,
    Memory,
}

fn sort_by(flag: Option<&str>) -> Result<SortBy> {
    match flag.unwrap_or("") {
        "" => Ok(SortBy::Name),
        "cpu" => Ok(SortBy::Cpu),
        "memory" => Ok(SortBy::Memory),
        _ => Err(Error::msg("--sort-by accepts only cpu or memory")),
    }
}

/// One container's usage: CPU in nanocores, memory in bytes (both rounded up, as
/// `Quantity.Value()` does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub nanocores: u128,
    pub bytes: u128,
}

impl Usage {
    fn from_json(usage: &Value) -> Usage {
        let q = |k: &str| usage[k].as_str().and_then(parse_quantity_nanos).unwrap_or(0);
        Usage { nanocores: q("cpu"), bytes: q("memory").div_ceil(1_000_000_000) }
    }
}

/// A pod's metrics as `top pods` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    pub namespace: String,
    pub name: String,
    pub containers: Vec<(String, Usage)>,
}

impl PodRow {
    pub fn from_json(m: &Value) -> PodRow {
        let containers = m["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["name"].as_str().unwrap_or("").to_string(), Usage::from_json(&c["usage"])))
            .collect();
        PodRow {
            namespace: m["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            name: m["metadata"]["name"].as_str().unwrap_or("").to_string(),
            containers,
        }
    }

    fn total(&self) -> Usage {
        self.containers.iter().fold(Usage::default(), |a, (_, u)| Usage {
            nanocores: a.nanocores + u.nanocores,
            bytes: a.bytes + u.bytes,
        })
    }
}

/// A node's metrics and what it has (`None`: its metrics are missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub usage: Option<Usage>,
    pub available: Option<Usage>,
}

/// A quantity (`"12345n"`, `"5m"`, `"1.5"`, `"1234Ki"`, `"1e3"`) in billionths of its unit,
/// rounded up; `None` when it is not a quantity.
pub fn parse_quantity_nanos(s: &str) -> Option<u128> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int, frac) = number.trim_start_matches('+').split_once('.').unwrap_or((number.trim_start_matches('+'), ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // The value in billionths, as numerator / denominator.
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let mut den: u128 = 10u128.checked_pow(frac.len() as u32)?;
    let mut num = digits;
    let mult: u128 = match suffix {
        "n" => 1,
        "u" => 1_000,
        "m" => 1_000_000,
        "" => 1_000_000_000,
        "k" => 1_000_000_000_000,
        "M" => 1_000_000_000_000_000,
        "G" => 10u128.pow(18),
        "T" => 10u128.pow(21),
        "P" => 10u128.pow(24),
        "E" => 10u128.pow(27),
        "Ki" => 1_000_000_000 << 10,
        "Mi" => 1_000_000_000 << 20,
        "Gi" => 1_000_000_000 << 30,
        "Ti" => 1_000_000_000 << 40,
        "Pi" => 1_000_000_000 << 50,
        "Ei" => 1_000_000_000 << 60,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp >= 0 {
                num = num.checked_mul(10u128.checked_pow(exp as u32)?)?;
            } else {
                den = den.checked_mul(10u128.checked_pow(exp.unsigned_abs())?)?;
            }
            1_000_000_000
        }
        _ => return None,
    };
    Some(num.checked_mul(mult)?.div_ceil(den))
}

/// CPU as kubectl prints it: millicores, rounded up (`Quantity.MilliValue()`).
pub fn cpu_cell(nanocores: u128) -> String {
    format!("{}m", nanocores.div_ceil(1_000_000))
}

/// Memory as kubectl prints it: whole MiB, rounded down.
pub fn memory_cell(bytes: u128) -> String {
    format!("{}Mi", bytes >> 20)
}

/// `used` as a whole percentage of `available`, truncated, computed on milli-values as kubectl does.
fn percent(used_milli: u128, available_milli: u128) -> String {
    let fraction = if available_milli == 0 { 0.0 } else { used_milli as f64 / available_milli as f64 * 100.0 };
    format!("{}%", fraction as i64)
}

/// Lines padded as kubectl's tabwriter pads `top`'s tab-terminated cells (the last one too).
fn tabwrite(mut lines: Vec<Vec<String>>) -> String {
    for l in &mut lines {
        l.push(String::new());
    }
    output::align(&lines)
}

/// The `top pods` table.
pub fn pod_table(
    mut rows: Vec<PodRow>,
    containers: bool,
    with_namespace: bool,
    no_headers: bool,
    sort: SortBy,
) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut lines = Vec::new();
    if !no_headers {
        let mut header = Vec::new();
        if with_namespace {
            header.push("NAMESPACE");
        }
        if containers {
            header.push("POD");
        }
        header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"]);
        lines.push(header.into_iter().map(String::from).collect());
    }
    rows.sort_by(|a, b| (a.namespace.as_str(), a.name.as_str()).cmp(&(b.namespace.as_str(), b.name.as_str())));
    if !with_namespace {
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    }
    match sort {
        SortBy::Name => {}
        SortBy::Cpu => rows.sort_by_key(|r| std::cmp::Reverse(r.total().nanocores)),
        SortBy::Memory => rows.sort_by_key(|r| std::cmp::Reverse(r.total().bytes)),
    }
    for row in &rows {
        let prefix: Vec<String> = if with_namespace { vec![row.namespace.clone()] } else { Vec::new() };
        if containers {
            let mut cs = row.containers.clone();
            cs.sort_by(|a, b| a.0.cmp(&b.0));
            match sort {
                SortBy::Name => {}
                SortBy::Cpu => cs.sort_by_key(|c| std::cmp::Reverse(c.1.nanocores)),
                SortBy::Memory => cs.sort_by_key(|c| std::cmp::Reverse(c.1.bytes)),
            }
            for (name, u) in cs {
                let mut line = prefix.clone();
                line.extend([row.name.clone(), name, cpu_cell(u.nanocores), memory_cell(u.bytes)]);
                lines.push(line);
            }
        } else {
            let u = row.total();
            let mut line = prefix;
            line.extend([row.name.clone(), cpu_cell(u.nanocores), memory_cell(u.bytes)]);
            lines.push(line);
        }
    }
    tabwrite(lines)
}

/// The `top nodes` table (kubectl 1.33's columns).
pub fn node_table(mut rows: Vec<NodeRow>, no_headers: bool, sort: SortBy) -> String {
    if rows.iter().all(|r| r.usage.is_none()) {
        return String::new();
    }
    let mut lines = Vec::new();
    if !no_headers {
        lines.push(["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"].map(String::from).to_vec());
    }
    // Nodes without metrics come last, as kubectl prints them after the others.
    rows.sort_by(|a, b| (a.usage.is_none(), &a.name).cmp(&(b.usage.is_none(), &b.name)));
    let key = |r: &NodeRow| r.usage.as_ref().map(|u| if sort == SortBy::Cpu { u.nanocores } else { u.bytes });
    if sort != SortBy::Name {
        rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
    }
    for row in rows {
        let mut line = vec![row.name.clone()];
        match &row.usage {
            None => line.extend(std::iter::repeat_n("<unknown>".to_string(), 4)),
            Some(u) => {
                let cpu_milli = u.nanocores.div_ceil(1_000_000);
                line.push(cpu_cell(u.nanocores));
                if let Some(a) = &row.available {
                    line.push(percent(cpu_milli, a.nanocores.div_ceil(1_000_000)));
                }
                line.push(memory_cell(u.bytes));
                if let Some(a) = &row.available {
                    line.push(percent(u.bytes * 1000, a.bytes * 1000));
                }
            }
        }
        lines.push(line);
    }
    tabwrite(lines)
}

async fn pods(ctx: &mut Ctx, a: PodArgs) -> Result<()> {
    let sort = sort_by(a.sort_by.as_deref())?;
    if a.name.is_some() && a.selector.is_some() {
        return Err(Error::msg("only one of NAME or selector can be provided"));
    }
    let mut q = Vec::new();
    if let Some(l) = &a.selector {
        q.push(("labelSelector", l.clone()));
    }
    let ns = ctx.namespace.clone();
    let items: Vec<Value> = match &a.name {
        Some(name) => vec![
            ctx.get_json(&format!("{METRICS}/namespaces/{}/pods/{}", client::encode(&ns), client::encode(name)), false)
                .await?,
        ],
        None => {
            let scope = if a.all_namespaces { String::new() } else { format!("/namespaces/{}", client::encode(&ns)) };
            let list = ctx.get_json(&format!("{METRICS}{scope}/pods{}", query(&q)), false).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    if items.is_empty() {
        // kubectl's reasons: pods that should have metrics by now, pods too new, or no pods.
        let scope = if a.all_namespaces { String::new() } else { format!("/namespaces/{}", client::encode(&ns)) };
        let list = ctx.get_json(&format!("/api/v1{scope}/pods{}", query(&q)), false).await?;
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        if !pods.is_empty() {
            let now = SystemTime::now();
            for p in &pods {
                let created = p.pointer("/metadata/creationTimestamp").and_then(Value::as_str).and_then(parse_time);
                if let Some(age) =
                    created.and_then(|c| now.duration_since(c).ok()).filter(|age| *age > METRICS_CREATION_DELAY)
                {
                    return Err(Error::msg(format!(
                        "Metrics not available for pod {}/{}, age: {}",
                        p["metadata"]["namespace"].as_str().unwrap_or(""),
                        p["metadata"]["name"].as_str().unwrap_or(""),
                        go_duration(age)
                    )));
                }
            }
            return Err(Error::msg("metrics not available yet"));
        }
        if a.all_namespaces {
            writeln!(ctx.err, "No resources found")?;
        } else {
            writeln!(ctx.err, "No resources found in {ns} namespace.")?;
        }
        return Ok(());
    }
    let rows = items.iter().map(PodRow::from_json).collect();
    let text = pod_table(rows, a.containers, a.all_namespaces, a.no_headers, sort);
    ctx.out.write_all(text.as_bytes())?;
    Ok(())
}

async fn nodes(ctx: &mut Ctx, a: NodeArgs) -> Result<()> {
    let sort = sort_by(a.sort_by.as_deref())?;
    if a.name.is_some() && a.selector.is_some() {
        return Err(Error::msg("only one of NAME or selector can be provided"));
    }
    let items: Vec<Value> = match &a.name {
        Some(name) => vec![ctx.get_json(&format!("{METRICS}/nodes/{}", client::encode(name)), false).await?],
        None => {
            let q: Vec<(&str, String)> = a.selector.iter().map(|l| ("labelSelector", l.clone())).collect();
            let list = ctx.get_json(&format!("{METRICS}/nodes{}", query(&q)), false).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    if items.is_empty() {
        return Err(Error::msg("metrics not available yet"));
    }
    // What each node has: its allocatable (or capacity) from its Node, as kubectl reads it. A
    // Node without metrics is printed with `<unknown>`, as kubectl does.
    let nodes: Vec<Value> = match &a.name {
        Some(name) => vec![ctx.get_json(&format!("/api/v1/nodes/{}", client::encode(name)), false).await?],
        None => {
            let q: Vec<(&str, String)> = a.selector.iter().map(|l| ("labelSelector", l.clone())).collect();
            let list = ctx.get_json(&format!("/api/v1/nodes{}", query(&q)), false).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let field = if a.show_capacity { "capacity" } else { "allocatable" };
    let available: std::collections::BTreeMap<String, Usage> = nodes
        .iter()
        .filter(|n| n["status"][field].is_object())
        .map(|n| (n["metadata"]["name"].as_str().unwrap_or("").to_string(), Usage::from_json(&n["status"][field])))
        .collect();
    let mut rows: Vec<NodeRow> = items
        .iter()
        .map(|m| {
            let name = m["metadata"]["name"].as_str().unwrap_or("").to_string();
            NodeRow { usage: Some(Usage::from_json(&m["usage"])), available: available.get(&name).cloned(), name }
        })
        .collect();
    for (name, have) in &available {
        if !rows.iter().any(|r| &r.name == name) {
            rows.push(NodeRow { name: name.clone(), usage: None, available: Some(have.clone()) });
        }
    }
    let text = node_table(rows, a.no_headers, sort);
    ctx.out.write_all(text.as_bytes())?;
    Ok(())
}

/// Parses an RFC 3339 UTC timestamp (`2024-05-01T10:00:00Z`, fractions allowed).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}")[..9].parse().ok()? };
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + h * 3600 + min * 60 + sec, nanos))
}

/// A duration as Go's `time.Duration.String` prints it (`2m5.5s`, `1h0m3s`).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let mut out = String::new();
    if secs >= 3600 {
        out.push_str(&format!("{}h", secs / 3600));
    }
    if secs >= 60 {
        out.push_str(&format!("{}m", secs % 3600 / 60));
    }
    out.push_str(&(secs % 60).to_string());
    if d.subsec_nanos() > 0 {
        out.push_str(format!(".{:09}", d.subsec_nanos()).trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_nanos("12345n"), Some(12_345));
        assert_eq!(parse_quantity_nanos("5m"), Some(5_000_000));
        assert_eq!(parse_quantity_nanos("7u"), Some(7_000));
        assert_eq!(parse_quantity_nanos("2"), Some(2_000_000_000));
        assert_eq!(parse_quantity_nanos("1.5"), Some(1_500_000_000));
        assert_eq!(parse_quantity_nanos("0.1m"), Some(100_000));
        assert_eq!(parse_quantity_nanos("1234Ki"), Some(1_263_616 * 1_000_000_000));
        assert_eq!(parse_quantity_nanos("12Mi"), Some((12 << 20) * 1_000_000_000));
        assert_eq!(parse_quantity_nanos("1k"), Some(1_000 * 1_000_000_000));
        assert_eq!(parse_quantity_nanos("1e3"), Some(1_000 * 1_000_000_000));
        assert_eq!(parse_quantity_nanos("1e-9"), Some(1));
        assert_eq!(parse_quantity_nanos("0"), Some(0));
        for bad in ["", "m", "12x", "Ki", "1.2.3"] {
            assert_eq!(parse_quantity_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn cells_round_like_kubectl() {
        // MilliValue rounds up; memory is floored to whole MiB.
        assert_eq!(cpu_cell(12_345), "1m");
        assert_eq!(cpu_cell(0), "0m");
        assert_eq!(cpu_cell(3_000_000), "3m");
        assert_eq!(cpu_cell(999_000_001), "1000m");
        assert_eq!(memory_cell((12 << 20) + 1023), "12Mi");
        assert_eq!(memory_cell(1_000_000), "0Mi");
        let u = Usage::from_json(&json!({"cpu": "2500001n", "memory": "1500"}));
        assert_eq!(u, Usage { nanocores: 2_500_001, bytes: 1500 });
    }

    fn row(ns: &str, name: &str, containers: &[(&str, &str, &str)]) -> PodRow {
        PodRow::from_json(&json!({
            "metadata": {"name": name, "namespace": ns},
            "containers": containers.iter().map(|(n, c, m)| json!({"name": n, "usage": {"cpu": c, "memory": m}})).collect::<Vec<_>>(),
        }))
    }

    fn rows() -> Vec<PodRow> {
        vec![
            row("default", "web", &[("app", "2500000n", "12Mi"), ("sidecar", "500000n", "1024Ki")]),
            row("kube-system", "dns", &[("dns", "1m", "20Mi")]),
            row("default", "burner", &[("burner", "998123456n", "300Ki")]),
        ]
    }

    #[test]
    fn pod_tables() {
        assert_eq!(
            pod_table(rows(), false, false, false, SortBy::Name),
            "NAME     CPU(cores)   MEMORY(bytes)   \n\
             burner   999m         0Mi             \n\
             dns      1m           20Mi            \n\
             web      3m           13Mi            \n"
        );
        assert_eq!(
            pod_table(rows(), false, true, false, SortBy::Name),
            "NAMESPACE     NAME     CPU(cores)   MEMORY(bytes)   \n\
             default       burner   999m         0Mi             \n\
             default       web      3m           13Mi            \n\
             kube-system   dns      1m           20Mi            \n"
        );
        assert_eq!(
            pod_table(rows(), true, false, true, SortBy::Memory),
            "dns      dns       1m     20Mi   \n\
             web      app       3m     12Mi   \n\
             web      sidecar   1m     1Mi    \n\
             burner   burner    999m   0Mi    \n"
        );
        let t = pod_table(rows(), true, true, false, SortBy::Cpu);
        assert!(
            t.starts_with(
                "NAMESPACE     POD      NAME      CPU(cores)   MEMORY(bytes)   \ndefault       burner   burner"
            ),
            "{t}"
        );
        assert_eq!(pod_table(Vec::new(), false, false, false, SortBy::Name), "");
    }

    #[test]
    fn node_tables() {
        let available = Some(Usage { nanocores: 2_000_000_000, bytes: 4 << 30 });
        let n1 = NodeRow {
            name: "n1".into(),
            usage: Some(Usage { nanocores: 523_400_000, bytes: 1 << 30 }),
            available: available.clone(),
        };
        assert_eq!(
            node_table(vec![n1.clone()], false, SortBy::Name),
            "NAME   CPU(cores)   CPU(%)   MEMORY(bytes)   MEMORY(%)   \n\
             n1     524m         26%      1024Mi          25%         \n"
        );
        let gone = NodeRow { name: "a-gone".into(), usage: None, available };
        assert_eq!(
            node_table(vec![gone.clone(), n1], true, SortBy::Cpu),
            "n1       524m        26%         1024Mi      25%         \n\
             a-gone   <unknown>   <unknown>   <unknown>   <unknown>   \n"
        );
        assert_eq!(node_table(vec![gone], false, SortBy::Name), "");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(SystemTime::UNIX_EPOCH));
        assert_eq!(
            parse_time("2024-03-01T12:30:05Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_296_205))
        );
        assert_eq!(
            parse_time("2024-03-01T12:30:05.5Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_296_205_500))
        );
        assert_eq!(parse_time("2024-03-01 12:30:05"), None);
        assert_eq!(go_duration(Duration::from_millis(125_500)), "2m5.5s");
        assert_eq!(go_duration(Duration::from_secs(3603)), "1h0m3s");
        assert_eq!(go_duration(Duration::from_secs(7)), "7s");
    }
}
