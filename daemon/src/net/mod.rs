//! Node networking: CNI invocation for pod sandboxes (and, with the services work, the
//! nftables proxy and cluster DNS).
//!
//! Owns the kernel's network state for pods: the only module that runs CNI plugins or touches
//! nftables. Invariant: every attachment ADDed is DELed before its namespace goes, and GC at
//! start frees attachments whose pods are gone. Boundary: the agent asks for a pod's network
//! with [`cni::Cni::add`] and returns it with [`cni::Cni::del`].

pub mod cni;
pub mod dns;
pub mod hostports;
pub mod nft;
pub mod nodeip;
pub mod proxy;
pub mod services;
