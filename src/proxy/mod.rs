//! The proxy: listener, request preparation, the tower stack, the pooled client.

pub mod body;
pub mod client;
pub mod collect;
pub mod conn;
pub mod connect;
pub mod framing;
pub mod h1;
pub mod headers;
pub mod pool;
pub mod recycle;
pub mod server;
pub mod stack;
