//! Bounding a future in time on a glommio executor.

use std::future::Future;
use std::time::Duration;

/// Runs `fut` for at most `limit` (None = unbounded); None when the time ran out.
pub async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Option<T> {
    match limit {
        None => Some(fut.await),
        Some(limit) => {
            futures_lite::future::or(async { Some(fut.await) }, async {
                glommio::timer::sleep(limit).await;
                None
            })
            .await
        }
    }
}
