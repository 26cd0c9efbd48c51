//! The error type that travels through the tower stack.
//!
//! A leaf module on purpose: nearly every layer needs the alias, while only
//! the stack's top needs [`crate::error`], which in turn imports the typed
//! errors of every layer to walk the cause chain. Keeping the alias here keeps
//! the module graph acyclic.

/// The error every layer passes up: a boxed, thread-safe `std::error::Error`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
