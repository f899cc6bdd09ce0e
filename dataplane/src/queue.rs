//! A bounded queue between pipeline threads, awaitable from a smol executor and usable
//! from a plain thread.
//!
//! Its storage is allocated once: pushing and popping never allocate, and neither does
//! waiting: a waiter's waker is cloned into a list that keeps its capacity. The lock is
//! taken once per batch or chunk, never per event. (smol's `async-channel` would do the
//! same job, but its `event-listener` allocates a listener each time a side waits, which
//! on the hot path is every time a queue runs empty.)

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Waiters a side is expected to have at once: one thread, or the state machine's
/// applying task and a few snapshot writers.
const WAITERS: usize = 8;

/// A bounded multi-producer multi-consumer queue.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Mirror of the queue length, readable without the lock (for the queue-depth gauge).
    len: AtomicUsize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    /// Woken when an item arrives or the queue closes.
    receivers: Vec<Waker>,
    /// Woken when room frees up or the queue closes.
    senders: Vec<Waker>,
}

/// Adds `waker` to `list` unless it is there already.
fn register(list: &mut Vec<Waker>, waker: &Waker) {
    if !list.iter().any(|w| w.will_wake(waker)) {
        list.push(waker.clone());
    }
}

fn wake_all(list: &mut Vec<Waker>) {
    for waker in list.drain(..) {
        waker.wake();
    }
}

/// What a plain thread parks on in [`Queue::recv_blocking`].
pub struct Waiter {
    parker: parking::Parker,
    waker: Waker,
}

