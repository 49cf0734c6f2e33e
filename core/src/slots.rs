//! A limit on slice requests in flight shared by many uploads, granted first come, first
//! served.
//!
//! One [`Upload`](crate::engine::Engine) bounds its own requests with `maxInFlight`. A queue
//! of many files needs one bound across all of them, and a fair one: a big file that keeps
//! asking must not starve the small files behind it. Each upload asks for a slot before it
//! sends a slice and holds it until that slice is acknowledged or fails for good. Waiters
//! are served in the order they started waiting, so a big file's next slice queues behind
//! the small files that were already waiting.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Slots shared by the uploads of one queue. Cheap to clone (it is an `Rc`).
#[derive(Clone, Debug)]
pub struct Slots(Rc<Inner>);

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: Cell<usize>,
    next_ticket: Cell<u64>,
    /// Waiters in arrival order, with the waker of their last poll.
    waiting: RefCell<VecDeque<(u64, Option<Waker>)>>,
}

impl Slots {
    /// `limit` slots (at least 1).
    pub fn new(limit: usize) -> Self {
        Slots(Rc::new(Inner {
            limit: limit.max(1),
            used: Cell::new(0),
            next_ticket: Cell::new(0),
            waiting: RefCell::new(VecDeque::new()),
        }))
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.0.used.get()
    }

    /// Waits for a slot. Dropping the future gives up its place in the line.
    pub fn acquire(&self) -> Acquire {
        Acquire {
            slots: self.clone(),
            ticket: None,
        }
    }

    /// Wakes the first waiter if a slot is free.
    fn wake_first(&self) {
        if self.0.used.get() >= self.0.limit {
            return;
        }
        if let Some((_, waker)) = self.0.waiting.borrow_mut().front_mut() {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
        }
    }
}

/// A held slot; dropping it frees the slot for the next waiter.
#[derive(Debug)]
pub struct Slot(Slots);

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &(self.0).0;
        inner.used.set(inner.used.get() - 1);
        self.0.wake_first();
    }
}

/// The future of [`Slots::acquire`].
#[derive(Debug)]
pub struct Acquire {
    slots: Slots,
    ticket: Option<u64>,
}

impl Future for Acquire {
    type Output = Slot;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        let inner = self.slots.0.clone();
        let ticket = match self.ticket {
            Some(ticket) => ticket,
            None => {
                let ticket = inner.next_ticket.get();
                inner.next_ticket.set(ticket + 1);
                inner.waiting.borrow_mut().push_back((ticket, None));
                self.ticket = Some(ticket);
                ticket
            }
        };
        let mut waiting = inner.waiting.borrow_mut();
        let first = waiting.front().map(|(t, _)| *t) == Some(ticket);
        if first && inner.used.get() < inner.limit {
            waiting.pop_front();
            drop(waiting);
            self.ticket = None;
            inner.used.set(inner.used.get() + 1);
            // The next in line may fit too.
            self.slots.wake_first();
            return Poll::Ready(Slot(self.slots.clone()));
        }
        if let Some(entry) = waiting.iter_mut().find(|(t, _)| *t == ticket) {
            entry.1 = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let mut waiting = self.slots.0.waiting.borrow_mut();
            let was_first = waiting.front().map(|(t, _)| *t) == Some(ticket);
            waiting.retain(|(t, _)| *t != ticket);
            drop(waiting);
            if was_first {
                self.slots.wake_first();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(Cell<bool>);
    // Single-threaded tests only.
    unsafe impl Send for Flag {}
    unsafe impl Sync for Flag {}
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.set(true);
        }
    }

    fn poll(acquire: &mut Acquire, flag: &std::sync::Arc<Flag>) -> Option<Slot> {
        let waker = Waker::from(flag.clone());
        match Pin::new(acquire).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(slot) => Some(slot),
            Poll::Pending => None,
        }
    }

    fn flag() -> std::sync::Arc<Flag> {
        std::sync::Arc::new(Flag(Cell::new(false)))
    }

    #[test]
    fn never_more_than_the_limit_and_first_come_first_served() {
        let slots = Slots::new(2);
        let f = flag();
        let (mut a, mut b, mut c, mut d) = (
            slots.acquire(),
            slots.acquire(),
            slots.acquire(),
            slots.acquire(),
        );
        let held_a = poll(&mut a, &f).expect("a slot is free");
        let _held_b = poll(&mut b, &f).expect("a slot is free");
        assert_eq!(slots.in_use(), 2);
        // c waits first, then d.
        assert!(poll(&mut c, &f).is_none());
        let fd = flag();
        assert!(poll(&mut d, &fd).is_none());
        // A new asker after a slot frees still queues behind c and d.
        let mut late = slots.acquire();
        let fl = flag();
        drop(held_a);
        assert!(f.0.get(), "the first waiter is woken");
        assert!(!fd.0.get(), "only the first waiter is woken");
        assert!(
            poll(&mut late, &fl).is_none(),
            "a late asker does not jump the line"
        );
        assert!(poll(&mut d, &fd).is_none(), "d is behind c");
        let _held_c = poll(&mut c, &f).expect("c is first");
        assert_eq!(slots.in_use(), 2);
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_turn_on() {
        let slots = Slots::new(1);
        let f = flag();
        let mut a = slots.acquire();
        let held = poll(&mut a, &f).unwrap();
        let mut b = slots.acquire();
        let mut c = slots.acquire();
        let fb = flag();
        let fc = flag();
        assert!(poll(&mut b, &fb).is_none());
        assert!(poll(&mut c, &fc).is_none());
        drop(held);
        assert!(fb.0.get());
        drop(b);
        assert!(fc.0.get(), "c is woken when b gives up its turn");
        let _held_c = poll(&mut c, &fc).expect("c's turn");
        assert_eq!(slots.in_use(), 1);
    }
}
