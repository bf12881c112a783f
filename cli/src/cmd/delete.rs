//! `skerry delete`: deletes objects by name, selector, `--all` or manifest, then waits until they are gone.

use std::io::Write;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::{json_body, parse_duration, plan_manifests, request, Ctx};
use crate::error::{Error, Result};
use crate::resources::{parse_targets, ApiResource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE [NAME...] or TYPE/NAME...
    pub resources: Vec<String>,
    #[command(flatten)]
    pub selection: super::objects::Selection,
    /// Seconds given to the object to terminate gracefully (-1: the object's own)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Signal the objects for immediate shutdown (same as --grace-period=1)
    #[arg(long)]
    pub now: bool,
    /// Remove the objects from the API at once, bypassing graceful deletion
    #[arg(long)]
    pub force: bool,
    /// Dependents: background, foreground or orphan
    #[arg(long, default_value = "background")]
    pub cascade: String,
    /// Treat "not found" as a successful delete
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the objects are gone before returning
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub wait: bool,
    /// How long to wait for the deletion (0: no deadline)
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

/// One object to delete.
struct Victim {
    resource: ApiResource,
    namespace: String,
    name: String,
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let timeout = parse_duration(&args.timeout).map_err(Error::Msg)?;
    let policy = match args.cascade.as_str() {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => {
            return Err(Error::msg(format!(
                "invalid cascade value ({other}). Must be \"background\", \"foreground\", or \"orphan\""
            )))
        }
    };
    let mut grace = args.grace_period;
    if args.now {
        if grace != -1 {
            return Err(Error::msg("--now and --grace-period cannot be specified together"));
        }
        grace = 1;
    }
    if grace == 0 && !args.force {
        // kubectl keeps --grace-period=0 without --force from meaning immediate deletion.
        grace = 1;
    }
    if args.force && grace < 0 {
        grace = 0;
    }
    if args.force && grace == 0 {
        writeln!(
            ctx.err,
            "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely."
        )?;
    }

    let mut errors = Vec::new();
    let mut victims = Vec::new();
    if !args.selection.files.is_empty() {
        if !args.resources.is_empty() {
            return Err(Error::msg(
                "there is no need to specify a resource type as a separate argument when passing arguments with -f",
            ));
        }
        let (planned, errs) = plan_manifests(ctx, &args.selection.files, args.selection.recursive).await?;
        errors.extend(errs);
        for p in planned {
            match p.name {
                Some(name) if !name.is_empty() => {
                    victims.push(Victim { resource: p.resource, namespace: p.namespace, name })
                }
                _ => errors.push(Error::msg(format!("resource name may not be empty (from \"{}\")", p.source))),
            }
        }
    } else {
        if args.resources.is_empty() {
            return Err(Error::msg("You must provide one or more resources by argument or filename."));
        }
        let disc = ctx.discovery().await?.clone();
        let targets = parse_targets(&disc, &args.resources)?;
        for t in targets.targets {
            if !t.names.is_empty() {
                if args.selection.all || args.selection.selector.is_some() {
                    return Err(Error::msg("name cannot be provided when a selector is specified"));
                }
                for name in t.names {
                    victims.push(Victim { resource: t.resource.clone(), namespace: ctx.namespace.clone(), name });
                }
                continue;
            }
            for item in ctx.select(&t.resource, args.selection.all, args.selection.selector.as_ref()).await? {
                let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                victims.push(Victim { resource: t.resource.clone(), namespace: ctx.namespace.clone(), name });
            }
        }
        if victims.is_empty() {
            writeln!(ctx.err, "No resources found")?;
            return Ok(());
        }
    }

    let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
    if grace >= 0 {
        options["gracePeriodSeconds"] = json!(grace);
    }
    options["propagationPolicy"] = json!(policy);
    let operation = if grace == 0 { "force deleted" } else { "deleted" };
    let mut deleted: Vec<(Victim, Option<String>)> = Vec::new();
    for v in victims {
        let mut path = v.resource.item(&v.namespace, &v.name);
        if grace >= 0 {
            path.push_str(&format!("?gracePeriodSeconds={grace}"));
        }
        match ctx.json(request(Method::DELETE, &path, json_body(&options))).await {
            Ok(reply) => {
                writeln!(ctx.out, "{} \"{}\" {operation}", v.resource.kind_label(), v.name)?;
                let uid = uid_of(&reply);
                deleted.push((v, uid));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e @ Error::Status(_)) => errors.push(e),
            Err(e) => return Err(e),
        }
    }
    ctx.out.flush()?;
    if args.wait {
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        for (v, uid) in &deleted {
            if let Err(e) = wait_gone(ctx, v, uid.as_deref(), deadline).await {
                errors.push(e);
            }
        }
    }
    super::finish(ctx, errors)
}

fn uid_of(obj: &Value) -> Option<String> {
    if obj["kind"] == "Status" {
        return obj["details"]["uid"].as_str().map(str::to_string);
    }
    obj["metadata"]["uid"].as_str().map(str::to_string)
}

/// Polls every 250 ms until GET says NotFound (or returns another object of the same name).
async fn wait_gone(ctx: &mut Ctx, v: &Victim, uid: Option<&str>, deadline: Option<Instant>) -> Result<()> {
    let path = v.resource.item(&v.namespace, &v.name);
    loop {
        match ctx.get_json(&path, false).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
            Ok(obj) => {
                if let (Some(old), Some(now)) = (uid, obj["metadata"]["uid"].as_str()) {
                    if old != now {
                        return Ok(());
                    }
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::msg(format!("timed out waiting for the condition on {}/{}", v.resource.name, v.name)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
