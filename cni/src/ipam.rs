//! Host-local IPAM: which address each (container, interface) holds, over a small [`Store`].
//!
//! The allocation rules are pure functions over [`Store`] ([`allocate`], [`release`],
//! [`find`], [`gc`]); [`FileStore`] keeps the state on disk in host-local's layout so the
//! reference `host-local` plugin reads the same directory:
//!
//! ```text
//! <dataDir>/<network>/10.42.0.5          "containerID\nifname"
//! <dataDir>/<network>/last_reserved_ip.0 "10.42.0.5"
//! <dataDir>/<network>/lock               flock'ed for the whole operation
//! ```
//!
//! Invariant: an address is handed out only while the caller holds the store's lock
//! ([`FileStore::lock`]), and an address file is created with `O_EXCL`, so two plugin
//! processes never return the same address.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::IpamConf;

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no IP addresses available in range {subnet}")]
    Exhausted { subnet: String },
    #[error("IPAM state file {path} is corrupt ({detail}); {fix}")]
    Corrupt { path: PathBuf, detail: String, fix: &'static str },
    #[error("IPAM state {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IpamError + '_ {
    move |source| IpamError::Io { path: path.to_owned(), source }
}

/// Who holds an address. An empty `ifname` comes from old host-local files that stored the
/// container ID only; it matches every interface of that container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    pub fn new(container_id: &str, ifname: &str) -> Owner {
        Owner { container_id: container_id.to_owned(), ifname: ifname.to_owned() }
    }

    fn matches(&self, other: &Owner) -> bool {
        self.container_id == other.container_id
            && (self.ifname.is_empty() || other.ifname.is_empty() || self.ifname == other.ifname)
    }
}

/// The state one network's allocator needs. Callers hold whatever lock the store needs.
pub trait Store {
    fn last_reserved(&self) -> Result<Option<Ipv4Addr>, IpamError>;
    fn set_last_reserved(&mut self, ip: Ipv4Addr) -> Result<(), IpamError>;
    /// Records `ip` for `owner`; `Ok(false)` when the address is already taken.
    fn reserve(&mut self, ip: Ipv4Addr, owner: &Owner) -> Result<bool, IpamError>;
    /// Frees `ip`; freeing a free address is not an error.
    fn release(&mut self, ip: Ipv4Addr) -> Result<(), IpamError>;
    fn allocations(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError>;
}

/// The address of `owner`, if it has one.
pub fn find(store: &impl Store, owner: &Owner) -> Result<Option<Ipv4Addr>, IpamError> {
    Ok(store.allocations()?.into_iter().find(|(_, o)| o.matches(owner)).map(|(ip, _)| ip))
}

/// Hands `owner` an address: the one it already holds (ADD is idempotent), or the next free
/// one after the last reserved, round robin over the range, never the network, broadcast or
/// gateway address. Returns the address and whether it was newly reserved.
pub fn allocate(store: &mut impl Store, conf: &IpamConf, owner: &Owner) -> Result<(Ipv4Addr, bool), IpamError> {
    if let Some(ip) = find(store, owner)? {
        if in_range(conf, ip) {
            return Ok((ip, false));
        }
        // The range changed since this allocation; move the owner into the new one.
        store.release(ip)?;
    }
    let (start, end) = (u32::from(conf.range_start), u32::from(conf.range_end));
    let first = match store.last_reserved()? {
        Some(last) if (start..end).contains(&u32::from(last)) => u32::from(last) + 1,
        _ => start,
    };
    let candidates = (first..=end).chain(start..first);
    for candidate in candidates.map(Ipv4Addr::from) {
        if !in_range(conf, candidate) {
            continue;
        }
        if store.reserve(candidate, owner)? {
            store.set_last_reserved(candidate)?;
            return Ok((candidate, true));
        }
    }
    Err(IpamError::Exhausted { subnet: conf.subnet.to_string() })
}

fn in_range(conf: &IpamConf, ip: Ipv4Addr) -> bool {
    conf.subnet.contains(ip)
        && ip >= conf.range_start
        && ip <= conf.range_end
        && ip != conf.gateway
        && ip != conf.subnet.network
        && ip != conf.subnet.broadcast()
}

/// Frees every address of `owner`; returns what was freed (empty when nothing was held).
pub fn release(store: &mut impl Store, owner: &Owner) -> Result<Vec<Ipv4Addr>, IpamError> {
    let mut freed = Vec::new();
    for (ip, held_by) in store.allocations()? {
        if held_by.matches(owner) {
            store.release(ip)?;
            freed.push(ip);
        }
    }
    Ok(freed)
}

/// Frees every address whose owner is not in `valid`; returns what was freed.
pub fn gc(store: &mut impl Store, valid: &[Owner]) -> Result<Vec<Ipv4Addr>, IpamError> {
    let mut freed = Vec::new();
    for (ip, held_by) in store.allocations()? {
        if !valid.iter().any(|v| v.matches(&held_by)) {
            store.release(ip)?;
            freed.push(ip);
        }
    }
    Ok(freed)
}

/// One network's state directory, `<dataDir>/<network>`.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Creates the directory if needed.
    pub fn open(data_dir: &Path, network: &str) -> Result<FileStore, IpamError> {
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(FileStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the network's exclusive lock (blocking) for the life of the returned store.
    pub fn lock(&self) -> Result<LockedStore<'_>, IpamError> {
        let path = self.dir.join(LOCK);
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| IpamError::Io { path: path.clone(), source: io::Error::from(errno) })?;
        Ok(LockedStore { dir: &self.dir, _lock: lock })
    }
}

