//! [`Chaos`], the one shared handle: the episode registry, the resolver and
//! the JWKS cache, and the operations the admin endpoints and the lead's
//! wiring need (`snapshot`, `resolve_now`, `subscribe`).
//!
//! Built from the config before the stack; the side channel to the factory
//! is attached when [`Chaos::layer`]'s layer is put over the innermost
//! service, so everything the chaos layer asks the factory goes through the
//! same client, to the same upstream, by path.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::chaos::ChaosType;
use crate::chaos::episodes::{EpisodeEvent, EpisodesSnapshot, FollowPlan, FollowTicket, Registry};
use crate::chaos::jwt::{DEFAULT_MIN_REFRESH, JwksCache, JwksSnapshot, Verdict};
use crate::chaos::resolve::{FactoryAnswer, Resolver};
use crate::chaos::settings::ChaosSettings;
use crate::chaos::side::{DEFAULT_TIMEOUT, SideChannel, SideService};
use crate::config::ChaosConfig;
use crate::telemetry::metrics::Metrics;

/// `POST /chaos/resolve` could not ask the factory.
#[derive(Debug, thiserror::Error)]
pub enum ResolveNowError {
    #[error("no report link seen yet")]
    NoLink,
    #[error("the chaos layer is not on the stack")]
    NotAttached,
}

/// What `POST /chaos/resolve` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManualResolve {
    pub episode: u64,
    /// Masked.
    pub link: String,
    #[serde(flatten)]
    pub answer: FactoryAnswer,
}

/// The chaos part of `GET /status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosSnapshot {
    pub detect: bool,
    pub auto_resolve: bool,
    pub verify_jwt: bool,
    pub redact_in_responses: bool,
    pub jwks: JwksSnapshot,
    #[serde(flatten)]
    pub episodes: EpisodesSnapshot,
}

/// For the access log: one load, no lock.
impl crate::telemetry::access::OpenEpisode for Chaos {
    fn open_episode(&self) -> Option<u64> {
        self.registry.newest_open()
    }
}

/// See the module docs.
pub struct Chaos {
    pub(crate) settings: ChaosSettings,
    side: Arc<SideChannel>,
    registry: Registry,
    resolver: Resolver,
    jwks: JwksCache,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos")
            .field("side", &self.side)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Chaos {
    pub fn new(config: &ChaosConfig, metrics: Arc<Metrics>) -> Arc<Chaos> {
        // A side request may take as long as a background try, at most 10 s.
        let side = Arc::new(SideChannel::new(
            DEFAULT_TIMEOUT.min(config.background_timeout),
        ));
        Arc::new(Chaos {
            settings: ChaosSettings::new(config),
            registry: Registry::new(metrics, config.resolve_cooldown),
            resolver: Resolver::new(Arc::clone(&side)),
            jwks: JwksCache::new(Arc::clone(&side), DEFAULT_MIN_REFRESH),
            side,
        })
    }

    /// Takes `[chaos]` from a reloaded config: the next order sees it;
    /// episodes, the JWKS cache and the resolver are kept.
    /// `background_timeout` is fixed at start.
    pub fn reconfigure(&self, config: &ChaosConfig) {
        self.settings.store(config);
        self.registry.set_cooldown(config.resolve_cooldown);
    }

    /// The episode registry (for the optional episode store).
    pub fn episodes(&self) -> &Registry {
        &self.registry
    }

    /// Episode events (started / resolved) for annotations.
    pub fn subscribe(&self) -> broadcast::Receiver<EpisodeEvent> {
        self.registry.subscribe()
    }

    /// The `/status` section: settings, JWKS state, open and recent episodes.
    pub fn snapshot(&self) -> ChaosSnapshot {
        let mut jwks = self.jwks.snapshot();
        if !self.settings.verify_jwt() {
            jwks.state = "disabled";
        }
        ChaosSnapshot {
            detect: self.settings.detect(),
            auto_resolve: self.settings.auto_resolve(),
            verify_jwt: self.settings.verify_jwt(),
            redact_in_responses: self.settings.redact_in_responses(),
            jwks,
            episodes: self.registry.snapshot(),
        }
    }

    /// Follows the latest report link now (operator action; works with
    /// auto-resolve off, ignores the cooldown) and returns what the factory said.
    pub async fn resolve_now(&self) -> Result<ManualResolve, ResolveNowError> {
        if !self.side.is_attached() {
            return Err(ResolveNowError::NotAttached);
        }
        let ticket = self
            .registry
            .claim_manual()
            .ok_or(ResolveNowError::NoLink)?;
        let episode = ticket.episode();
        let link = ticket.link().masked();
        let answer = self.follow(ticket).await;
        Ok(ManualResolve {
            episode,
            link,
            answer,
        })
    }

    pub(crate) fn attach(&self, svc: SideService) {
        self.side.attach(svc);
    }

    /// Whether the layer has anything to do with order answers.
    pub(crate) fn inspects(&self) -> bool {
        self.settings.detect() || self.settings.redact_in_responses() || self.settings.verify_jwt()
    }

    pub(crate) async fn verify(&self, token: &[u8]) -> Verdict {
        self.jwks.verify(token).await
    }

    /// [`verify`](Self::verify) without waiting: `None` when it takes a fetch.
    pub(crate) fn verify_now(&self, token: &[u8]) -> Option<Verdict> {
        self.jwks.verify_now(token)
    }

    /// Records a sighting (when detection is on) and says what to do about its link.
    pub(crate) fn sighting(
        &self,
        chaos: ChaosType,
        link: Option<&str>,
        status: Option<http::StatusCode>,
    ) -> FollowPlan {
        if !self.settings.detect() {
            return FollowPlan::None;
        }
        self.registry
            .record(chaos, link, status, self.settings.auto_resolve())
    }

    /// Whether the chaos behind `link` has been resolved by following it.
    pub(crate) fn is_resolved(&self, link: &str) -> bool {
        self.registry.is_resolved(link)
    }

    pub(crate) fn healthy(&self) {
        if self.settings.detect() {
            self.registry.healthy();
        }
    }

    /// Follows a ticket's link and records the outcome.
    pub(crate) async fn follow(&self, ticket: FollowTicket) -> FactoryAnswer {
        let answer = self.resolver.follow(ticket.link()).await;
        self.registry.finish(ticket, &answer);
        answer
    }
}
