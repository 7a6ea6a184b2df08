//! Idle waits bounded without a timer per wait: a keep-alive connection waiting for its
//! client's next request. That wait is pending on every request, and a glommio timer for it
//! cost an allocation, an insert into and a removal from the reactor's timer map and two
//! clock reads: about 6% of a proxied keep-alive request's instructions (callgrind). Here a
//! wait is a slot holding a deadline and a waker, and the shard's control tick (100 ms)
//! wakes the slots whose deadline has passed. Idle timeouts are seconds to hours, so a tick
//! of lateness does not matter. Shard-local: `RefCell`, no locks.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

enum Slot {
    Free,
    Waiting { deadline: Instant, waker: Waker },
    Expired,
}

#[derive(Default)]
pub struct IdleWaits {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    /// No waiting slot has an earlier deadline: `expire` skips its scan before then.
    earliest: Cell<Option<Instant>>,
}

impl IdleWaits {
    /// Runs `fut` for at most `limit`, counted from when it first returns Pending; None when
    /// the time ran out (noticed at the next `expire`).
    pub async fn within<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
        let mut fut = pin!(fut);
        let mut wait = Registration {
            waits: self,
            slot: None,
        };
        poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            match wait.slot {
                None => wait.slot = Some(self.register(Instant::now() + limit, cx.waker())),
                Some(slot) if !self.refresh(slot, cx.waker()) => return Poll::Ready(None),
                Some(_) => {}
            }
            Poll::Pending
        })
        .await
    }

    /// Wakes every wait whose deadline is at or before `now`; the shard calls it each tick.
    pub fn expire(&self, now: Instant) {
        if self.earliest.get().is_none_or(|t| t > now) {
            return;
        }
        let mut due = Vec::new();
        let mut earliest = None;
        for slot in self.slots.borrow_mut().iter_mut() {
            match slot {
                Slot::Waiting { deadline, .. } if *deadline <= now => {
                    if let Slot::Waiting { waker, .. } = std::mem::replace(slot, Slot::Expired) {
                        due.push(waker);
                    }
                }
                Slot::Waiting { deadline, .. } => {
                    earliest = Some(earliest.map_or(*deadline, |e: Instant| e.min(*deadline)));
                }
                Slot::Free | Slot::Expired => {}
            }
        }
        self.earliest.set(earliest);
        // Woken after the borrow ends: a woken task may register or release a slot.
        due.into_iter().for_each(Waker::wake);
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        let slots = self.slots.borrow();
        slots
            .iter()
            .filter(|s| matches!(s, Slot::Waiting { .. }))
            .count()
    }

    fn register(&self, deadline: Instant, waker: &Waker) -> usize {
        let slot = Slot::Waiting {
            deadline,
            waker: waker.clone(),
        };
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = slot;
                i
            }
            None => {
                slots.push(slot);
                slots.len() - 1
            }
        };
        let earliest = self.earliest.get().map_or(deadline, |e| e.min(deadline));
        self.earliest.set(Some(earliest));
        index
    }

    /// Keeps the slot's waker current; false once the slot has expired.
    fn refresh(&self, index: usize, waker: &Waker) -> bool {
        match &mut self.slots.borrow_mut()[index] {
            Slot::Waiting { waker: w, .. } => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            Slot::Expired | Slot::Free => false,
        }
    }

    fn release(&self, index: usize) {
        self.slots.borrow_mut()[index] = Slot::Free;
        self.free.borrow_mut().push(index);
    }
}

/// A wait's slot, given back when the wait ends, however it ends (the connection's future
/// may be dropped mid-wait).
struct Registration<'a> {
    waits: &'a IdleWaits,
    slot: Option<usize>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.waits.release(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::deadline::on_executor;
    use std::rc::Rc;

    #[test]
    fn a_ready_future_takes_no_slot_and_a_silent_one_expires_at_a_tick() {
        let got = on_executor(|| async {
            let waits = Rc::new(IdleWaits::default());
            let ready = waits.within(Duration::ZERO, async { 7 }).await;
            let ticker = waits.clone();
            let tick = glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(30)).await;
                // Not due yet: nothing happens.
                ticker.expire(Instant::now());
                let waiting = ticker.waiting();
                glommio::timer::sleep(Duration::from_millis(40)).await;
                ticker.expire(Instant::now());
                waiting
            });
            let silent = waits
                .within(Duration::from_millis(50), std::future::pending::<u8>())
                .await;
            (ready, tick.await, silent, waits.waiting())
        });
        assert_eq!(got, (Some(7), 1, None, 0));
    }

    #[test]
    fn a_wait_that_completes_in_time_gives_its_slot_back_for_the_next() {
        let got = on_executor(|| async {
            let waits = IdleWaits::default();
            let mut results = Vec::new();
            for v in 0..3u8 {
                let value = waits
                    .within(Duration::from_secs(60), async move {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                        v
                    })
                    .await;
                results.push(value);
            }
            waits.expire(Instant::now());
            let slots = waits.slots.borrow().len();
            (results, slots, waits.waiting())
        });
        assert_eq!(got, (vec![Some(0), Some(1), Some(2)], 1, 0));
    }
}
