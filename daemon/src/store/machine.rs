//! The state machine: applies an ordered batch of log entries `(index, Command)` in one SQLite
//! transaction that also records the last applied index, so a batch applied twice changes
//! nothing the second time. Each command gets an *answer* (applied, or a [`Rejection`] such as
//! already-exists or a taken NodePort) that is part of the replicated outcome; anything else
//! that goes wrong (SQLite I/O, a corrupt row) is a fault that fails the whole batch.
//!
//! Pure of networking and clocks: everything non-deterministic (UIDs, timestamps) is in the
//! command, so every server that applies the same log reaches the same state and revisions.

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::claims::{self, Claim};
use super::mirror;
use super::{schema, Applied, Command, Event, EventType, Rejection, StoreError};
use crate::objects::meta;

/// A command's outcome, as the proposer hands it back.
pub type Answer = Result<Applied, Rejection>;

/// A command's outcome inside the state machine, with the changes it made (one, except for
/// the mirror's commands): the outer error is a fault.
type Outcome = Result<Result<(Applied, Vec<Event>), Rejection>, StoreError>;

/// Applies `entries` (strictly increasing indexes) in one transaction, with `state` (the log's
/// own bookkeeping, such as Raft's last applied log id and membership) written in the same
/// transaction. An entry without a command (Raft's blank and membership entries) only advances
/// the applied index and gets no answer. Entries at or below the applied index are answered
/// [`Rejection::Replayed`] and change nothing. Returns the answers in order and the events to
/// hand to watchers once the transaction is committed.
pub(super) fn apply_batch(
    conn: &mut Connection,
    entries: Vec<(u64, Option<Command>)>,
    state: &[(String, String)],
) -> Result<(Vec<Option<Answer>>, Vec<Event>), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut applied_index = schema::meta(&tx, "applied")?;
    let mut answers = Vec::with_capacity(entries.len());
    let mut events = Vec::new();
    for (index, command) in entries {
        if index <= applied_index {
            answers.push(Some(Err(Rejection::Replayed { index })));
            continue;
        }
        let Some(command) = command else {
            answers.push(None);
            applied_index = index;
            continue;
        };
        tx.execute_batch("SAVEPOINT command")?;
        match apply_command(&tx, command)? {
            Ok((applied, changes)) => {
                tx.execute_batch("RELEASE command")?;
                answers.push(Some(Ok(applied)));
                events.extend(changes);
            }
            Err(rejection) => {
                tx.execute_batch("ROLLBACK TO command; RELEASE command")?;
                answers.push(Some(Err(rejection)));
            }
        }
        applied_index = index;
    }
    schema::set_meta(&tx, "applied", applied_index)?;
    for (key, value) in state {
        schema::set_log_state(&tx, key, value)?;
    }
    tx.commit()?;
    Ok((answers, events))
}

