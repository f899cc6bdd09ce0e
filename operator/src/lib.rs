//! The gameshard operator: reconciles each `GameShard` into a StatefulSet of pinned
//! data-plane pods, their Services, a disruption budget and a ServiceMonitor; creates
//! the shard's topics and publishes its partition assignment.
//!
//! The desired state is computed by pure functions ([`desired`]); the reconciler
//! ([`controller`]) reads, applies with server-side apply and writes status.

pub mod admin;
pub mod controller;
pub mod desired;
pub mod latency;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod topics;

/// What can fail in a reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A GameShard without a namespace (the resource is namespaced; this cannot happen
    /// with objects read from the API).
    #[error("the GameShard has no namespace")]
    NotNamespaced,
}

impl Error {
    /// The `reason` label of this error in the reconcile-failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ApiUnreachable",
            Error::NotNamespaced => "NotNamespaced",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
