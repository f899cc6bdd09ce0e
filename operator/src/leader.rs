//! Leader election on a coordination.k8s.io Lease, so that two operator replicas can
//! run and only one reconciles.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

/// How long a lease holds without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// One contender for a lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    /// A contender named `identity` for lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Takes the lease if it is free, expired or ours, and renews it; returns whether we
    /// hold it now. A conflicting write by another contender means we do not.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        let ours = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec { acquire_time: Some(MicroTime(now)), ..ours }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let ttl = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(duration),
            ));
            t.0.checked_add(ttl).is_ok_and(|until| until < now)
        });
        if holder.is_some() && holder != Some(self.identity.as_str()) && !expired {
            return Ok(false);
        }
        let acquire_time = if holder == Some(self.identity.as_str()) {
            spec.acquire_time
        } else {
            Some(MicroTime(now))
        };
        let transitions =
            spec.lease_transitions.unwrap_or(0) + i32::from(holder != Some(self.identity.as_str()));
        lease.spec = Some(LeaseSpec { acquire_time, lease_transitions: Some(transitions), ..ours });
        // The resource version in `lease` makes this write fail if anyone wrote since.
        conflict_is_false(self.api.replace(&self.name, &PostParams::default(), &lease).await)
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
