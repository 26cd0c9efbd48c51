//! Wires a validated config into a running sidecar: client, stack, proxy
//! and admin listeners, readiness, config reload, and the order of a
//! graceful shutdown. `main` adds signals; tests start it in-process on
//! port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminPart, AdminState, Readiness};
use crate::chaos::persist;
use crate::config::Config;
use crate::probe::{self, ProbeState};
use crate::proxy::client::{ClientError, Forward};
use crate::proxy::server::{self, ServeOptions};
use crate::proxy::stack;
use crate::queue::{self, Queue};
use crate::reload::{Apply, Commit, ReloadReport, Reloader, Swap};
use crate::telemetry::Tracing;
use crate::telemetry::annotations::{AnnotationError, Annotator};
use crate::telemetry::logging::LevelChange;
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
    reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Binds `addr` and reads back the address bound (port 0 gets a free one).
async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

impl Sidecar {
    /// Builds everything and starts serving (addresses with port 0 get a
    /// free port). Without a file there is nothing to reload from: a reload
    /// answers so.
    pub async fn start(config: Config) -> Result<Sidecar, StartError> {
        Self::launch(config, None, |_| {}).await
    }

    /// [`Sidecar::start`] with the listener's options, taken from
    /// `[server]`, adjusted by `tweak` (tests turn the HTTP/1.1 fast path
    /// off this way, to compare it with hyper's).
    pub async fn start_with(
        config: Config,
        tweak: impl FnOnce(&mut ServeOptions),
    ) -> Result<Sidecar, StartError> {
        Self::launch(config, None, tweak).await
    }

    /// [`Sidecar::start`] for a config read from `file`, which SIGHUP and
    /// `POST /config/reload` read again.
    pub async fn start_from(config: Config, file: Option<PathBuf>) -> Result<Sidecar, StartError> {
        Self::launch(config, file, |_| {}).await
    }

