//! The command line (clap definitions), the per-invocation context, and dispatch to one module per subcommand.

pub mod annotate;
pub mod api_resources;
pub mod apply;
pub mod cluster_info;
pub mod completion;
pub mod cordon;
pub mod create;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod exec;
pub mod expose;
pub mod get;
pub mod image;
pub mod label;
pub mod logs;
pub mod objects;
pub mod patch;
pub mod rollout;
pub mod scale;
pub mod set;
pub mod taint;
pub mod token;
pub mod top;
pub mod version;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::Value;

use crate::client::{self, Body, Client};
use crate::error::{Error, Result, Status};
use crate::manifest;
use crate::output::Io;
use crate::resources::{ApiResource, Discovery};

pub const DEFAULT_SOCKET: &str = "/run/skerry/skerry.sock";

/// skerry controls a Skerry cluster through the local skerryd.
#[derive(Debug, Parser)]
#[command(name = "skerry", about = "skerry controls a Skerry cluster through the local skerryd", version)]
pub struct Cli {
    /// Path of skerryd's Unix socket
    #[arg(long, global = true, env = "SKERRY_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// If present, the namespace scope for this CLI request
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply a configuration to a resource by file name or stdin (server-side)
    Apply(apply::Args),
    /// Create a resource from a file or from stdin
    Create(create::Args),
    /// Display one or many resources
    Get(get::Args),
    /// Show details of a specific resource or group of resources
    Describe(describe::Args),
    /// Delete resources by file names, stdin, resources and names, or by resources and label selector
    Delete(delete::Args),
    /// Update the labels on a resource
    Label(label::Args),
    /// Update the annotations on a resource
    Annotate(label::Args),
    /// Update fields of a resource (strategic merge, JSON merge or JSON patch)
    Patch(patch::Args),
    /// Set a new size for a deployment, replica set or replication controller
    Scale(scale::Args),
    /// Manage the rollout of a deployment
    #[command(subcommand)]
    Rollout(rollout::Command),
    /// Set specific features on objects
    #[command(subcommand)]
    Set(set::Command),
    /// Update the taints on one or more nodes
    Taint(taint::Args),
    /// Mark node as unschedulable
    Cordon(cordon::Args),
    /// Mark node as schedulable
    Uncordon(cordon::Args),
    /// Drain node in preparation for maintenance
    Drain(drain::Args),
    /// Take a pod, deployment, replica set or replication controller and expose it as a new Service
    Expose(expose::Args),
    /// Print the logs for a container in a pod
    Logs(logs::Args),
    /// Execute a command in a container
    Exec(exec::Args),
    /// Display resource (CPU/memory) usage
    #[command(subcommand)]
    Top(top::Command),
    /// Print the client and server version information
    Version(version::Args),
    /// Display cluster information
    ClusterInfo(cluster_info::Args),
    /// Manage images on this node
    #[command(subcommand, visible_alias = "images")]
    Image(image::Command),
    /// Manage join tokens (nodes join a cluster with one)
    #[command(subcommand, visible_alias = "tokens")]
    Token(token::Command),
    /// Print the supported API resources on the server
    ApiResources(api_resources::Args),
    /// Output shell completion code for the specified shell (bash, zsh or fish)
    Completion(completion::Args),
}

/// What every command needs: the client, the namespace, the output streams.
pub struct Ctx {
    pub client: Client,
    /// The namespace to use (`-n`, or `default`).
    pub namespace: String,
    /// Whether `-n` was given (manifests with another namespace are then an error).
    pub namespace_explicit: bool,
    pub out: Box<dyn Write + Send>,
    pub err: Box<dyn Write + Send>,
    /// Whether stdout is a terminal.
    pub tty: bool,
    discovery: Option<Discovery>,
}

/// Parses arguments and runs the command; returns the exit code.
pub async fn run<I, T>(args: I, io: Io) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let Io { mut out, mut err, tty } = io;
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(err, "{text}");
                return 1;
            }
            let _ = write!(out, "{text}");
            return 0;
        }
    };
    let mut ctx = Ctx {
        client: Client::new(&cli.socket),
        namespace: cli.namespace.clone().unwrap_or_else(|| "default".to_string()),
        namespace_explicit: cli.namespace.is_some(),
        out,
        err,
        tty,
        discovery: None,
    };
    let result = dispatch(&mut ctx, cli.command).await;
    let _ = ctx.out.flush();
    let code = match result {
        Ok(()) => 0,
        Err(Error::Exit(code)) => code,
        Err(Error::Reported) => 1,
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            let _ = writeln!(ctx.err, "{e}");
            1
        }
    };
    let _ = ctx.err.flush();
    code
}

