//! The optional episode store: chaos episodes kept across restarts, so
//! `/status` still shows them and an episode open at a restart still gets
//! its Grafana region when it ends.
//!
//! A hook, not a dependency: chaos works the same with no store (episodes
//! then live in memory only). With the embedded queue configured, its file
//! is the store. Saving is off the request path: the registry only bumps a
//! counter on each change; one task writes the whole (small: at most 54
//! episodes) list on the blocking pool, one write at a time, so a burst of
//! changes costs one write.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::Chaos;
use super::episodes::SavedEpisode;

/// Where episodes are kept. Both calls block (they run on the blocking pool).
pub trait EpisodeStore: Send + Sync + 'static {
    /// Saved episodes, each as written by [`EpisodeStore::save`].
    fn load(&self) -> Result<Vec<Vec<u8>>, String>;
    /// Replaces the saved episodes.
    fn save(&self, episodes: &[Vec<u8>]) -> Result<(), String>;
}

/// Puts the saved episodes back into `chaos` (call before serving).
pub async fn restore(chaos: &Chaos, store: Arc<dyn EpisodeStore>) {
    match tokio::task::spawn_blocking(move || store.load()).await {
        Ok(Ok(rows)) => {
            let episodes: Vec<SavedEpisode> = rows
                .iter()
                .filter_map(|r| serde_json::from_slice(r).ok())
                .collect();
            if !episodes.is_empty() {
                tracing::info!(episodes = episodes.len(), "chaos episodes restored");
            }
            chaos.episodes().import(episodes);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "chaos episodes could not be restored"),
        Err(e) => tracing::warn!(error = %e, "chaos episodes could not be restored"),
    }
}

/// Writes the current episodes now.
pub async fn save(chaos: &Chaos, store: Arc<dyn EpisodeStore>) {
    let rows: Vec<Vec<u8>> = chaos
        .episodes()
        .export()
        .iter()
        .filter_map(|e| serde_json::to_vec(e).ok())
        .collect();
    match tokio::task::spawn_blocking(move || store.save(&rows)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "chaos episodes not saved"),
        Err(e) => tracing::warn!(error = %e, "chaos episodes not saved"),
    }
}

/// Saves after every change until aborted.
pub fn spawn(chaos: Arc<Chaos>, store: Arc<dyn EpisodeStore>) -> JoinHandle<()> {
    let mut changes = chaos.episodes().changes();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            changes.mark_unchanged();
            save(&chaos, Arc::clone(&store)).await;
        }
    })
}
