//! Wires a validated config into a running sidecar: client, stack, proxy
//! and admin listeners, readiness, and the order of a graceful shutdown.
//! `main` adds signals; tests start it in-process on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminPart, AdminState, Readiness};
use crate::config::Config;
use crate::probe::{self, ProbeState};
use crate::proxy::client::{ClientError, Forward};
use crate::proxy::server::{self, ServeOptions};
use crate::proxy::stack;
use crate::telemetry::annotations::{AnnotationError, Annotator};
use crate::telemetry::{Telemetry, TelemetryError};

/// The sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Annotations(#[from] AnnotationError),
}

/// How long a shutdown waits for queued Grafana annotations.
const ANNOTATION_FLUSH: Duration = Duration::from_secs(2);

/// A running sidecar.
pub struct Sidecar {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    readiness: Arc<Readiness>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

impl Sidecar {
    /// Builds everything and starts serving (addresses with port 0 get a free port).
    pub async fn start(config: Config) -> Result<Sidecar, StartError> {
        let config = Arc::new(config);
        let forward = Forward::new(&config.upstream)?;
        let telemetry = Telemetry::start(&config.telemetry, config.upstream.url().host())?;
        let metrics = Arc::clone(telemetry.metrics());
        let parts = stack::Parts::new(&config, forward, Arc::clone(&metrics), telemetry.tracing());
        let service = stack::build(&config, &parts);
        let annotator = Arc::new(Annotator::start(&config.grafana)?);
        let annotating = annotator.follow(parts.chaos.subscribe());

        let proxy_listener = bind("server.listen", config.server.listen).await?;
        let admin_listener = bind("admin.listen", config.admin.listen).await?;
        let proxy_addr = proxy_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "server.listen",
                addr: config.server.listen,
                source,
            })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                what: "admin.listen",
                addr: config.admin.listen,
                source,
            })?;

        let mut admin_parts: Vec<Arc<dyn AdminPart>> = vec![
            Arc::clone(&parts.counts) as Arc<dyn AdminPart>,
            Arc::clone(&parts.breaker) as Arc<dyn AdminPart>,
            Arc::clone(&parts.budget) as Arc<dyn AdminPart>,
            Arc::clone(&parts.chaos) as Arc<dyn AdminPart>,
            Arc::clone(&parts.patience) as Arc<dyn AdminPart>,
        ];
        if annotator.is_enabled() {
            admin_parts.push(Arc::clone(&annotator) as Arc<dyn AdminPart>);
        }
        let probe = config.probe.enabled.then(|| {
            let state = Arc::new(ProbeState::default());
            admin_parts.push(Arc::clone(&state) as Arc<dyn AdminPart>);
            probe::spawn(
                config.probe.clone(),
                stack::build_buffered(&config, &parts),
                Arc::clone(&metrics),
                state,
            )
        });

        let readiness = Arc::new(Readiness::default());
        let admin_state = Arc::new(AdminState {
            token: config.admin.token.clone(),
            readiness: readiness.clone(),
            upstream: config.upstream.url().to_string(),
            started: SystemTime::now(),
            parts: admin_parts,
            metrics: {
                let metrics = Arc::clone(&metrics);
                Box::new(move || metrics.prometheus_text())
            },
        });

        let (shutdown, watch_rx) = watch::channel(false);
        let opts = ServeOptions::from(&config.server);
        let ready = readiness.clone();
        let patience = Arc::clone(&parts.patience);
        let grace = config.server.shutdown_grace;
        let task = tokio::spawn(async move {
            let stop_proxy = wait_for(watch_rx.clone());
            let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
            let admin_task = tokio::spawn(admin::serve(
                admin_listener,
                admin_state,
                wait_for(admin_stop_rx),
            ));
            let drain = async {
                stop_proxy.await;
                if let Some(probe) = &probe {
                    probe.abort();
                }
                // Tell load balancers first, then stop accepting and drain.
                ready.set(false);
                // Parked orders are answered now, waiting ones within the grace.
                patience.drain(grace);
            };
            server::serve(proxy_listener, service, opts, drain).await;
            let _ = admin_stop_tx.send(true);
            let _ = admin_task.await;
            if let Some(task) = annotating {
                task.abort();
            }
            annotator.shutdown(ANNOTATION_FLUSH).await;
            // The final export, once no request can record anything more.
            telemetry.shutdown().await;
        });
        readiness.set(true);
        tracing::info!(%proxy_addr, %admin_addr, upstream = %config.upstream.url(), "factory-sidecar serving");
        Ok(Sidecar {
            proxy_addr,
            admin_addr,
            readiness,
            shutdown,
            task,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Starts a graceful shutdown: readiness off, stop accepting, drain.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the sidecar has drained and stopped.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "sidecar task failed");
        }
    }
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: treat as shutdown.
    let _ = rx.wait_for(|stop| *stop).await;
}
