//! Prometheus metrics (OpenMetrics text) and the readiness check.
//!
//! Each daemon owns its own [`Metrics`] registry (no process-global
//! recorder), so several daemons in one test process count apart. Counters
//! that report something the daemon *did* (tokens issued, decisions) are
//! bumped only after the store commit that made it true; counters of refusals
//! are bumped where the refusal is decided, since a refusal aborts.
//!
//! The metrics are served by the HTTP layer (`http::metrics`) on their own
//! plain-HTTP listener (`metrics.listen`, loopback by default) together with
//! `/healthz` and `/readyz`; the main HTTPS listener serves `/healthz` and
//! `/readyz` too, never `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::storage::{StoreHealth, StoreStatus};

pub use crate::config::{MetricsConfig, MetricsOverrides};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// One daemon's counters.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    tokens_issued: Counter,
    certificates_issued: Counter,
    renewals: Family<KindLabels, Counter>,
    proof_failures: Family<ClassLabels, Counter>,
    rate_limited: Family<ReasonLabels, Counter>,
    alerts: Family<KindLabels, Counter>,
    // Set from the store at scrape time, so they are never stale.
    pending: Gauge,
    devices: Gauge,
    oob_entries: Gauge,
    paused: Gauge,
    // Mirrors of the store's own counters (`StoreStatus`), set at scrape.
    store_io_errors: Counter,
    store_recoveries: Counter,
    store_unavailable: Gauge,
    /// Decisions per durable commit (group commit), observed by the writer.
    pub store_batch_size: Histogram,
    /// Decisions refused because the commit queue was full.
    pub commit_queue_full: Counter,
    store_pool_connections: Gauge,
    store_pool_idle: Gauge,
    store_pool_max: Gauge,
}

/// Version and git revision of this build (`idprov_build_info`).
pub fn build_revision() -> &'static str {
    env!("IDPROV_GIT_REV")
}

