//! The proxy stack a reload replaces while requests run.
//!
//! [`Swap`] holds the current stack in an `ArcSwap`, beside a generation
//! counter. Each connection serves through a [`SwapService`]: its own clone
//! of the stack plus the generation it was cloned at. Before each request
//! (`poll_ready`) it compares the generation: one relaxed-cost atomic load
//! on the order path, no lock, no reference count, no allocation. Only after
//! a reload does it clone the new stack, once per connection. A request
//! already in flight owns its future, built from the stack it started on,
//! and finishes there; the long-lived parts (breaker, budget, chaos, pool)
//! are shared by both stacks, so their state carries over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;

/// The current stack, replaceable.
pub struct Swap<S> {
    generation: AtomicU64,
    current: ArcSwap<S>,
}

impl<S: Clone> Swap<S> {
    pub fn new(stack: S) -> Arc<Swap<S>> {
        Arc::new(Swap {
            generation: AtomicU64::new(0),
            current: ArcSwap::from_pointee(stack),
        })
    }

    /// Makes `stack` the one every new request uses.
    pub fn store(&self, stack: S) {
        self.current.store(Arc::new(stack));
        // After the store: a reader that sees the new generation sees the
        // new stack (release here, acquire in `refresh`).
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A service for one connection (cloned per connection by the server).
    pub fn service(self: &Arc<Self>) -> SwapService<S> {
        SwapService {
            generation: self.generation.load(Ordering::Acquire),
            inner: S::clone(&self.current.load()),
            swap: Arc::clone(self),
        }
    }
}

/// See the module docs.
pub struct SwapService<S> {
    swap: Arc<Swap<S>>,
    generation: u64,
    inner: S,
}

impl<S: Clone> Clone for SwapService<S> {
    fn clone(&self) -> Self {
        SwapService {
            swap: Arc::clone(&self.swap),
            generation: self.generation,
            inner: self.inner.clone(),
        }
    }
}

impl<S: Clone> SwapService<S> {
    /// Takes the current stack if a reload stored one since the last look.
    fn refresh(&mut self) {
        let generation = self.swap.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.inner = S::clone(&self.swap.current.load());
            self.generation = generation;
        }
    }
}

impl<S, R> tower::Service<R> for SwapService<S>
where
    S: tower::Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Only here, so `call` always goes to the stack that said ready.
        self.refresh();
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Service, ServiceExt};

    fn answering(
        n: u32,
    ) -> impl Service<(), Response = u32, Error = Infallible, Future: Send> + Clone {
        tower::service_fn(move |()| async move { Ok::<_, Infallible>(n) })
    }

    #[tokio::test]
    async fn new_requests_take_the_stored_stack_and_in_flight_ones_keep_theirs() {
        let swap = Swap::new(answering(1));
        let mut conn = swap.service();
        assert_eq!(conn.ready().await.expect("ready").call(()).await, Ok(1));
        // A request started before the store keeps its stack.
        let in_flight = conn.ready().await.expect("ready").call(());
        swap.store(answering(2));
        assert_eq!(in_flight.await, Ok(1));
        assert_eq!(conn.ready().await.expect("ready").call(()).await, Ok(2));
        // A connection opened later starts on the current one.
        let mut later = swap.service();
        assert_eq!(later.ready().await.expect("ready").call(()).await, Ok(2));
    }
}
