//! Holding a `coordination.k8s.io/v1` Lease: the konnector's leader election in the binding
//! cluster (reference 9.2, decision L1), and in fleet mode the Lease of each app cluster.
//!
//! Timings are the reference's: a lease lasts 15 s, the holder renews every 2 s and gives up
//! leadership when it could not renew for 10 s. Giving up stops every writer (the engine is
//! dropped) before the lease can expire and another replica take it, so there are never two
//! writers. Expiry of someone else's lease is judged by how long the lease has been seen
//! unchanged on this replica's clock, as client-go does, so clock skew between nodes does not
//! matter. On shutdown the holder releases the lease so a follower takes over at once.

use std::time::Duration;

use super::leadership::LeaseDeadline;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the holder keeps trying to renew before it stops leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the holder renews and a follower retries.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What this replica should do with the lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no lease: create it with us as holder.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a live lease.
    Follow,
}

/// How long a Lease is valid without renewal: its `leaseDurationSeconds`, or ours.
pub fn duration(spec: &LeaseSpec) -> Duration {
    spec.lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(LEASE_DURATION)
}

/// The decision for `lease` given that its current content was first seen `unchanged_for` ago.
pub fn decide(lease: Option<&Lease>, me: &str, unchanged_for: Duration) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            if unchanged_for > duration(&spec) {
                Decision::TakeOver
            } else {
                Decision::Follow
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The lease spec with `me` as the new holder.
fn held_by(me: &str, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    let same_holder = previous.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if same_holder {
            previous.and_then(|s| s.acquire_time.clone())
        } else {
            Some(now())
        },
        renew_time: Some(now()),
        lease_transitions: Some(if same_holder || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// A Lease's spec as first seen at a time on this replica's clock: how long it has stayed
/// unchanged says whether its holder let it expire.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The spec (`None`: the Lease has none, or does not exist).
    pub spec: Option<LeaseSpec>,
    /// When this replica first saw it so.
    pub at: Instant,
}

/// Runs the election until `stop` resolves, publishing until when this replica may write on
/// `leading` (see [`LeaseDeadline`]). On `stop` while leading, the lease is released.
pub async fn run(
    api: Api<Lease>,
    name: String,
    me: String,
    leading: watch::Sender<LeaseDeadline>,
    stop: impl std::future::Future<Output = ()>,
) {
    run_from(api, name, me, leading, stop, None).await;
}

/// [`run`], judging expiry from `seen`, how the caller has already watched the Lease: a fleet
/// replica that has seen a dead replica's Lease unchanged for its whole duration takes it over
/// at once instead of watching it expire a second time.
pub async fn run_from(
    api: Api<Lease>,
    name: String,
    me: String,
    leading: watch::Sender<LeaseDeadline>,
    stop: impl std::future::Future<Output = ()>,
    seen: Option<Seen>,
) {
    tokio::pin!(stop);
    let mut observed: Option<(Option<LeaseSpec>, Instant)> = seen.map(|s| (s.spec, s.at));
    let mut last_renew: Option<Instant> = None;
    loop {
        // The deadline counts from before the request: the server's renewTime is no earlier.
        let started = Instant::now();
        let attempt = try_once(&api, &name, &me, &mut observed).await;
        let now = Instant::now();
        let was_leading = leading
            .borrow()
            .is_some_and(|t| std::time::Instant::now() < t);
        match attempt {
            Ok(true) => {
                last_renew = Some(started);
                if !was_leading {
                    tracing::info!(lease = %name, identity = %me, "started leading");
                }
                leading.send_replace(Some(started.into_std() + RENEW_DEADLINE));
            }
            Ok(false) => {
                last_renew = None;
                if leading.borrow().is_some() {
                    tracing::warn!(lease = %name, "lease taken by another replica, stopping all writers");
                    leading.send_replace(None);
                }
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "lease update failed");
                if leading.borrow().is_some()
                    && last_renew.is_none_or(|t| now.duration_since(t) >= RENEW_DEADLINE)
                {
                    tracing::warn!(lease = %name, "could not renew the lease in time, stopping all writers");
                    leading.send_replace(None);
                }
            }
        }
        // Before a renewal could be missed past the deadline, check again.
        tokio::select! {
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
            _ = &mut stop => break,
        }
    }
    if leading.borrow().is_some() {
        leading.send_replace(None);
        release(&api, &name, &me).await;
    }
}

/// One round: `Ok(true)` if we hold the lease afterwards.
async fn try_once(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    observed: &mut Option<(Option<LeaseSpec>, Instant)>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.clone());
    let now = Instant::now();
    let first_seen = match observed {
        Some((seen, at)) if *seen == spec => *at,
        _ => {
            *observed = Some((spec.clone(), now));
            now
        }
    };
    let pp = PostParams::default();
    match decide(current.as_ref(), me, now.duration_since(first_seen)) {
        Decision::Follow => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_by(me, None)),
            };
            match api.create(&pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Renew | Decision::TakeOver => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            lease.spec = Some(held_by(me, spec.as_ref()));
            // The resourceVersion makes this a compare-and-swap: a concurrent taker loses.
            match api.replace(name, &pp, &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up (no holder), so that a follower can take it without waiting for expiry.
async fn release(api: &Api<Lease>, name: &str, me: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    if lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        != Some(me)
    {
        return;
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
    }
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %name, "released the lease"),
        Err(e) => tracing::warn!(lease = %name, error = %e, "could not release the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let s = Duration::from_secs;
        assert_eq!(decide(None, "a", s(0)), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 15)), "a", s(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 15)), "a", s(14)),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 15)), "a", s(16)),
            Decision::TakeOver
        );
        assert_eq!(decide(Some(&lease(None, 1)), "a", s(0)), Decision::TakeOver);
        assert_eq!(
            decide(Some(&lease(Some(""), 15)), "a", s(0)),
            Decision::TakeOver
        );
    }

    #[test]
    fn the_deadline_leaves_room_before_anyone_can_take_over() {
        // The holder stops writing RENEW_DEADLINE after its last renewal at the latest (plus one
        // retry period to notice); nobody may take over before LEASE_DURATION has passed.
        assert!(RENEW_DEADLINE + RETRY_PERIOD < LEASE_DURATION);
    }

    #[test]
    fn transitions_count_changes_of_holder_only() {
        let first = held_by("a", None);
        assert_eq!(first.lease_transitions, Some(0));
        let renewed = held_by("a", Some(&first));
        assert_eq!(renewed.lease_transitions, Some(0));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        let taken = held_by("b", Some(&renewed));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }
}