impl Metrics {
    /// `commit_seconds` is the store's commit-latency histogram.
    pub fn new(commit_seconds: Histogram) -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("idprov"),
            requests: Family::default(),
            decisions: Family::default(),
            tokens_issued: Counter::default(),
            certificates_issued: Counter::default(),
            renewals: Family::default(),
            proof_failures: Family::default(),
            rate_limited: Family::default(),
            alerts: Family::default(),
            pending: Gauge::default(),
            devices: Gauge::default(),
            oob_entries: Gauge::default(),
            paused: Gauge::default(),
            store_io_errors: Counter::default(),
            store_recoveries: Counter::default(),
            store_unavailable: Gauge::default(),
            store_batch_size: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 8),
            ),
            commit_queue_full: Counter::default(),
            store_pool_connections: Gauge::default(),
            store_pool_idle: Gauge::default(),
            store_pool_max: Gauge::default(),
        };
        m.register_all(commit_seconds)
    }

    fn register_all(mut self, commit_seconds: Histogram) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "build",
            "Version and git revision of the running idprovd",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", build_revision()),
            ]),
        );
        r.register(
            "http_requests",
            "HTTPS requests by endpoint (route template) and outcome (ok, pending, or the error code)",
            self.requests.clone(),
        );
        r.register(
            "provisioning_decisions",
            "Provisioning answers committed, by decision (approved, pending, refused) and the rule that decided",
            self.decisions.clone(),
        );
        r.register(
            "tokens_issued",
            "Daemon tokens issued (provisioning and renewal)",
            self.tokens_issued.clone(),
        );
        r.register(
            "certificates_issued",
            "Device client certificates issued",
            self.certificates_issued.clone(),
        );
        r.register(
            "renewals",
            "Successful renewals, by credential kind",
            self.renewals.clone(),
        );
        r.register(
            "proof_failures",
            "Refused proofs of possession and renewal tokens, by class of failure",
            self.proof_failures.clone(),
        );
        r.register(
            "rate_limited",
            "Requests and connections turned away by a rate limit or a bound, by reason",
            self.rate_limited.clone(),
        );
        r.register(
            "alerts",
            "Alerts raised for the administrator, by kind",
            self.alerts.clone(),
        );
        r.register(
            "pending_devices",
            "Devices waiting for an administrator's decision",
            self.pending.clone(),
        );
        r.register("devices", "Devices in the registry", self.devices.clone());
        r.register(
            "oob_entries",
            "Entries in the OOB list",
            self.oob_entries.clone(),
        );
        r.register(
            "provisioning_paused",
            "1 while provisioning is paused (by an administrator or an alert)",
            self.paused.clone(),
        );
        r.register(
            "store_io_errors",
            "I/O errors (disk full, device errors) that made the store unavailable until it was reopened",
            self.store_io_errors.clone(),
        );
        r.register(
            "store_reopens",
            "Times the store was reopened after an I/O error and served again",
            self.store_recoveries.clone(),
        );
        r.register(
            "store_unavailable",
            "1 while the store refuses work after an I/O error (writes answer 503 unavailable)",
            self.store_unavailable.clone(),
        );
        r.register(
            "store_pool_connections",
            "Database connections open now (PostgreSQL backend; 0 on redb)",
            self.store_pool_connections.clone(),
        );
        r.register(
            "store_pool_idle",
            "Database connections open and idle (PostgreSQL backend)",
            self.store_pool_idle.clone(),
        );
        r.register(
            "store_pool_max",
            "Most database connections the pool opens (store.postgres.pool_size)",
            self.store_pool_max.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Time to commit one durable store transaction",
            commit_seconds,
        );
        r.register(
            "store_batch_size",
            "Decisions committed together in one durable transaction (group commit)",
            self.store_batch_size.clone(),
        );
        r.register(
            "store_commit_queue_full",
            "Decisions refused with 503 busy because the commit queue was full",
            self.commit_queue_full.clone(),
        );
        self
    }

    pub fn request(&self, endpoint: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A committed provisioning decision.
    pub fn decision(&self, decision: &'static str, rule: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision, rule })
            .inc();
    }

    pub fn token_issued(&self) {
        self.tokens_issued.inc();
    }

    pub fn certificate_issued(&self) {
        self.certificates_issued.inc();
    }

    /// `kind` is `token` or `certificate`.
    pub fn renewal(&self, kind: &'static str) {
        self.renewals.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn proof_failure(&self, class: &'static str) {
        self.proof_failures
            .get_or_create(&ClassLabels { class })
            .inc();
    }

    pub fn rate_limited(&self, reason: &'static str) {
        self.rate_limited
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn alert(&self, kind: &'static str) {
        self.alerts.get_or_create(&KindLabels { kind }).inc();
    }

    /// The OpenMetrics text of every metric, after refreshing the gauges
    /// from `snapshot` and the store counters from `store`.
    pub fn render(&self, snapshot: &StoreSnapshot, store: &StoreStatus) -> String {
        // The store counts; these only follow (counters never go down).
        let io = store.io_errors.saturating_sub(self.store_io_errors.get());
        self.store_io_errors.inc_by(io);
        let re = store.recoveries.saturating_sub(self.store_recoveries.get());
        self.store_recoveries.inc_by(re);
        self.store_unavailable
            .set(i64::from(store.health != StoreHealth::Ok));
        let pool = store.pool.unwrap_or_default();
        self.store_pool_connections.set(i64::from(pool.connections));
        self.store_pool_idle.set(i64::from(pool.idle));
        self.store_pool_max.set(i64::from(pool.max));
        self.pending.set(clamp(snapshot.pending));
        self.devices.set(clamp(snapshot.devices));
        self.oob_entries.set(clamp(snapshot.oob_entries));
        self.paused.set(i64::from(snapshot.paused));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counts read from one store snapshot.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub pending: u64,
    pub devices: u64,
    pub oob_entries: u64,
    pub paused: bool,
    pub pause_reason: Option<String>,
}

/// The class label of a refused proof (the exact reason goes to the log).
pub fn proof_class(e: &crate::proof::ProofError) -> &'static str {
    use crate::proof::ProofError as P;
    match e {
        P::TooLong => "too_long",
        P::Header(_) | P::ForbiddenHeader(_) | P::Typ(_) => "header",
        P::Alg { .. } => "algorithm",
        P::Kid => "kid",
        P::Signature(_) => "signature",
        P::Subject => "subject",
        P::Audience(_) => "audience",
        P::IssuedInFuture | P::NotYetValid => "not_yet_valid",
        P::Expired => "expired",
        P::TooLongLived => "lifetime",
        P::Jti => "jti",
        P::ChannelBindingMalformed | P::ChannelBindingMismatch | P::ChannelBindingMissing => {
            "channel_binding"
        }
    }
}
