//! A bounded queue between two pipeline threads, awaitable from a smol executor and
//! usable from a plain thread through `smol::future::block_on`.
//!
//! Its storage is allocated once: pushing and popping never allocate, and neither does
//! waiting, because each end parks on one [`AtomicWaker`] slot. The lock is taken once
//! per batch, never per event.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;

/// A bounded multi-producer multi-consumer queue; the pipeline uses it with one thread at
/// each end.
pub struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Mirror of the queue length, readable without the lock (for the queue-depth gauge).
    len: AtomicUsize,
    /// Woken when an item arrives or the queue closes.
    receiver: AtomicWaker,
    /// Woken when room frees up or the queue closes.
    sender: AtomicWaker,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
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
            state: Mutex::new(State { items: VecDeque::with_capacity(capacity), closed: false }),
            capacity,
            len: AtomicUsize::new(0),
            receiver: AtomicWaker::new(),
            sender: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pushes `item` if there is room.
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(TrySendError::Closed(item));
            }
            if state.items.len() >= self.capacity {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
            self.len.store(state.items.len(), Ordering::Relaxed);
        }
        self.receiver.wake();
        Ok(())
    }

    /// Pushes `item`, waiting for room. Gives the item back if the queue is closed.
    pub async fn send(&self, item: T) -> Result<(), T> {
        let mut item = Some(item);
        poll_fn(|cx| {
            let Some(value) = item.take() else {
                return Poll::Ready(Ok(()));
            };
            match self.try_send(value) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TrySendError::Closed(v)) => return Poll::Ready(Err(v)),
                Err(TrySendError::Full(v)) => item = Some(v),
            }
            self.sender.register(cx.waker());
            // Room may have freed up between the attempt and the registration.
            match self.try_send(item.take().expect("item is still held")) {
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
        let item = {
            let mut state = self.lock();
            match state.items.pop_front() {
                Some(item) => {
                    self.len.store(state.items.len(), Ordering::Relaxed);
                    item
                }
                None if state.closed => return Err(()),
                None => return Ok(None),
            }
        };
        self.sender.wake();
        Ok(Some(item))
    }

    /// Like [`Queue::recv`], but first polls for up to `spin`, yielding the CPU between
    /// polls, before parking.
    pub async fn recv_spinning(&self, spin: std::time::Duration) -> Option<T> {
        let start = std::time::Instant::now();
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
        poll_fn(|cx| {
            match self.try_recv() {
                Ok(Some(item)) => return Poll::Ready(Some(item)),
                Err(()) => return Poll::Ready(None),
                Ok(None) => {}
            }
            self.receiver.register(cx.waker());
            match self.try_recv() {
                Ok(Some(item)) => Poll::Ready(Some(item)),
                Err(()) => Poll::Ready(None),
                Ok(None) => Poll::Pending,
            }
        })
        .await
    }

    /// Closes the queue: sends fail from now on, and receivers get what is left, then
    /// `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.receiver.wake();
        self.sender.wake();
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