/// Why [`Queue::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The queue was closed.
    Closed(T),
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a queue needs room for at least one item");
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                receivers: Vec::with_capacity(WAITERS),
                senders: Vec::with_capacity(WAITERS),
            }),
            capacity,
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes `item` if there is room; else gives it back with `register` called on the
    /// locked sender list.
    fn push(&self, item: T, waker: Option<&Waker>) -> Result<(), TrySendError<T>> {
        let mut state = self.lock();
        if state.closed {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.capacity {
            if let Some(waker) = waker {
                register(&mut state.senders, waker);
            }
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        self.len.store(state.items.len(), Ordering::Relaxed);
        wake_all(&mut state.receivers);
        Ok(())
    }

    /// Pops the oldest item: `Ok(None)` when empty (registering `waker`), `Err(())` when
    /// empty and closed.
    fn pop(&self, waker: Option<&Waker>) -> Result<Option<T>, ()> {
        let mut state = self.lock();
        match state.items.pop_front() {
            Some(item) => {
                self.len.store(state.items.len(), Ordering::Relaxed);
                wake_all(&mut state.senders);
                Ok(Some(item))
            }
            None if state.closed => Err(()),
            None => {
                if let Some(waker) = waker {
                    register(&mut state.receivers, waker);
                }
                Ok(None)
            }
        }
    }

    /// Pushes `item` if there is room.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        self.push(item, None)
    }

    /// Pushes `item`, waiting for room. Gives the item back if the queue is closed.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let Some(value) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.push(value, Some(cx.waker())) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(v)) => Poll::Ready(Err(v)),
                Err(TrySendError::Full(v)) => {
                    item = Some(v);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Pops the oldest item: `Ok(None)` when empty, `Err(())` when empty and closed.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&self) -> Result<Option<T>, ()> {
        self.pop(None)
    }

    /// Like [`Queue::recv`], but first polls for up to `spin`, yielding the CPU between
    /// polls, before parking.
    pub async fn recv_spinning(&self, spin: Duration) -> Option<T> {
        let start = Instant::now();
        loop {
            match self.try_recv() {
                Ok(Some(item)) => return Some(item),
                Err(()) => return None,
                Ok(None) if start.elapsed() < spin => std::thread::yield_now(),
                Ok(None) => return self.recv().await,
            }
        }
    }

    /// Pops the oldest item, waiting for one; `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| match self.pop(Some(cx.waker())) {
            Ok(Some(item)) => Poll::Ready(Some(item)),
            Err(()) => Poll::Ready(None),
            Ok(None) => Poll::Pending,
        })
        .await
    }

    /// A parker and its waker for [`Queue::recv_blocking`], made once per thread.
    pub fn waiter(&self) -> Waiter {
        let (parker, unparker) = parking::pair();
        Waiter { parker, waker: unparker.into() }
    }

    /// Pops the oldest item on a plain thread, parking until one comes or `timeout`
    /// passes: `Ok(None)` on the timeout, `Err(())` once the queue is closed and empty.
    /// Nothing is allocated: `waiter` is made once.
    #[allow(clippy::result_unit_err)]
    pub fn recv_blocking(
        &self,
        waiter: &Waiter,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, ()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(item) = self.pop(Some(&waiter.waker))? {
                return Ok(Some(item));
            }
            match deadline {
                None => waiter.parker.park(),
                Some(deadline) => {
                    if !waiter.parker.park_deadline(deadline) {
                        return self.try_recv();
                    }
                }
            }
        }
    }

    /// Closes the queue: sends fail from now on, and receivers get what is left, then
    /// `None`.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        wake_all(&mut state.receivers);
        wake_all(&mut state.senders);
    }

    /// Items in the queue now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use smol::future::block_on;

    use super::*;

    #[test]
    fn items_come_out_in_order_and_close_drains_what_is_left() {
        let q = Queue::new(3);
        q.try_send(1).unwrap();
        q.try_send(2).unwrap();
        assert_eq!(q.len(), 2);
        q.close();
        assert_eq!(q.try_send(3), Err(TrySendError::Closed(3)));
        assert_eq!(block_on(q.recv()), Some(1));
        assert_eq!(block_on(q.recv()), Some(2));
        assert_eq!(block_on(q.recv()), None);
    }

    #[test]
    fn a_full_queue_refuses_and_a_sender_waits_for_room() {
        let q = Arc::new(Queue::new(1));
        q.try_send(0).unwrap();
        assert_eq!(q.try_send(1), Err(TrySendError::Full(1)));
        let sender = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || block_on(q.send(1)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sender.is_finished(), "the sender waits while the queue is full");
        assert_eq!(block_on(q.recv()), Some(0));
        sender.join().unwrap().unwrap();
        assert_eq!(block_on(q.recv()), Some(1));
    }

    #[test]
    fn a_waiting_receiver_wakes_on_send_and_on_close() {
        let q = Arc::new(Queue::<u32>::new(4));
        let receiver = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || (block_on(q.recv()), block_on(q.recv())))
        };
        std::thread::sleep(Duration::from_millis(20));
        q.try_send(7).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(receiver.join().unwrap(), (Some(7), None));
    }

    #[test]
    fn a_blocking_receiver_wakes_on_send_times_out_and_sees_the_close() {
        let q = Arc::new(Queue::<u32>::new(2));
        let waiter = q.waiter();
        let started = std::time::Instant::now();
        assert_eq!(q.recv_blocking(&waiter, Some(Duration::from_millis(30))), Ok(None));
        assert!(started.elapsed() >= Duration::from_millis(30));
        let sender = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.try_send(5).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                q.close();
            })
        };
        assert_eq!(q.recv_blocking(&waiter, None), Ok(Some(5)));
        assert_eq!(q.recv_blocking(&waiter, Some(Duration::from_secs(5))), Err(()));
        sender.join().unwrap();
    }

    #[test]
    fn every_waiting_task_on_one_executor_is_woken() {
        // Two tasks wait for room and two for items on one thread: none is lost.
        let full = Arc::new(Queue::new(1));
        full.try_send(0).unwrap();
        let empty = Arc::new(Queue::<u32>::new(2));
        let executor = smol::LocalExecutor::new();
        let senders: Vec<_> = (1..=2)
            .map(|i| {
                executor.spawn({
                    let q = Arc::clone(&full);
                    async move { q.send(i).await }
                })
            })
            .collect();
        let receivers: Vec<_> = (0..2)
            .map(|_| {
                executor.spawn({
                    let q = Arc::clone(&empty);
                    async move { q.recv().await }
                })
            })
            .collect();
        while executor.try_tick() {}
        let other = {
            let (full, empty) = (Arc::clone(&full), Arc::clone(&empty));
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() < 3 {
                    if let Ok(Some(i)) = full.try_recv() {
                        got.push(i);
                    }
                }
                empty.try_send(7).unwrap();
                empty.try_send(8).unwrap();
                got
            })
        };
        block_on(executor.run(async {
            for s in senders {
                s.await.unwrap();
            }
            let mut got: Vec<_> = Vec::new();
            for r in receivers {
                got.push(r.await.unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [7, 8]);
        }));
        let mut sent = other.join().unwrap();
        sent.sort_unstable();
        assert_eq!(sent, [0, 1, 2]);
    }

    #[test]
    fn many_items_cross_threads_without_loss() {
        let q = Arc::new(Queue::new(2));
        let producer = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    block_on(q.send(i)).unwrap();
                }
                q.close();
            })
        };
        let mut expected = 0;
        while let Some(i) = block_on(q.recv()) {
            assert_eq!(i, expected);
            expected += 1;
        }
        producer.join().unwrap();
        assert_eq!(expected, 100_000);
    }
}
