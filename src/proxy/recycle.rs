//! Header maps kept for the next request instead of freed.
//!
//! Why: every order builds two `HeaderMap`s on the HTTP/1.1 paths (the
//! request's, read by [`crate::proxy::http1::server`], and the factory's
//! answer's, read by [`crate::proxy::http1::client`]). With the handful of
//! headers an order carries, each map's entry table is about 1.2 KiB:
//! above glibc's per-thread cache (1 KiB), so every one of them took
//! malloc's slow path (bin search, consolidation) and its free did too. A map whose request or
//! answer is done is cleared (its values dropped, its tables kept) and put
//! on a short per-thread list; the next head is parsed into it.
//!
//! Bounded: at most 256 maps per thread, and only maps of the usual
//! size (a map grown by a request with many headers is freed as usual).

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: enough for the requests in flight on one worker
/// at the benchmark's 256 connections to find one.
const KEEP: usize = 256;

/// Larger maps are not kept (a rare request with many headers).
const MAX_CAPACITY: usize = 24;

thread_local! {
    static FREE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map for at least `headers` headers: a kept one when there is
/// one large enough.
pub fn header_map(headers: usize) -> HeaderMap {
    let kept = FREE.try_with(|free| free.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(map) if map.capacity() >= headers => map,
        _ => HeaderMap::with_capacity(headers),
    }
}

/// Keeps `map` for a later [`header_map`] (or frees it when the list is full).
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > MAX_CAPACITY || map.capacity() == 0 {
        return;
    }
    map.clear();
    let _ = FREE.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_capacity() {
        let mut map = header_map(7);
        let capacity = map.capacity();
        map.insert("x-a", HeaderValue::from_static("1"));
        recycle(map);
        let again = header_map(7);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        // A larger request than any kept map gets a new one.
        assert!(header_map(100).capacity() >= 100);
    }
}
