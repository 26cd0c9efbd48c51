//! The proxy: listener, tower stack, pooled client.

pub mod body;
pub mod client;
