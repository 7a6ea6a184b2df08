//! A shard-local signal that a new snapshot generation arrived, so long-lived TCP/TLS
//! connections can check whether a reload removed their route without each polling a
//! timer. The shard's tick publishes generations; waiting connections each hold one slot
//! whose waker is replaced in place (no growth however often the connection's task is
//! polled). Shard-local: `Rc`/`RefCell`, never crosses threads.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

type Slot = Rc<RefCell<Option<Waker>>>;

#[derive(Default)]
pub struct ReloadSignal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Weak<RefCell<Option<Waker>>>>>,
}

impl ReloadSignal {
    /// Records `generation` and wakes every waiter when it is new.
    pub fn publish(&self, generation: u64) {
        if self.generation.replace(generation) == generation {
            return;
        }
        self.waiters
            .borrow_mut()
            .retain(|weak| match weak.upgrade() {
                Some(slot) => {
                    if let Some(waker) = slot.borrow_mut().take() {
                        waker.wake();
                    }
                    true
                }
                None => false,
            });
    }

    /// Resolves with the new generation once one other than `seen` is published.
    pub fn changed(&self, seen: u64) -> Changed<'_> {
        Changed {
            signal: self,
            seen,
            slot: None,
        }
    }
}

pub struct Changed<'a> {
    signal: &'a ReloadSignal,
    seen: u64,
    slot: Option<Slot>,
}

impl Future for Changed<'_> {
    type Output = u64;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let current = self.signal.generation.get();
        if current != self.seen {
            return Poll::Ready(current);
        }
        let signal = self.signal;
        let slot = self.slot.get_or_insert_with(|| {
            let slot: Slot = Rc::new(RefCell::new(None));
            signal.waiters.borrow_mut().push(Rc::downgrade(&slot));
            slot
        });
        let mut waker = slot.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_a_new_generation_only() {
        let signal = ReloadSignal::default();
        signal.publish(1);
        let mut fut = Box::pin(signal.changed(1));
        let waker = futures_lite::future::block_on(async {
            std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await
        });
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            signal.waiters.borrow().len(),
            1,
            "one slot however often polled"
        );
        signal.publish(1);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        signal.publish(2);
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(2));
        drop(fut);
        signal.publish(3);
        assert!(
            signal.waiters.borrow().is_empty(),
            "dropped waiters are let go"
        );
    }
}