async fn dispatch(ctx: &mut Ctx, command: Command) -> Result<()> {
    match command {
        Command::Apply(a) => apply::run(ctx, a).await,
        Command::Create(a) => create::run(ctx, a).await,
        Command::Get(a) => get::run(ctx, a).await,
        Command::Describe(a) => describe::run(ctx, a).await,
        Command::Delete(a) => delete::run(ctx, a).await,
        Command::Label(a) => label::run(ctx, a, label::Field::Labels).await,
        Command::Annotate(a) => annotate::run(ctx, a).await,
        Command::Patch(a) => patch::run(ctx, a).await,
        Command::Scale(a) => scale::run(ctx, a).await,
        Command::Rollout(c) => rollout::run(ctx, c).await,
        Command::Set(c) => set::run(ctx, c).await,
        Command::Taint(a) => taint::run(ctx, a).await,
        Command::Cordon(a) => cordon::run(ctx, a, true).await,
        Command::Uncordon(a) => cordon::run(ctx, a, false).await,
        Command::Drain(a) => drain::run(ctx, a).await,
        Command::Expose(a) => expose::run(ctx, a).await,
        Command::Logs(a) => logs::run(ctx, a).await,
        Command::Exec(a) => exec::run(ctx, a).await,
        Command::Top(c) => top::run(ctx, c).await,
        Command::Version(a) => version::run(ctx, a).await,
        Command::ClusterInfo(a) => cluster_info::run(ctx, a).await,
        Command::Image(c) => image::run(ctx, c).await,
        Command::Token(c) => token::run(ctx, c).await,
        Command::ApiResources(a) => api_resources::run(ctx, a).await,
        Command::Completion(a) => completion::run(ctx, a),
    }
}

/// A request to skerryd with an empty or JSON body.
pub fn request(method: Method, path: &str, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap_or_else(|_| hyper::Uri::from_static("/"));
    req
}

/// Prints the server's table at `path` as kubectl does (`No resources found` on stderr when empty).
pub async fn print_table(ctx: &mut Ctx, path: &str) -> Result<()> {
    let v = ctx.get_json(path, true).await?;
    let table: crate::output::Table = serde_json::from_value(v)?;
    if table.rows.is_empty() {
        writeln!(ctx.err, "No resources found")?;
        return Ok(());
    }
    write!(ctx.out, "{}", crate::output::align(&table.render(&crate::output::TableOptions::default())))?;
    Ok(())
}

pub fn json_body(v: &Value) -> Body {
    client::full(serde_json::to_vec(v).expect("a JSON value always serializes"))
}

impl Ctx {
    /// Sends a request; prints the server's warnings; turns non-2xx into a Status error.
    pub async fn call(&mut self, req: Request<Body>) -> Result<Response<Incoming>> {
        let resp = self.client.send(req).await?;
        for w in client::warnings(&resp) {
            writeln!(self.err, "Warning: {w}")?;
        }
        let status = resp.status();
        if status.is_success() || status == hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let body = client::read_body(resp).await?;
        Err(Error::Status(Status::from_body(status.as_u16(), &body)))
    }

    /// Sends a request and returns the whole body.
    pub async fn bytes(&mut self, req: Request<Body>) -> Result<Bytes> {
        let resp = self.call(req).await?;
        client::read_body(resp).await
    }

