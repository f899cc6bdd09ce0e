//! The gameshard operator: reconciles each `GameShard` into a StatefulSet of pinned
//! data-plane pods, their Services, a disruption budget and a ServiceMonitor; creates
//! the shard's topics and publishes its partition assignment.
//!
//! The desired state is computed by pure functions ([`desired`]); the reconciler
//! ([`controller`]) reads, applies with server-side apply and writes status. Each shard's
//! autoscaler runs beside it: a pure policy ([`autoscaler`]) fed by the pods' or a
//! Prometheus server's figures ([`signals`]) in a loop of its own ([`scaler`]), which
//! writes the replica count through the scale subresource ([`kube_scaler`]).

pub mod admin;
pub mod assignment;
pub mod autoscaler;
pub mod controller;
pub mod cpu_limit;
pub mod desired;
pub mod handoff;
pub mod http;
pub mod kube_scaler;
pub mod leader;
pub mod local;
pub mod local_scaler;
pub mod metrics;
pub mod scaler;
pub mod signals;
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
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// A deleted shard's control-topic messages could not be removed yet.
    #[error("cleaning up the control topic: {0}")]
    Cleanup(String),
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
            Error::Finalizer(_) => "Finalizer",
            Error::Cleanup(_) => "CleanupFailed",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
