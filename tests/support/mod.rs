//! Shared helpers for the end-to-end tests: each test binary compiles the
//! ones it uses (`mod support;`), so unused ones are not warnings.
#![allow(dead_code)]

pub mod http;
pub mod sim;
