//! `skerry logs`: copies a container's log to stdout as it arrives.

use std::io::Write;

use http_body_util::BodyExt;
use hyper::Method;

use super::{request, Ctx};
use crate::client::{self, encode};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// POD or pod/POD
    pub pod: String,
    /// The container (instead of -c)
    pub container_arg: Option<String>,
    /// The container to print the logs of
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming the log
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the log of the previous instance of the container
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Lines of recent log to show (-1: all)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its timestamp
    #[arg(long)]
    pub timestamps: bool,
}

/// The log path for the arguments.
pub fn log_path(ns: &str, pod: &str, args: &Args) -> String {
    let mut q = Vec::new();
    if let Some(c) = args.container.as_ref().or(args.container_arg.as_ref()) {
        q.push(format!("container={}", encode(c)));
    }
    if args.follow {
        q.push("follow=true".into());
    }
    if args.previous {
        q.push("previous=true".into());
    }
    if args.tail >= 0 {
        q.push(format!("tailLines={}", args.tail));
    }
    if args.timestamps {
        q.push("timestamps=true".into());
    }
    let query = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
    format!("/api/v1/namespaces/{ns}/pods/{pod}/log{query}")
}

/// Accepts `NAME`, `pod/NAME` and `pods/NAME`.
pub fn pod_name(arg: &str) -> Result<&str> {
    match arg.split_once('/') {
        None => Ok(arg),
        Some(("pod" | "pods" | "po", name)) if !name.is_empty() => Ok(name),
        Some((kind, _)) => Err(Error::msg(format!("cannot get the logs of a \"{kind}\": only pods are supported"))),
    }
}

pub async fn run(ctx: &mut Ctx, mut args: Args) -> Result<()> {
    let pod = pod_name(&args.pod)?.to_string();
    if args.container.is_none() && args.container_arg.is_none() {
        args.container = ctx.default_container(&pod).await?;
    }
    let path = log_path(&ctx.namespace, &pod, &args);
    let resp = ctx.call(request(Method::GET, &path, client::empty())).await?;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            ctx.out.write_all(&data)?;
            ctx.out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: Args,
    }

    #[test]
    fn paths() {
        let a = T::parse_from(["t", "web", "-c", "app", "-f", "-p", "--tail", "10", "--timestamps"]).a;
        assert_eq!(
            log_path("default", "web", &a),
            "/api/v1/namespaces/default/pods/web/log?container=app&follow=true&previous=true&tailLines=10&timestamps=true"
        );
        let a = T::parse_from(["t", "web"]).a;
        assert_eq!(log_path("ns", "web", &a), "/api/v1/namespaces/ns/pods/web/log");
        assert_eq!(pod_name("pod/web").unwrap(), "web");
        assert!(pod_name("deploy/web").is_err());
    }
}
