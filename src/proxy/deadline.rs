//! Bounding a future in time on a glommio executor.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use glommio::timer::Timer;

/// Runs `fut` for at most `limit` (None = unbounded); None when the time ran out.
///
/// The timer is created only when `fut` first returns Pending, and the limit counts from
/// then: most reads on a loaded shard find their bytes already there, and a glommio timer
/// costs an allocation, two clock reads and a timer-map insert and removal.
pub async fn within<T>(limit: Option<Duration>, fut: impl Future<Output = T>) -> Option<T> {
    let Some(limit) = limit else {
        return Some(fut.await);
    };
    let mut fut = pin!(fut);
    let mut timer: Option<Timer> = None;
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        let timer = timer.get_or_insert_with(|| Timer::new(limit));
        Pin::new(timer).poll(cx).map(|_| None)
    })
    .await
}

/// Runs `f`'s future to completion on a fresh glommio executor (unit tests of timing code).
#[cfg(test)]
pub(crate) fn on_executor<T: Send + 'static, F: Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 16)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_future_wins_and_an_unbounded_one_is_awaited() {
        let got = on_executor(|| async {
            let ready = within(Some(Duration::ZERO), async { 7 }).await;
            let unbounded = within(None, async { 8 }).await;
            (ready, unbounded)
        });
        assert_eq!(got, (Some(7), Some(8)));
    }

    #[test]
    fn a_future_that_never_finishes_times_out_and_a_slow_one_in_time_completes() {
        let got = on_executor(|| async {
            let never = within(
                Some(Duration::from_millis(20)),
                std::future::pending::<u8>(),
            )
            .await;
            let in_time = within(Some(Duration::from_secs(30)), async {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                9
            })
            .await;
            (never, in_time)
        });
        assert_eq!(got, (None, Some(9)));
    }
}