fn apply_command(tx: &Connection, command: Command) -> Outcome {
    let revision = schema::revision(tx)? + 1;
    let (resource, kind, object) = match command {
        Command::Mirror { resource, object, position } => {
            return Ok(Ok(mirror::mirror(tx, &resource, object, position)?));
        }
        Command::Unmirror { resource, namespace, name, position } => {
            return Ok(Ok(mirror::unmirror(tx, &resource, &namespace, &name, position)?));
        }
        Command::MirrorSet { resource, objects, position } => {
            return Ok(Ok(mirror::mirror_set(tx, &resource, objects, position)?));
        }
        Command::Create { resource, mut object } => {
            let (ns, name) = (meta::namespace(&object).to_string(), meta::name(&object).to_string());
            if get(tx, &resource, &ns, &name)?.is_some() {
                return Ok(Err(Rejection::AlreadyExists { resource, name }));
            }
            if let Err(r) = namespace_open(tx, &ns)? {
                return Ok(Err(r));
            }
            meta::set(&mut object, "resourceVersion", revision.to_string());
            if let Err(r) = reserve(tx, &resource, &object)? {
                return Ok(Err(r));
            }
            write_object(tx, &resource, &object, revision)?;
            (resource, EventType::Added, object)
        }
        Command::Update { resource, mut object } => {
            let (ns, name) = (meta::namespace(&object).to_string(), meta::name(&object).to_string());
            let Some(current) = get(tx, &resource, &ns, &name)? else {
                return Ok(Err(Rejection::NotFound { resource, name }));
            };
            let expected = meta::resource_version(&object);
            if !expected.is_empty() && expected != meta::resource_version(&current) {
                return Ok(Err(Rejection::Conflict { resource, name }));
            }
            meta::set(&mut object, "resourceVersion", revision.to_string());
            if let Err(r) = reserve(tx, &resource, &object)? {
                return Ok(Err(r));
            }
            write_object(tx, &resource, &object, revision)?;
            (resource, EventType::Modified, object)
        }
        Command::UpdateStatus { resource, namespace, name, uid, resource_version, status } => {
            let Some(mut current) = get(tx, &resource, &namespace, &name)? else {
                return Ok(Err(Rejection::NotFound { resource, name }));
            };
            let stale_uid = uid.as_deref().is_some_and(|u| u != meta::uid(&current));
            let stale_rv = resource_version.as_deref().is_some_and(|rv| rv != meta::resource_version(&current));
            if stale_uid || stale_rv {
                return Ok(Err(Rejection::Conflict { resource, name }));
            }
            current["status"] = status;
            meta::set(&mut current, "resourceVersion", revision.to_string());
            write_object(tx, &resource, &current, revision)?;
            (resource, EventType::Modified, current)
        }
        Command::Bind { namespace, name, uid, node, at } => {
            let resource = crate::objects::resource::PODS.key();
            let Some(mut pod) = get(tx, &resource, &namespace, &name)? else {
                return Ok(Err(Rejection::NotFound { resource, name }));
            };
            if meta::uid(&pod) != uid {
                return Ok(Err(Rejection::Conflict { resource, name }));
            }
            if let Some(bound) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                return Ok(Err(Rejection::AlreadyBound { name, node: bound.to_string() }));
            }
            if meta::is_deleting(&pod) {
                return Ok(Err(Rejection::Conflict { resource, name }));
            }
            pod["spec"]["nodeName"] = json!(node);
            let mut conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.retain(|c| c["type"] != "PodScheduled");
            conditions.push(
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": at}),
            );
            pod["status"]["conditions"] = json!(conditions);
            meta::set(&mut pod, "resourceVersion", revision.to_string());
            write_object(tx, &resource, &pod, revision)?;
            (resource, EventType::Modified, pod)
        }
        Command::Delete { resource, namespace, name, uid } => {
            let Some(mut current) = get(tx, &resource, &namespace, &name)? else {
                return Ok(Err(Rejection::NotFound { resource, name }));
            };
            if uid.as_deref().is_some_and(|u| u != meta::uid(&current)) {
                return Ok(Err(Rejection::Conflict { resource, name }));
            }
            tx.execute(
                "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                params![resource, namespace, name],
            )?;
            release(tx, &resource, &namespace, &name)?;
            meta::set(&mut current, "resourceVersion", revision.to_string());
            (resource, EventType::Deleted, current)
        }
    };
    let event = record(tx, resource, kind, object)?;
    debug_assert_eq!(event.revision, revision);
    Ok(Ok((Applied { revision, object: event.object.clone() }, vec![event])))
}

/// Gives a change the next revision and writes it to the change log; returns the event for
/// watchers.
pub(super) fn record(tx: &Connection, resource: String, kind: EventType, object: Value) -> Result<Event, StoreError> {
    let revision = schema::revision(tx)? + 1;
    tx.execute(
        "INSERT INTO changes (revision, resource, type, data) VALUES (?1, ?2, ?3, ?4)",
        params![revision as i64, resource, kind.as_str(), serde_json::to_string(&object)?],
    )?;
    schema::set_meta(tx, "revision", revision)?;
    Ok(Event { revision, resource, kind, object })
}

