//! [`Attempted`]: an error that left the retry layer, with its try count.

use crate::boxed::BoxError;

/// Wraps the last try's error with how many tries reached the factory, so
/// the sidecar's own answer can carry `x-sidecar-attempts` too. It adds no
/// meaning of its own: it displays as the error it wraps, which is its
/// `source()`, so every cause-chain walk (classification, `error::answer`)
/// sees through it.
#[derive(Debug)]
pub struct Attempted {
    pub attempts: u32,
    pub source: BoxError,
}

impl std::fmt::Display for Attempted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.source, f)
    }
}

impl std::error::Error for Attempted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The try count recorded by the retry layer anywhere in `err`'s chain.
pub fn attempts_of(err: &(dyn std::error::Error + 'static)) -> Option<u32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(a) = e.downcast_ref::<Attempted>() {
            return Some(a.attempts);
        }
        cur = e.source();
    }
    None
}