    /// Sends a request and parses the JSON reply.
    pub async fn json(&mut self, req: Request<Body>) -> Result<Value> {
        let body = self.bytes(req).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// GETs a path as JSON, optionally asking for a server-rendered Table.
    pub async fn get_json(&mut self, path: &str, table: bool) -> Result<Value> {
        let mut req = request(Method::GET, path, client::empty());
        let accept = if table { client::ACCEPT_TABLE } else { "application/json" };
        req.headers_mut().insert(hyper::header::ACCEPT, hyper::header::HeaderValue::from_static(accept));
        self.json(req).await
    }

    /// The discovery document, fetched once.
    pub async fn discovery(&mut self) -> Result<&Discovery> {
        if self.discovery.is_none() {
            let v = self.get_json("/skerry/v1/resources", false).await?;
            self.discovery = Some(serde_json::from_value(v)?);
        }
        Ok(self.discovery.as_ref().expect("set above"))
    }

    /// The container `logs` and `exec` use when `-c` is not given: kubectl's rule — the
    /// `kubectl.kubernetes.io/default-container` annotation, else the first container, with a
    /// note on stderr when the pod has several.
    pub async fn default_container(&mut self, pod: &str) -> Result<Option<String>> {
        let path = format!("/api/v1/namespaces/{}/pods/{}", self.namespace, client::encode(pod));
        // If the pod cannot be read, the real request reports why.
        let Ok(obj) = self.get_json(&path, false).await else { return Ok(None) };
        let names: Vec<String> = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        if names.len() < 2 {
            return Ok(None);
        }
        let annotated = obj
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
            .and_then(Value::as_str)
            .filter(|a| names.iter().any(|n| n == a));
        let chosen = annotated.map(str::to_string).unwrap_or_else(|| names[0].clone());
        if annotated.is_none() {
            writeln!(self.err, "Defaulted container {chosen:?} out of: {}", names.join(", "))?;
        }
        Ok(Some(chosen))
    }

    /// The objects a type-only target means: all of them with `--all`, or those matching `-l`
    /// (kubectl refuses a bare type otherwise).
    pub async fn select(&mut self, resource: &ApiResource, all: bool, selector: Option<&String>) -> Result<Vec<Value>> {
        if !all && selector.is_none() {
            return Err(Error::msg("resource(s) were provided, but no name was specified"));
        }
        let mut q = Vec::new();
        if let Some(l) = selector {
            q.push(("labelSelector", l.clone()));
        }
        let path = format!("{}{}", resource.collection(Some(&self.namespace)), client::query(&q));
        let list = self.get_json(&path, false).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Prints an error line without stopping (kubectl keeps going over several objects).
    pub fn report(&mut self, e: &Error) {
        let _ = writeln!(self.err, "{e}");
    }
}

/// One manifest object ready to send: its resource, namespace and name.
#[derive(Debug, Clone)]
pub struct Planned {
    pub resource: ApiResource,
    /// The namespace (for namespaced resources) the object goes to.
    pub namespace: String,
    pub name: Option<String>,
    pub source: String,
    pub object: Value,
}

/// Loads `-f` arguments and maps each object to its resource; returns the
/// objects that can be sent and the errors (already formatted) for the rest.
pub async fn plan_manifests(ctx: &mut Ctx, files: &[String], recursive: bool) -> Result<(Vec<Planned>, Vec<Error>)> {
    let loaded = manifest::load(files, recursive).await;
    let mut errors: Vec<Error> = loaded.errors.into_iter().map(Error::Msg).collect();
    if loaded.objects.is_empty() {
        return Ok((Vec::new(), errors));
    }
    let (default_ns, explicit) = (ctx.namespace.clone(), ctx.namespace_explicit);
    let disc = ctx.discovery().await?;
    let mut planned = Vec::new();
    for m in loaded.objects {
        let meta = &m.object["metadata"];
        let name = meta["name"].as_str().map(str::to_string);
        let obj_ns = meta["namespace"].as_str().unwrap_or("").to_string();
        let api_version = m.object["apiVersion"].as_str().unwrap_or("");
        let kind = m.object["kind"].as_str().unwrap_or("");
        let Some(res) = disc.for_kind(api_version, kind) else {
            errors.push(Error::msg(format!(
                "resource mapping not found for name: \"{}\" namespace: \"{obj_ns}\" from \"{}\": no matches for kind \"{kind}\" in version \"{api_version}\"\nensure CRDs are installed first",
                name.as_deref().unwrap_or(""),
                m.source
            )));
            continue;
        };
        let namespace = if res.namespaced && !obj_ns.is_empty() {
            if explicit && obj_ns != default_ns {
                errors.push(Error::msg(format!(
                    "the namespace from the provided object \"{obj_ns}\" does not match the namespace \"{default_ns}\". You must pass '--namespace={obj_ns}' to perform this operation."
                )));
                continue;
            }
            obj_ns
        } else {
            default_ns.clone()
        };
        planned.push(Planned { resource: res.clone(), namespace, name, source: m.source, object: m.object });
    }
    Ok((planned, errors))
}

/// Prints collected errors at the end, as kubectl does, and turns them into the exit status.
pub fn finish(ctx: &mut Ctx, errors: Vec<Error>) -> Result<()> {
    if errors.is_empty() {
        return Ok(());
    }
    for e in &errors {
        ctx.report(e);
    }
    Err(Error::Reported)
}

/// The `must specify -f` error of apply and create.
pub fn require_files(files: &[String]) -> Result<()> {
    if files.is_empty() {
        return Err(Error::msg("must specify one of -f and -k"));
    }
    Ok(())
}

/// Parses durations like `30s`, `1m30s`, `500ms`, `2h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("invalid duration \"{s}\"");
    if let Ok(secs) = s.parse::<f64>() {
        return if secs >= 0.0 { Ok(std::time::Duration::from_secs_f64(secs)) } else { Err(bad()) };
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