    async fn launch(
        config: Config,
        file: Option<PathBuf>,
        tweak: impl FnOnce(&mut ServeOptions),
    ) -> Result<Sidecar, StartError> {
        let config = Arc::new(config);
        let forward = Forward::new(&config.upstream)?;
        let telemetry = Arc::new(Telemetry::start(
            &config.telemetry,
            config.upstream.url().host(),
        )?);
        let metrics = Arc::clone(telemetry.metrics());
        let mut parts =
            stack::Parts::new(&config, forward, Arc::clone(&metrics), telemetry.tracing());
        // Async orders: the store first (the stack takes the layer), then
        // the replayer over the stack below the server layer.
        if config.queue.is_enabled() {
            parts.queue = Some(
                Queue::open(
                    &config.queue,
                    Arc::clone(&parts.breaker),
                    Arc::clone(&metrics),
                )
                .await,
            );
        }
        // The embedded store keeps chaos episodes across restarts.
        let episode_store = parts
            .queue
            .as_ref()
            .and_then(|q| q.embedded())
            .map(|s| Arc::clone(s) as Arc<dyn crate::chaos::persist::EpisodeStore>);
        let episode_saver = match &episode_store {
            Some(store) => {
                persist::restore(&parts.chaos, Arc::clone(store)).await;
                Some(persist::spawn(Arc::clone(&parts.chaos), Arc::clone(store)))
            }
            None => None,
        };
        let swap = Swap::new(stack::build(&config, &parts));
        let queue_tasks = parts
            .queue
            .as_ref()
            .map(|q| queue::replay::spawn(Arc::clone(q), stack::build_buffered(&config, &parts)));
        let annotator = Arc::new(Annotator::start(&config.grafana)?);
        let annotating = annotator.follow(parts.chaos.subscribe());

        let (proxy_listener, proxy_addr) = bind("server.listen", config.server.listen).await?;
        let (admin_listener, admin_addr) = bind("admin.listen", config.admin.listen).await?;

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
        if let Some(q) = &parts.queue {
            admin_parts.push(Arc::clone(q) as Arc<dyn AdminPart>);
        }
        let probe_state = Arc::new(ProbeState::default());
        if config.probe.enabled {
            admin_parts.push(Arc::clone(&probe_state) as Arc<dyn AdminPart>);
        }
        let probe = Arc::new(ProbeTask::default());
        // The parts the current stack was built with (a reload may change
        // their tracer), shared by the rebuild and the probe.
        let current = Arc::new(parking_lot::Mutex::new(parts.clone()));
        let start_probe = {
            let (current, metrics, probe) = (
                Arc::clone(&current),
                Arc::clone(&metrics),
                Arc::clone(&probe),
            );
            move |config: &Config| {
                if config.probe.enabled {
                    let parts = current.lock().clone();
                    probe.replace(probe::spawn(
                        config.probe.clone(),
                        stack::build_buffered(config, &parts),
                        Arc::clone(&metrics),
                        Arc::clone(&probe_state),
                    ));
                }
            }
        };
        start_probe(&config);

        let live = Arc::new(ArcSwap::new(Arc::clone(&config)));
        let rebuild = {
            let (current, swap) = (Arc::clone(&current), Arc::clone(&swap));
            move |new: &Config, tracing: Tracing| {
                let parts = {
                    let mut parts = current.lock();
                    parts.tracing = tracing;
                    parts.clone()
                };
                parts.reconfigure(new);
                swap.store(stack::build(new, &parts));
            }
        };
        let reloader = Arc::new(Reloader::new(
            file,
            Arc::clone(&live),
            Box::new(Running {
                live: Arc::clone(&live),
                rebuild: Arc::new(rebuild),
                start_probe: Arc::new(start_probe),
                annotator: Arc::clone(&annotator),
                telemetry: Arc::clone(&telemetry),
            }),
            Arc::clone(&metrics),
        ));
        admin_parts.push(Arc::clone(&reloader) as Arc<dyn AdminPart>);

        let readiness = Arc::new(Readiness::default());
        let admin_state = Arc::new(AdminState {
            config: live,
            readiness: readiness.clone(),
            started: SystemTime::now(),
            parts: admin_parts,
            metrics: {
                let metrics = Arc::clone(&metrics);
                Box::new(move || metrics.prometheus_text())
            },
        });

        let (shutdown, watch_rx) = watch::channel(false);
        let mut opts = ServeOptions::from(&config.server);
        tweak(&mut opts);
        let ready = readiness.clone();
        let chaos = Arc::clone(&parts.chaos);
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
                probe.stop();
                // Replays in flight are cut: they are replayed after a restart.
                for task in queue_tasks.iter().flatten() {
                    task.abort();
                }
                // Tell load balancers first, then stop accepting and drain.
                ready.set(false);
                // Parked orders are answered now, waiting ones within the grace.
                patience.drain(grace);
            };
            server::serve(proxy_listener, swap.service(), opts, drain).await;
            let _ = admin_stop_tx.send(true);
            let _ = admin_task.await;
            if let Some(task) = annotating {
                task.abort();
            }
            if let (Some(saver), Some(store)) = (episode_saver, episode_store) {
                saver.abort();
                persist::save(&chaos, store).await;
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
            reloader,
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

    /// Reads the config file again and applies it, or says why not (see
    /// [`crate::reload`]); `trigger` names the cause in logs and `/status`.
    pub async fn reload(&self, trigger: &'static str) -> ReloadReport {
        self.reloader.reload(trigger).await
    }

    /// The config running now (the last one a reload applied).
    pub fn config(&self) -> Arc<Config> {
        self.reloader.current()
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

/// The probe's task, restarted when a reload changes `[probe]`.
#[derive(Default)]
struct ProbeTask(parking_lot::Mutex<Option<JoinHandle<()>>>);

impl ProbeTask {
    fn replace(&self, task: JoinHandle<()>) {
        if let Some(old) = self.0.lock().replace(task) {
            old.abort();
        }
    }

    fn stop(&self) {
        if let Some(task) = self.0.lock().take() {
            task.abort();
        }
    }
}

/// Builds a stack from a config with a tracer and swaps it in.
type Rebuild = dyn Fn(&Config, Tracing) + Send + Sync;

/// What a reload changes in the running sidecar (see [`crate::reload`]).
struct Running {
    live: Arc<ArcSwap<Config>>,
    /// New settings into the long-lived parts, then a fresh stack swapped in.
    rebuild: Arc<Rebuild>,
    start_probe: Arc<dyn Fn(&Config) + Send + Sync>,
    annotator: Arc<Annotator>,
    telemetry: Arc<Telemetry>,
}

impl Apply for Running {
    fn prepare(&self, new: &Arc<Config>) -> Result<Commit, String> {
        // What can fail is checked first; then nothing can.
        let level = LevelChange::new(&new.log.level).map_err(|e| e.to_string())?;
        Annotator::check(&new.grafana).map_err(|e| e.to_string())?;
        let exporters = self
            .telemetry
            .prepare(&new.telemetry)
            .map_err(|e| e.to_string())?;
        let old = self.live.load_full();
        let probe_changed = serde_json::to_value(&old.probe).ok()
            != serde_json::to_value(&new.probe).ok()
            || old.probe.api_key != new.probe.api_key;
        let new = Arc::clone(new);
        let annotator = Arc::clone(&self.annotator);
        let (rebuild, start_probe) = (Arc::clone(&self.rebuild), Arc::clone(&self.start_probe));
        let telemetry = Arc::clone(&self.telemetry);
        Ok(Box::new(move || {
            let tracing = exporters.apply(&telemetry);
            rebuild(&new, tracing);
            if probe_changed {
                start_probe(&new);
            }
            // Checked above: cannot fail now.
            if let Err(e) = annotator.retarget(&new.grafana) {
                tracing::warn!(error = %e, "grafana settings not applied");
            }
            level.apply();
        }))
    }
}
