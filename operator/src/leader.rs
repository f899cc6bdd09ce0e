//! Leader election on a coordination.k8s.io Lease, so that several operator replicas can
//! run and only one reconciles.
//!
//! [`kube_lease_manager`] takes, renews and releases the Lease (server-side apply, with
//! conflict backoff and tolerance of a failed renewal: it retries). What it does not do
//! is tell its holder that the Lease ran out while its renewals failed: its `watch()`
//! keeps reporting "leader" through API errors, and `changed()` returns each error
//! without saying how long the Lease still holds. So the holder here also fences
//! itself: it knows when the Lease expires from the renew time it wrote (its own clock
//! wrote it, so no skew between machines enters), and shortly before that it reads the
//! Lease back; unless a renewal moved the expiry, it steps down [`STEP_DOWN_AHEAD`]
//! before the Lease expires, well before any other replica may take it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::time::Instant;

/// How long the Lease holds without renewal; a standby takes over at most this long
/// after the leader stopped renewing.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long before expiry the holder renews (the rest of a failed renewal is retried).
pub const RENEW_AHEAD: Duration = Duration::from_secs(5);
/// How long before expiry a holder whose Lease was not renewed steps down.
pub const STEP_DOWN_AHEAD: Duration = Duration::from_secs(2);
/// How long a failed acquisition or renewal waits before the next attempt.
const RETRY: Duration = Duration::from_millis(500);
/// How long the holder's own read of the Lease may take.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// Another replica holds the Lease now.
    #[error("another replica took the leader lease")]
    TakenOver,
    /// The Lease was not renewed in time; the holder stepped down before it expired.
    #[error("the leader lease could not be renewed: {0}")]
    NotRenewed(String),
}

/// What can fail in setting up the election.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Lease could not be read or created.
    #[error("leader lease {name} in namespace {namespace}: {source}")]
    Lease {
        /// The Lease's name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What failed.
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// One contender for the leader Lease.
pub struct Elector {
    manager: LeaseManager,
    leases: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    /// A contender named `identity` for Lease `name` in `namespace`; creates the Lease
    /// when it does not exist.
    pub async fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> Result<Self, Error> {
        let manager = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION.as_secs())
            .with_grace(RENEW_AHEAD.as_secs())
            .build()
            .await
            .map_err(|source| Error::Lease {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                source,
            })?;
        Ok(Self {
            manager,
            leases: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        })
    }

    /// Waits until this contender holds the Lease, retrying API errors.
    pub async fn acquire(&self) {
        loop {
            match self.manager.changed().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "leader election failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Keeps the Lease renewed while leading; resolves when leadership ends. Call it
    /// right after [`acquire`](Self::acquire).
    pub async fn hold(&self) -> Lost {
        // The Lease was just written by us: it holds a full duration from about now.
        let mut expires = Instant::now() + LEASE_DURATION;
        let mut last_error = String::from("no renewal seen");
        let renewing = self.manager.changed();
        tokio::pin!(renewing);
        loop {
            tokio::select! {
                result = &mut renewing => {
                    match result {
                        Ok(true) => {}
                        Ok(false) => return Lost::TakenOver,
                        Err(error) => {
                            tracing::warn!(%error, "renewing the leader lease failed; retrying");
                            last_error = error.to_string();
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                    renewing.set(self.manager.changed());
                }
                () = tokio::time::sleep_until(expires - STEP_DOWN_AHEAD) => {
                    match self.expiry().await {
                        Ok(Some(renewed)) if renewed > Instant::now() + STEP_DOWN_AHEAD => {
                            expires = renewed;
                        }
                        Ok(Some(_)) => return Lost::NotRenewed(last_error),
                        Ok(None) => return Lost::TakenOver,
                        Err(error) => return Lost::NotRenewed(error),
                    }
                }
            }
        }
    }

    /// When the Lease expires by the renew time we last wrote; `None` if another holds it.
    async fn expiry(&self) -> Result<Option<Instant>, String> {
        let lease = tokio::time::timeout(READ_TIMEOUT, self.leases.get(&self.name))
            .await
            .map_err(|_| format!("reading the lease took over {READ_TIMEOUT:?}"))?
            .map_err(|e| format!("reading the lease: {e}"))?;
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(None);
        }
        let Some(renewed) = spec.renew_time else { return Ok(Some(Instant::now())) };
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
        // Our own clock wrote the renew time, so the local clock is the one to read it by.
        let age = Timestamp::now().duration_since(renewed.0);
        let left = duration.saturating_sub(Duration::try_from(age).unwrap_or(Duration::ZERO));
        Ok(Some(Instant::now() + left))
    }

    /// Gives the Lease up, so that a standby takes over at once.
    pub async fn release(&self) {
        if let Err(error) = self.manager.release().await {
            tracing::warn!(%error, "cannot release the leader lease; it expires by itself");
        }
    }
}