/// A new object's namespace must exist and not be terminating (checked here, in the same
/// transaction as the write, so a namespace deleted meanwhile cannot be left with an orphan).
fn namespace_open(tx: &Connection, namespace: &str) -> Result<Result<(), Rejection>, StoreError> {
    if namespace.is_empty() {
        return Ok(Ok(()));
    }
    let key = crate::objects::resource::NAMESPACES.key();
    Ok(match get(tx, &key, "", namespace)? {
        None => Err(Rejection::NotFound { resource: key, name: namespace.to_string() }),
        Some(ns) if meta::is_deleting(&ns) => Err(Rejection::Forbidden {
            message: format!("unable to create new content in namespace {namespace} because it is being terminated"),
        }),
        Some(_) => Ok(()),
    })
}

/// Replaces the reservations of `object` with the values it claims now; a value another object
/// holds is a 422 naming that owner.
fn reserve(tx: &Connection, resource: &str, object: &Value) -> Result<Result<(), Rejection>, StoreError> {
    let (ns, name) = (meta::namespace(object), meta::name(object));
    release(tx, resource, ns, name)?;
    for claim in claims::claims(resource, object) {
        if let Some(owner) = holder(tx, &claim)? {
            let (value, reason) = claim.conflict(&owner);
            return Ok(Err(Rejection::Invalid {
                kind: object["kind"].as_str().unwrap_or(resource).to_string(),
                name: name.to_string(),
                field: claim.field,
                value,
                reason,
            }));
        }
        tx.execute(
            "INSERT INTO reservations (space, value, resource, namespace, name) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![claim.space, claim.value, resource, ns, name],
        )?;
    }
    Ok(Ok(()))
}

fn holder(tx: &Connection, claim: &Claim) -> Result<Option<String>, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT resource, namespace, name FROM reservations WHERE space = ?1 AND value = ?2")?;
    let mut rows = stmt.query(params![claim.space, claim.value])?;
    Ok(match rows.next()? {
        Some(row) => {
            Some(claims::owner(&row.get::<_, String>(0)?, &row.get::<_, String>(1)?, &row.get::<_, String>(2)?))
        }
        None => None,
    })
}

pub(super) fn release(tx: &Connection, resource: &str, namespace: &str, name: &str) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM reservations WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        params![resource, namespace, name],
    )?;
    Ok(())
}

/// Rebuilds the reservations from the stored objects (an upgraded data dir, a restored
/// snapshot of an older release).
pub(super) fn rebuild_reservations(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM reservations", [])?;
    let mut stmt = conn.prepare("SELECT resource, data FROM objects WHERE resource IN ('services', 'nodes')")?;
    let rows: Vec<(String, String)> =
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
    for (resource, data) in rows {
        let object: Value = serde_json::from_str(&data)?;
        for claim in claims::claims(&resource, &object) {
            conn.execute(
                "INSERT OR IGNORE INTO reservations (space, value, resource, namespace, name) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![claim.space, claim.value, resource, meta::namespace(&object), meta::name(&object)],
            )?;
        }
    }
    Ok(())
}

pub(super) fn get(conn: &Connection, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT data FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3")?;
    let mut rows = stmt.query(params![resource, namespace, name])?;
    Ok(match rows.next()? {
        Some(row) => Some(serde_json::from_str(&row.get::<_, String>(0)?)?),
        None => None,
    })
}

pub(super) fn write_object(conn: &Connection, resource: &str, object: &Value, revision: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO objects (resource, namespace, name, uid, revision, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (resource, namespace, name) DO UPDATE SET uid = excluded.uid, revision = excluded.revision, data = excluded.data",
        params![
            resource,
            meta::namespace(object),
            meta::name(object),
            meta::uid(object),
            revision as i64,
            serde_json::to_string(object)?
        ],
    )?;
    Ok(())
}
