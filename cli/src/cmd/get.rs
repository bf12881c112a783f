//! `skerry get`: server-rendered tables (with kubectl's client-side decorations), YAML/JSON/name output, and watch.

use std::io::Write;

use hyper::Method;
use serde_json::Value;

use super::{request, Ctx};
use crate::client::{self, query};
use crate::error::{Error, Result};
use crate::output::{self, Format, Table, TableOptions};
use crate::resources::{parse_targets, ApiResource, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE[,TYPE...] [NAME...] or TYPE/NAME...
    pub resources: Vec<String>,
    /// Output format: json, yaml, wide or name
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector to filter on (e.g. -l app=web,tier!=db)
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector to filter on (e.g. --field-selector status.phase=Running)
    #[arg(long)]
    pub field_selector: Option<String>,
    /// List the requested objects across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing the requested objects, watch for changes
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Watch for changes without listing first
    #[arg(long)]
    pub watch_only: bool,
    /// Show all labels as the last column
    #[arg(long)]
    pub show_labels: bool,
    /// Label keys to show as columns
    #[arg(short = 'L', long = "label-columns", value_delimiter = ',')]
    pub label_columns: Vec<String>,
    /// Don't print headers
    #[arg(long)]
    pub no_headers: bool,
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let format = Format::parse(args.output.as_deref()).map_err(Error::Msg)?;
    if args.resources.is_empty() {
        return Err(Error::msg(
            "you must specify the type of resource to get. Use \"skerry api-resources\" for a complete list of supported resources.",
        ));
    }
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, &args.resources)?;
    if args.watch || args.watch_only {
        if targets.targets.len() != 1 {
            return Err(Error::msg("you may only specify a single resource type"));
        }
        return watch(ctx, &args, format, &targets.targets[0]).await;
    }
    match format {
        Format::Table | Format::Wide => tables(ctx, &args, format, &targets.targets, targets.show_kind).await,
        _ => objects(ctx, &args, format, &targets.targets).await,
    }
}

fn scope<'a>(ctx: &'a Ctx, args: &Args) -> Option<&'a str> {
    if args.all_namespaces {
        None
    } else {
        Some(ctx.namespace.as_str())
    }
}

fn list_path(ctx: &Ctx, args: &Args, res: &ApiResource, extra: &[(&str, String)]) -> String {
    let mut q: Vec<(&str, String)> = Vec::new();
    if let Some(l) = &args.selector {
        q.push(("labelSelector", l.clone()));
    }
    if let Some(f) = &args.field_selector {
        q.push(("fieldSelector", f.clone()));
    }
    q.extend(extra.iter().cloned());
    format!("{}{}", res.collection(scope(ctx, args)), query(&q))
}

fn table_options(args: &Args, format: Format, res: &ApiResource, show_kind: bool) -> TableOptions {
    TableOptions {
        wide: format == Format::Wide,
        no_headers: args.no_headers,
        namespace_column: args.all_namespaces && res.namespaced,
        show_labels: args.show_labels,
        label_columns: args.label_columns.clone(),
        kind_prefix: show_kind.then(|| res.kind_label()),
    }
}

/// `No resources found in default namespace.` or `No resources found`.
pub fn no_resources(ctx: &mut Ctx, all_namespaces: bool, namespaced: bool) -> Result<()> {
    if all_namespaces || !namespaced {
        writeln!(ctx.err, "No resources found")?;
    } else {
        writeln!(ctx.err, "No resources found in {} namespace.", ctx.namespace)?;
    }
    Ok(())
}

