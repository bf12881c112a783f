//! The state machine's side of an agent's mirror: objects put and removed exactly as a server
//! has them, and each stream's position recorded in the same transaction.
//!
//! A mirrored object keeps the server's `metadata.resourceVersion` (the agent writes back to
//! the server with it); the change still gets the next *local* revision, so local watchers see
//! ADDED, MODIFIED and DELETED in local revision order. No precondition is checked and no
//! unique value is reserved: the server already did both, and its order is the truth.

use std::collections::HashSet;

use rusqlite::{params, Connection};
use serde_json::Value;

use super::machine::{get, record, release, write_object};
use super::{schema, Applied, Event, EventType, MirrorPosition, StoreError};
use crate::objects::meta;

/// [`Command::Mirror`].
pub(super) fn mirror(
    tx: &Connection,
    resource: &str,
    object: Value,
    position: Option<MirrorPosition>,
) -> Result<(Applied, Vec<Event>), StoreError> {
    let events: Vec<Event> = put(tx, resource, object.clone())?.into_iter().collect();
    finish(tx, object, position, events)
}

/// [`Command::Unmirror`].
pub(super) fn unmirror(
    tx: &Connection,
    resource: &str,
    namespace: &str,
    name: &str,
    position: Option<MirrorPosition>,
) -> Result<(Applied, Vec<Event>), StoreError> {
    let removed = remove(tx, resource, namespace, name)?;
    let object = removed.as_ref().map(|e| e.object.clone()).unwrap_or(Value::Null);
    finish(tx, object, position, removed.into_iter().collect())
}

/// [`Command::MirrorSet`]: removals first, then puts, each a change of its own.
pub(super) fn mirror_set(
    tx: &Connection,
    resource: &str,
    objects: Vec<Value>,
    position: Option<MirrorPosition>,
) -> Result<(Applied, Vec<Event>), StoreError> {
    let keep: HashSet<(String, String)> =
        objects.iter().map(|o| (meta::namespace(o).to_string(), meta::name(o).to_string())).collect();
    let stored: Vec<(String, String)> = {
        let mut stmt =
            tx.prepare_cached("SELECT namespace, name FROM objects WHERE resource = ?1 ORDER BY namespace, name")?;
        let rows = stmt.query_map(params![resource], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut events = Vec::new();
    for (namespace, name) in stored.into_iter().filter(|key| !keep.contains(key)) {
        events.extend(remove(tx, resource, &namespace, &name)?);
    }
    for object in objects {
        events.extend(put(tx, resource, object)?);
    }
    finish(tx, Value::Null, position, events)
}

/// Records the stream's position with the change; the answer's revision is the store's.
fn finish(
    tx: &Connection,
    object: Value,
    position: Option<MirrorPosition>,
    events: Vec<Event>,
) -> Result<(Applied, Vec<Event>), StoreError> {
    if let Some(MirrorPosition { stream, resource_version }) = position {
        schema::set_mirror_position(tx, &stream, resource_version)?;
    }
    let revision = schema::revision(tx)?;
    Ok((Applied { revision, object }, events))
}

/// Stores `object` verbatim; `None` when it equals the stored one (no change, no event).
fn put(tx: &Connection, resource: &str, object: Value) -> Result<Option<Event>, StoreError> {
    let current = get(tx, resource, meta::namespace(&object), meta::name(&object))?;
    if current.as_ref() == Some(&object) {
        return Ok(None);
    }
    let kind = if current.is_some() { EventType::Modified } else { EventType::Added };
    // A mirror holds no reservations (the server checked uniqueness); drop any left over.
    release(tx, resource, meta::namespace(&object), meta::name(&object))?;
    let event = record(tx, resource.to_string(), kind, object)?;
    write_object(tx, resource, &event.object, event.revision)?;
    Ok(Some(event))
}

/// Removes an object; `None` when it was not there.
fn remove(tx: &Connection, resource: &str, namespace: &str, name: &str) -> Result<Option<Event>, StoreError> {
    let Some(current) = get(tx, resource, namespace, name)? else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        params![resource, namespace, name],
    )?;
    release(tx, resource, namespace, name)?;
    Ok(Some(record(tx, resource.to_string(), EventType::Deleted, current)?))
}
