//! Deployments: a ReplicaSet per pod template, rolled from old to new (work in progress).