/// Fetches the table of one target: the list, or each named item (errors are collected).
async fn fetch_table(ctx: &mut Ctx, args: &Args, t: &Target, errors: &mut Vec<Error>) -> Result<Option<Table>> {
    if t.names.is_empty() {
        let path = list_path(ctx, args, &t.resource, &[]);
        let v = ctx.get_json(&path, true).await?;
        return Ok(Some(serde_json::from_value(v)?));
    }
    let mut merged: Option<Table> = None;
    for name in &t.names {
        let path = t.resource.item(&ctx.namespace, name);
        match ctx.get_json(&path, true).await {
            Ok(v) => {
                let table: Table = serde_json::from_value(v)?;
                match &mut merged {
                    Some(m) => m.rows.extend(table.rows),
                    None => merged = Some(table),
                }
            }
            Err(e @ Error::Status(_)) => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(merged)
}

async fn tables(ctx: &mut Ctx, args: &Args, format: Format, targets: &[Target], show_kind: bool) -> Result<()> {
    let mut errors = Vec::new();
    let mut printed = false;
    let mut any_namespaced = false;
    for t in targets {
        any_namespaced |= t.resource.namespaced;
        let Some(table) = fetch_table(ctx, args, t, &mut errors).await? else { continue };
        if table.rows.is_empty() {
            continue;
        }
        let lines = table.render(&table_options(args, format, &t.resource, show_kind));
        if printed {
            writeln!(ctx.out)?;
        }
        write!(ctx.out, "{}", output::align(&lines))?;
        printed = true;
    }
    if !printed && errors.is_empty() {
        no_resources(ctx, args.all_namespaces, any_namespaced)?;
    }
    super::finish(ctx, errors)
}

async fn objects(ctx: &mut Ctx, args: &Args, format: Format, targets: &[Target]) -> Result<()> {
    let mut errors = Vec::new();
    let mut items: Vec<(ApiResource, Value)> = Vec::new();
    let single = targets.len() == 1 && targets[0].names.len() == 1;
    for t in targets {
        if t.names.is_empty() {
            let path = list_path(ctx, args, &t.resource, &[]);
            let list = ctx.get_json(&path, false).await?;
            if let Some(Value::Array(list_items)) = list.get("items") {
                items.extend(list_items.iter().map(|i| (t.resource.clone(), i.clone())));
            }
        } else {
            for name in &t.names {
                match ctx.get_json(&t.resource.item(&ctx.namespace, name), false).await {
                    Ok(obj) => items.push((t.resource.clone(), obj)),
                    Err(e @ Error::Status(_)) => errors.push(e),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    if format == Format::Name {
        for (res, obj) in &items {
            writeln!(ctx.out, "{}/{}", res.kind_label(), obj["metadata"]["name"].as_str().unwrap_or(""))?;
        }
        if items.is_empty() && errors.is_empty() {
            no_resources(ctx, args.all_namespaces, targets.iter().any(|t| t.resource.namespaced))?;
        }
        return super::finish(ctx, errors);
    }
    let typed: Vec<Value> =
        items.into_iter().map(|(res, obj)| output::with_type(obj, &res.api_version(), &res.kind)).collect();
    if single && typed.len() == 1 {
        write!(ctx.out, "{}", output::render(&typed[0], format))?;
    } else if !(single && typed.is_empty()) {
        write!(ctx.out, "{}", output::render(&output::list(typed), format))?;
    }
    super::finish(ctx, errors)
}

/// Lists (printing unless --watch-only), then streams watch events as table rows or objects.
async fn watch(ctx: &mut Ctx, args: &Args, format: Format, t: &Target) -> Result<()> {
    let res = &t.resource;
    let tabular = matches!(format, Format::Table | Format::Wide);
    let opts = table_options(args, format, res, false);
    let name_selector =
        match t.names.as_slice() {
            [] => None,
            [one] => Some(format!("metadata.name={one}")),
            _ => return Err(Error::msg(
                "watch is only supported on individual resources and resource collections, but 2 resources were found",
            )),
        };
    // List first: the table to print and the resourceVersion to watch from.
    let mut errors = Vec::new();
    let mut widths: Vec<usize> = Vec::new();
    let mut header_printed = false;
    let rv;
    if tabular {
        let table = fetch_table(ctx, args, t, &mut errors).await?;
        if let Some(e) = errors.pop() {
            return Err(e);
        }
        let table = table.unwrap_or_default();
        rv = resource_version(&table.metadata, &table.rows.first().map(|r| r.object.clone()).unwrap_or_default());
        if !args.watch_only {
            let lines = table.render(&opts);
            if table.rows.is_empty() {
                no_resources(ctx, args.all_namespaces, res.namespaced)?;
            } else {
                widths = output::column_widths(&lines);
                write!(ctx.out, "{}", output::align(&lines))?;
                header_printed = true;
            }
        }
    } else {
        let path = match &t.names[..] {
            [name] => res.item(&ctx.namespace, name),
            _ => list_path(ctx, args, res, &[]),
        };
        let v = ctx.get_json(&path, false).await?;
        rv = resource_version(&v["metadata"], &v);
        if !args.watch_only {
            if t.names.is_empty() {
                for item in v["items"].as_array().cloned().unwrap_or_default() {
                    print_object(ctx, res, item, format)?;
                }
            } else {
                print_object(ctx, res, v, format)?;
            }
        }
    }
    ctx.out.flush()?;

    let mut extra = vec![("watch", "true".to_string())];
    if let Some(f) = name_selector {
        extra.push(("fieldSelector", f));
    }
    if !rv.is_empty() {
        extra.push(("resourceVersion", rv));
    }
    let path = list_path(ctx, args, res, &extra);
    let mut req = request(Method::GET, &path, client::empty());
    if tabular {
        req.headers_mut().insert(hyper::header::ACCEPT, hyper::header::HeaderValue::from_static(client::ACCEPT_TABLE));
    }
    let resp = ctx.call(req).await?;
    let mut events = client::JsonLines::new(resp);
    while let Some(event) = events.next().await? {
        if event["type"] == "ERROR" {
            let status = crate::error::Status::from_body(500, event["object"].to_string().as_bytes());
            return Err(Error::Status(status));
        }
        let object = event["object"].clone();
        if tabular {
            let table: Table = serde_json::from_value(object)?;
            let mut lines = table.render(&opts);
            if !header_printed {
                widths = output::column_widths(&lines);
                header_printed = true;
            } else if !opts.no_headers && !lines.is_empty() {
                lines.remove(0);
            }
            for line in &lines {
                write!(ctx.out, "{}", output::format_line(line, &widths))?;
            }
        } else {
            print_object(ctx, res, object, format)?;
        }
        ctx.out.flush()?;
    }
    Ok(())
}

fn print_object(ctx: &mut Ctx, res: &ApiResource, obj: Value, format: Format) -> Result<()> {
    match format {
        Format::Name => writeln!(ctx.out, "{}/{}", res.kind_label(), obj["metadata"]["name"].as_str().unwrap_or(""))?,
        Format::Json | Format::Yaml => {
            let obj = output::with_type(obj, &res.api_version(), &res.kind);
            let text = output::render(&obj, format);
            if format == Format::Yaml {
                writeln!(ctx.out, "---")?;
            }
            write!(ctx.out, "{text}")?;
        }
        _ => {}
    }
    Ok(())
}

fn resource_version(meta: &Value, object: &Value) -> String {
    meta["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| object["metadata"]["resourceVersion"].as_str())
        .unwrap_or("")
        .to_string()
}