/// A [`FileStore`] whose lock is held; dropping it unlocks.
pub struct LockedStore<'a> {
    dir: &'a Path,
    _lock: Flock<File>,
}

/// Parses an address file: "containerID\nifname" (also "\r\n", and a bare container ID as
/// older host-local versions wrote).
fn parse_owner(path: &Path, text: &str) -> Result<Owner, IpamError> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let corrupt = |detail: String| IpamError::Corrupt {
        path: path.to_owned(),
        detail,
        fix: "if no pod uses this address, delete the file to free it",
    };
    match lines.as_slice() {
        [id] => Ok(Owner::new(id, "")),
        [id, ifname] => Ok(Owner::new(id, ifname)),
        [] => Err(corrupt("it is empty; expected \"containerID\\nifname\"".into())),
        _ => Err(corrupt(format!("expected \"containerID\\nifname\", found {} lines", lines.len()))),
    }
}

impl Store for LockedStore<'_> {
    fn last_reserved(&self) -> Result<Option<Ipv4Addr>, IpamError> {
        let path = self.dir.join(LAST_RESERVED);
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                text.trim().parse().map(Some).map_err(|_| IpamError::Corrupt {
                    path,
                    detail: format!("{:?} is not an IPv4 address", text.trim()),
                    fix: "delete it; allocation then restarts from the start of the range",
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn set_last_reserved(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.dir.join(LAST_RESERVED);
        let tmp = self.dir.join(format!(".{LAST_RESERVED}.tmp"));
        fs::write(&tmp, ip.to_string()).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    fn reserve(&mut self, ip: Ipv4Addr, owner: &Owner) -> Result<bool, IpamError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let written = file
            .write_all(format!("{}\n{}", owner.container_id, owner.ifname).as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(io_err(&path)(e));
        }
        Ok(true)
    }

    fn release(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn allocations(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.dir).map_err(io_err(self.dir))? {
            let entry = entry.map_err(io_err(self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let path = entry.path();
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            out.push((ip, parse_owner(&path, &String::from_utf8_lossy(&bytes))?));
        }
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::config::Subnet;

    #[derive(Default)]
    struct MemStore {
        last: Option<Ipv4Addr>,
        held: BTreeMap<Ipv4Addr, Owner>,
    }

    impl Store for MemStore {
        fn last_reserved(&self) -> Result<Option<Ipv4Addr>, IpamError> {
            Ok(self.last)
        }
        fn set_last_reserved(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
            self.last = Some(ip);
            Ok(())
        }
        fn reserve(&mut self, ip: Ipv4Addr, owner: &Owner) -> Result<bool, IpamError> {
            if self.held.contains_key(&ip) {
                return Ok(false);
            }
            self.held.insert(ip, owner.clone());
            Ok(true)
        }
        fn release(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
            self.held.remove(&ip);
            Ok(())
        }
        fn allocations(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
            Ok(self.held.iter().map(|(ip, o)| (*ip, o.clone())).collect())
        }
    }

    fn conf(subnet: &str) -> IpamConf {
        let subnet = Subnet::parse(subnet).unwrap();
        IpamConf {
            subnet,
            range_start: Ipv4Addr::from(u32::from(subnet.network) + 1),
            range_end: Ipv4Addr::from(u32::from(subnet.broadcast()) - 1),
            gateway: Ipv4Addr::from(u32::from(subnet.network) + 1),
            data_dir: PathBuf::from("/unused"),
            routes: vec![],
        }
    }

    fn owner(n: usize) -> Owner {
        Owner::new(&format!("c{n}"), "eth0")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn sequential_allocation_skips_the_gateway() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/24"));
        assert_eq!(allocate(&mut s, &c, &owner(1)).unwrap(), (ip("10.42.0.2"), true));
        assert_eq!(allocate(&mut s, &c, &owner(2)).unwrap(), (ip("10.42.0.3"), true));
    }

    #[test]
    fn a_gateway_inside_the_range_is_skipped() {
        let mut c = conf("10.42.0.0/24");
        c.gateway = ip("10.42.0.3");
        let mut s = MemStore::default();
        let got: Vec<_> = (0..3).map(|n| allocate(&mut s, &c, &owner(n)).unwrap().0).collect();
        assert_eq!(got, [ip("10.42.0.1"), ip("10.42.0.2"), ip("10.42.0.4")]);
    }

    #[test]
    fn a_29_has_five_pod_addresses_then_exhausts() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/29"));
        let got: Vec<_> = (0..5).map(|n| allocate(&mut s, &c, &owner(n)).unwrap().0).collect();
        assert_eq!(got, ["10.42.0.2", "10.42.0.3", "10.42.0.4", "10.42.0.5", "10.42.0.6"].map(ip));
        let err = allocate(&mut s, &c, &owner(9)).unwrap_err();
        assert_eq!(err.to_string(), "no IP addresses available in range 10.42.0.0/29");
    }

    #[test]
    fn network_and_broadcast_are_never_handed_out_even_if_the_range_says_so() {
        let mut c = conf("10.42.0.0/30");
        c.range_start = ip("10.42.0.0");
        c.range_end = ip("10.42.0.3");
        let mut s = MemStore::default();
        assert_eq!(allocate(&mut s, &c, &owner(1)).unwrap().0, ip("10.42.0.2"));
        assert!(matches!(allocate(&mut s, &c, &owner(2)), Err(IpamError::Exhausted { .. })));
    }

    #[test]
    fn released_addresses_are_reused_after_wrapping_round() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/29"));
        for n in 0..5 {
            allocate(&mut s, &c, &owner(n)).unwrap();
        }
        assert_eq!(release(&mut s, &owner(1)).unwrap(), [ip("10.42.0.3")]);
        assert!(release(&mut s, &owner(1)).unwrap().is_empty(), "release is idempotent");
        assert_eq!(allocate(&mut s, &c, &owner(7)).unwrap(), (ip("10.42.0.3"), true));
    }

    #[test]
    fn allocation_continues_after_the_last_reserved() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/24"));
        allocate(&mut s, &c, &owner(1)).unwrap();
        allocate(&mut s, &c, &owner(2)).unwrap();
        release(&mut s, &owner(1)).unwrap();
        // .2 is free again, but host-local style round robin goes on to .4 first.
        assert_eq!(allocate(&mut s, &c, &owner(3)).unwrap().0, ip("10.42.0.4"));
    }

    #[test]
    fn re_add_returns_the_same_address() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/24"));
        let (first, fresh) = allocate(&mut s, &c, &owner(1)).unwrap();
        assert!(fresh);
        assert_eq!(allocate(&mut s, &c, &owner(1)).unwrap(), (first, false));
        let other_if = Owner::new("c1", "net1");
        assert_ne!(allocate(&mut s, &c, &other_if).unwrap().0, first);
    }

    #[test]
    fn gc_frees_what_is_not_valid() {
        let (mut s, c) = (MemStore::default(), conf("10.42.0.0/24"));
        for n in 0..3 {
            allocate(&mut s, &c, &owner(n)).unwrap();
        }
        let freed = gc(&mut s, &[owner(1)]).unwrap();
        assert_eq!(freed, [ip("10.42.0.2"), ip("10.42.0.4")]);
        assert_eq!(find(&s, &owner(1)).unwrap(), Some(ip("10.42.0.3")));
    }

    #[test]
    fn file_store_layout_matches_host_local() {
        let dir = tempfile::tempdir().unwrap();
        let fs_store = FileStore::open(dir.path(), "net").unwrap();
        let c = conf("10.42.0.0/24");
        let mut s = fs_store.lock().unwrap();
        allocate(&mut s, &c, &Owner::new("abc", "eth0")).unwrap();
        let net = dir.path().join("net");
        assert_eq!(fs::read_to_string(net.join("10.42.0.2")).unwrap(), "abc\neth0");
        assert_eq!(fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(), "10.42.0.2");
        assert!(net.join("lock").exists());
        // host-local's "\r\n" files and bare-ID files are understood.
        fs::write(net.join("10.42.0.9"), "def\r\neth1").unwrap();
        fs::write(net.join("10.42.0.10"), "ghi").unwrap();
        assert_eq!(find(&s, &Owner::new("def", "eth1")).unwrap(), Some(ip("10.42.0.9")));
        assert_eq!(find(&s, &Owner::new("ghi", "eth0")).unwrap(), Some(ip("10.42.0.10")));
        assert_eq!(release(&mut s, &Owner::new("abc", "eth0")).unwrap(), [ip("10.42.0.2")]);
        assert!(!net.join("10.42.0.2").exists());
    }

    #[test]
    fn corrupt_files_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let fs_store = FileStore::open(dir.path(), "net").unwrap();
        let c = conf("10.42.0.0/24");
        let net = dir.path().join("net");
        fs::write(net.join("last_reserved_ip.0"), "garbage").unwrap();
        let err = allocate(&mut fs_store.lock().unwrap(), &c, &owner(1)).unwrap_err().to_string();
        assert!(err.contains(&net.join("last_reserved_ip.0").display().to_string()), "{err}");
        assert!(err.contains("delete it"), "{err}");
        fs::remove_file(net.join("last_reserved_ip.0")).unwrap();
        fs::write(net.join("10.42.0.7"), "").unwrap();
        let err = allocate(&mut fs_store.lock().unwrap(), &c, &owner(1)).unwrap_err().to_string();
        assert!(err.contains("10.42.0.7 is corrupt"), "{err}");
        assert!(err.contains("delete the file"), "{err}");
    }

    #[test]
    fn concurrent_allocations_from_many_threads_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let c = conf("10.42.0.0/24");
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (path, c) = (dir.path().to_owned(), c.clone());
                std::thread::spawn(move || {
                    (0..8)
                        .map(|i| {
                            // Each call opens its own store and lock file, as separate processes do.
                            let store = FileStore::open(&path, "net").unwrap();
                            let mut locked = store.lock().unwrap();
                            allocate(&mut locked, &c, &owner(t * 100 + i)).unwrap().0
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        let distinct: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), 128);
        assert_eq!(distinct.len(), 128, "an address was handed out twice");
        assert!(!distinct.contains(&c.gateway));
    }
}
