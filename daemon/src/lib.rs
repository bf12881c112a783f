

pub mod agent;
pub mod api;
pub mod config;
pub mod controllers;
pub mod daemon;
pub mod events;
pub mod net;
pub mod objects;
pub mod runtime;
pub mod store;
