//! How many web-app requests one replica has in flight to one Container's
//! gateway, and a queue for the rest.
//!
//! The gateway gives web apps a share of its connections (3/4 of 512:
//! shells, logs and port-forwards keep the rest) and answers 503 over it,
//! or refuses the connection at its limit. A burst of page loads —
//! hundreds of users, or one notebook's assets — would then fail where it
//! only had to wait. So each replica sends at most
//! `Settings::max_web_requests_per_container` at once (128: two replicas
//! stay within the share, four reach it) and queues the others, first come
//! first served, for up to `Settings::web_queue_timeout`; one that waits
//! longer gets a 503 with `Retry-After`. A slot is held until the answer's
//! body has been sent (an upgrade — a WebSocket — frees it at its `101`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Above this many Containers with a queue, the idle ones are forgotten.
const PRUNE_ABOVE: usize = 1024;

/// Per-Container queues of web-app requests.
#[derive(Debug)]
pub struct WebSlots {
    per_container: usize,
    wait: Duration,
    queues: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Why a request got no slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this Container's web apps have {limit} requests in flight from this replica and none ended within {waited:?}"
)]
pub struct Busy {
    pub limit: usize,
    pub waited: Duration,
}

impl WebSlots {
    /// At most `per_container` requests at once to one Container (at
    /// least 1), others waiting up to `wait`.
    pub fn new(per_container: usize, wait: Duration) -> Self {
        Self {
            per_container: per_container.max(1),
            wait,
            queues: Mutex::default(),
        }
    }

    /// A slot for a request to the Container `uid`: at once, or when one
    /// frees within the wait.
    pub async fn acquire(&self, uid: &str) -> Result<OwnedSemaphorePermit, Busy> {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            if queues.len() > PRUNE_ABOVE {
                // Only the map holds these: no request in flight or waiting.
                queues.retain(|_, queue| Arc::strong_count(queue) > 1);
            }
            queues
                .entry(uid.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_container)))
                .clone()
        };
        match tokio::time::timeout(self.wait, queue.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Never closed; a timeout is the only way out.
            Ok(Err(_)) | Err(_) => Err(Busy {
                limit: self.per_container,
                waited: self.wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_over_the_limit_wait_until_one_ends_and_give_up_after_the_wait() {
        let slots = Arc::new(WebSlots::new(2, Duration::from_secs(30)));
        let first = slots.acquire("a").await.unwrap();
        let _second = slots.acquire("a").await.unwrap();
        // Another Container has its own slots.
        let _other = slots.acquire("b").await.unwrap();
        // The third waits until one is freed.
        let (got, waiting_for) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move {
                let permit = slots.acquire("a").await;
                let _ = got.send(());
                permit
            }
        });
        tokio::task::yield_now().await;
        tokio::select! {
            _ = waiting_for => panic!("a third request got a slot while two were held"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        drop(first);
        let third = waiting.await.unwrap().expect("the freed slot");
        // Nothing frees one now: a short wait ends in Busy.
        let impatient = WebSlots::new(1, Duration::from_millis(20));
        let _held = impatient.acquire("a").await.unwrap();
        assert_eq!(
            impatient.acquire("a").await.unwrap_err(),
            Busy {
                limit: 1,
                waited: Duration::from_millis(20)
            }
        );
        drop(third);
    }

    #[tokio::test]
    async fn idle_queues_are_forgotten_when_many() {
        let slots = WebSlots::new(1, Duration::from_secs(1));
        let held = slots.acquire("held").await.unwrap();
        // Past the bound the idle ones go: the map never holds much more.
        for i in 0..PRUNE_ABOVE + 10 {
            drop(slots.acquire(&format!("c{i}")).await.unwrap());
            assert!(slots.queues.lock().unwrap().len() <= PRUNE_ABOVE + 1);
        }
        let queues = slots.queues.lock().unwrap();
        assert!(queues.len() <= 12, "{} queues kept", queues.len());
        assert!(queues.contains_key("held"), "a queue in use is kept");
        drop(queues);
        drop(held);
    }
}
