//! The conformance suite every [`Store`] backend runs: the behaviour the use
//! cases rely on, checked through the storage interface alone (no backend
//! internals), so a new backend (PostgreSQL) passes the same checks as redb.
//!
//! Use: `run_all(&|| Box::new(MyStore::open_fresh(..)))` in a test. Each
//! check gets a fresh, empty store from `make`; a failing check panics with
//! what it expected, and `run_all` reports every failed check at the end.
//! Each check is also a `pub fn(&dyn Store)` of its own (see [`CHECKS`]).
//!
//! Times are plain numbers (seconds); nothing here reads a clock.
//!
//! Where the trait's docs leave a choice, the suite pins what redb does and
//! the daemon relies on: lists page in byte order of the id and their
//! `total` ignores the filter; the audit `q` is a case-insensitive
//! substring; a proof or token expiring at `now` is still live (purged only
//! when it expired before `now`); a revoked certificate counts as expired
//! for the CRL once `not_after < now`; `DropCrlEntries` does not bump the
//! revocation version (the CRL built in the same unit records the version
//! read before). It leaves open which expired entries a bounded purge takes
//! first, the order of `device_certs`, `registry_cas` and `ids_with_*`, and
//! what `drop_stale_oob_staging` counts (redb counts tables, not sessions).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use idprov_proto::admin::{AdminEvent, AuditEntry, DeviceStatus, ProvisioningState};
use idprov_proto::oob_import::OobImportResult;
use idprov_proto::{DeviceId, KeyFormat, MacAddr};

use crate::error::Error;
use crate::storage::*;
use crate::store::{
    AuditDraft, CertRecord, CommitOptions, CrlState, DeviceRecord, GENESIS_HASH, KeyRecord,
    OobRecord, PendingRecord, RegistryCaRecord, RetiredKey, SnapshotCounts, StoreError,
    TokenRecord, verify_chain,
};

mod batch;
pub use batch::{batch_one_time_secret_once, batch_refusal_leaves_others};

/// A check: panics (with what it expected) when the store does not conform.
pub type Check = fn(&dyn Store);

/// Every check, by name, in the order `run_all` runs them.
pub const CHECKS: &[(&str, Check)] = &[
    (
        "failed_decision_writes_nothing",
        failed_decision_writes_nothing,
    ),
    ("empty_unit_commits_nothing", empty_unit_commits_nothing),
    ("changes_apply_in_order", changes_apply_in_order),
    (
        "oob_mac_index_follows_entries",
        oob_mac_index_follows_entries,
    ),
    ("reads_see_state_before_unit", reads_see_state_before_unit),
    ("audit_chained_and_announced", audit_chained_and_announced),
    ("audit_page_pages_and_filters", audit_page_pages_and_filters),
    (
        "replay_cache_remembers_and_purges",
        replay_cache_remembers_and_purges,
    ),
    (
        "token_records_purged_after_expiry",
        token_records_purged_after_expiry,
    ),
    ("clock_never_goes_back", clock_never_goes_back),
    ("provisioning_round_trips", provisioning_round_trips),
    ("policy_round_trips", policy_round_trips),
    ("identity_index", identity_index),
    ("stale_pending_bounded", stale_pending_bounded),
    ("list_devices_pages", list_devices_pages),
    ("list_pending_pages", list_pending_pages),
    ("list_oob_pages", list_oob_pages),
    ("counts_follow_changes", counts_follow_changes),
    ("certificates_and_revocation", certificates_and_revocation),
    ("crl_round_trips", crl_round_trips),
    ("retired_keys", retired_keys),
    ("registry_cas", registry_cas),
    ("oob_import_stage_and_commit", oob_import_stage_and_commit),
    ("oob_import_refusals_abort", oob_import_refusals_abort),
    (
        "oob_import_replace_prune_dry_run",
        oob_import_replace_prune_dry_run,
    ),
    ("oob_staging_dropped", oob_staging_dropped),
    ("snapshot_counts", snapshot_counts),
    ("batch_one_time_secret_once", batch_one_time_secret_once),
    ("batch_refusal_leaves_others", batch_refusal_leaves_others),
];

/// Run every check, each on a fresh store from `make`; panics listing the
/// checks that failed.
pub fn run_all(make: &dyn Fn() -> Box<dyn Store>) {
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let store = make();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(store.as_ref())));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failed.push(format!("  {name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "store conformance: {} of {} checks failed:\n{}",
        failed.len(),
        CHECKS.len(),
        failed.join("\n")
    );
}

/// Run one check by name on a fresh store (to debug one failure).
pub fn run_one(name: &str, make: &dyn Fn() -> Box<dyn Store>) {
    match CHECKS.iter().find(|(n, _)| *n == name) {
        Some((_, check)) => check(make().as_ref()),
        None => panic!("store conformance: no check named {name:?}"),
    }
}

// ---------------------------------------------------------------- helpers

const MAC_A: &str = "02:00:5e:10:00:0a";
const MAC_B: &str = "02:00:5e:10:00:0b";
const MAC_C: &str = "02:00:5e:10:00:0c";

/// The value of a store call, or a panic naming the step.
fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: the store failed: {e:?}"),
    }
}

/// Read through one snapshot.
fn view<T>(
    store: &dyn Store,
    what: &str,
    f: impl FnOnce(&dyn StoreView) -> Result<T, StoreError>,
) -> T {
    ok(store.read_with(|v| Ok(f(v)?)), what)
}

/// Commit `changes` as one unit; returns its events.
fn apply(store: &dyn Store, what: &str, changes: Vec<Change>) -> Vec<AdminEvent> {
    ok(
        store.transact(&mut |_, u| {
            for c in &changes {
                u.change(c.clone());
            }
            Ok(())
        }),
        what,
    )
}

fn did(s: &str) -> DeviceId {
    match s.parse() {
        Ok(id) => id,
        Err(e) => panic!("test device id {s:?}: {e}"),
    }
}

fn mac(s: &str) -> MacAddr {
    match s.parse() {
        Ok(m) => m,
        Err(e) => panic!("test MAC {s:?}: {e}"),
    }
}

fn device(id: &str) -> DeviceRecord {
    DeviceRecord {
        device_id: did(id),
        status: DeviceStatus::Active,
        epoch: 7,
        keys: vec![KeyRecord {
            kid: format!("kid-{id}"),
            format: KeyFormat::ES256_PEM,
            pem: format!("pem of {id}"),
            added_at: 10,
            expires_at: None,
        }],
        mac: None,
        admitted_by: "rule:conformance".into(),
        created_at: 10,
        last_issued_at: None,
        tokens_issued: 0,
        flags: Vec::new(),
        revision: 1,
        status_reason: None,
    }
}

fn pending(id: &str, last_seen: i64) -> PendingRecord {
    PendingRecord {
        device_id: did(id),
        key_format: KeyFormat::ES256_PEM,
        kid: format!("kid-{id}"),
        public_key: format!("pem of {id}"),
        mac: None,
        source: "192.0.2.1".into(),
        first_seen: last_seen,
        last_seen,
        attempts: 1,
        flags: Vec::new(),
        oob_hold: None,
        revision: 1,
    }
}

fn oob(id: &str, m: Option<&str>) -> OobRecord {
    OobRecord {
        device_id: did(id),
        public_key: None,
        key_format: None,
        kid: None,
        mac: m.map(mac),
        secret_hash: None,
        secret_salt: None,
        secret_consumed_at: None,
        setup: None,
        expires_at: None,
        note: Some(format!("note of {id}")),
        created_at: 10,
        updated_at: 10,
        secret_plain_for_compare: None,
    }
}

/// `OobRecord` has no `PartialEq`: compare what is stored.
fn same_oob(a: &OobRecord, b: &OobRecord) -> bool {
    a.view() == b.view()
        && a.secret_hash == b.secret_hash
        && a.secret_salt == b.secret_salt
        && a.setup == b.setup
}

fn token(jti: &str, expires_at: i64) -> TokenRecord {
    TokenRecord {
        jti: jti.into(),
        device_id: did("token-dev"),
        device_epoch: 7,
        kid: "kid-token-dev".into(),
        issued_at: expires_at - 10,
        expires_at,
    }
}

fn cert(serial: &str, dev: &str, not_after: i64) -> CertRecord {
    CertRecord {
        serial: serial.into(),
        device_id: did(dev),
        device_epoch: 7,
        kid: format!("kid-{dev}"),
        issued_at: 100,
        not_before: 100,
        not_after,
        revoked_at: None,
        revocation_reason: None,
        pem: format!("certificate {serial}"),
    }
}

fn draft(at: i64, actor: &str, action: &str, target: Option<&str>, detail: &str) -> AuditDraft {
    AuditDraft {
        at,
        actor: actor.into(),
        action: action.into(),
        target: target.map(str::to_string),
        source: None,
        detail: detail.into(),
    }
}

fn device_ids(v: &[DeviceRecord]) -> Vec<String> {
    v.iter().map(|d| d.device_id.to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn seqs(v: &[AuditEntry]) -> Vec<u64> {
    v.iter().map(|e| e.seq).collect()
}

// ---------------------------------------------------------------- checks

/// A decision that returns `Err` writes nothing: not its changes, not its
/// audit entries (the chain goes on from the last committed entry), and the
/// error comes back as the decision returned it.
pub fn failed_decision_writes_nothing(store: &dyn Store) {
    apply(
        store,
        "first audit entry",
        vec![Change::Audit(draft(1, "daemon", "kept", None, "kept"))],
    );
    let r = store.transact(&mut |_, u| {
        u.upsert_device(&device("fail-dev"));
        u.change(Change::PutPending(pending("fail-pending", 5)));
        u.change(Change::PutOob(oob("fail-oob", Some(MAC_A))));
        u.change(Change::PutToken(token("fail-jti", 900)));
        u.change(Change::RememberProof {
            key: "fail-dev\nfail-jti".into(),
            until: 900,
        });
        u.change(Change::AdvanceClock(5000));
        u.change(Change::SetProvisioning(ProvisioningState {
            paused: true,
            reason: Some("failed".into()),
        }));
        u.change(Change::PutCert(cert("f1", "fail-dev", 900)));
        u.audit(draft(2, "daemon", "failed", None, "must not be kept"));
        Err(Error::conflict("conformance: refused on purpose"))
    });
    match r {
        Err(Error::Conflict(m)) if m == "conformance: refused on purpose" => {}
        other => panic!("transact must return the decision's Err as is, got {other:?}"),
    }
    view(store, "state after a failed decision", |v| {
        assert_eq!(v.device("fail-dev")?, None, "device of a failed unit");
        assert_eq!(v.pending("fail-pending")?, None, "pending of a failed unit");
        assert!(v.oob("fail-oob")?.is_none(), "OOB entry of a failed unit");
        assert_eq!(v.oob_mac_owner(MAC_A)?, None, "MAC index of a failed unit");
        assert_eq!(v.token("fail-jti")?, None, "token of a failed unit");
        assert!(
            !v.proof_seen("fail-dev\nfail-jti")?,
            "proof of a failed unit"
        );
        assert_eq!(v.clock_high_water()?, None, "clock of a failed unit");
        assert!(!v.provisioning()?.paused, "provisioning of a failed unit");
        assert_eq!(v.cert("f1")?, None, "certificate of a failed unit");
        assert_eq!(
            (v.device_count()?, v.pending_count()?, v.oob_count()?),
            (0, 0, 0),
            "counts after a failed unit"
        );
        let audit = v.audit_all()?;
        assert_eq!(seqs(&audit), vec![1], "audit entries after a failed unit");
        Ok(())
    });
    let events = apply(
        store,
        "audit entry after the failed unit",
        vec![Change::Audit(draft(3, "daemon", "next", None, "next"))],
    );
    let audit = view(store, "audit_all", |v| v.audit_all());
    assert_eq!(
        seqs(&audit),
        vec![1, 2],
        "the failed unit's audit entry must not use up a seq"
    );
    assert!(
        verify_chain(GENESIS_HASH, &audit).is_ok(),
        "chain after a failed unit: {audit:?}"
    );
    assert!(
        events.is_empty(),
        "Change::Audit alone announces nothing: {events:?}"
    );
}

/// A unit without changes commits nothing and returns its events in order;
/// `transact_with` hands back what the decision returned.
pub fn empty_unit_commits_nothing(store: &dyn Store) {
    let a = AdminEvent::OobChanged { count: 3 };
    let b = AdminEvent::Provisioning {
        state: ProvisioningState {
            paused: true,
            reason: Some("only an event".into()),
        },
    };
    let (out, events) = ok(
        store.transact_with(|v, u| {
            u.event(a.clone());
            u.event(b.clone());
            Ok(v.device_count()? + 40)
        }),
        "empty unit",
    );
    assert_eq!(out, 40, "transact_with returns the decision's value");
    assert_eq!(events, vec![a, b], "an empty unit's events, in order");
    view(store, "state after an empty unit", |v| {
        assert!(
            !v.provisioning()?.paused,
            "an event alone must not change state"
        );
        assert!(v.audit_all()?.is_empty(), "an empty unit audits nothing");
        assert_eq!(v.device_count()?, 0, "an empty unit stores nothing");
        Ok(())
    });
}

/// Changes apply in unit order and the next read sees them.
pub fn changes_apply_in_order(store: &dyn Store) {
    let mut d2 = device("ord-dev");
    d2.revision = 2;
    d2.flags = vec!["flagged".into()];
    let mut p2 = pending("ord-pend", 20);
    p2.attempts = 2;
    let mut o2 = oob("ord-oob", None);
    o2.note = Some("second".into());
    // A setup code's record is part of the entry (issue 17): stored whole.
    o2.setup = Some(crate::store::SetupRecord {
        verifier: "spake2+p256$argon2id$m=64,t=1,p=1$c2FsdHNhbHQ$w0$L".into(),
        consumed_at: Some(11),
        failures: 3,
        locked_at: None,
    });
    apply(
        store,
        "puts, replaces and deletes",
        vec![
            Change::PutDevice(device("ord-dev")),
            Change::PutDevice(d2.clone()),
            Change::PutDevice(device("ord-gone")),
            Change::DeleteDevice(did("ord-gone")),
            Change::DeleteDevice(did("never-there")),
            Change::PutPending(pending("ord-pend", 10)),
            Change::PutPending(p2.clone()),
            Change::PutPending(pending("ord-pgone", 10)),
            Change::DeletePending(did("ord-pgone")),
            Change::DeletePending(did("never-there")),
            Change::PutOob(oob("ord-oob", None)),
            Change::PutOob(o2.clone()),
            Change::PutOob(oob("ord-ogone", None)),
            Change::DeleteOob(did("ord-ogone")),
            Change::DeleteOob(did("never-there")),
            Change::PutToken(token("ord-jti", 500)),
        ],
    );
    view(store, "after the unit", |v| {
        assert_eq!(v.device("ord-dev")?, Some(d2.clone()), "last put wins");
        assert_eq!(v.device("ord-gone")?, None, "put then delete");
        assert_eq!(v.pending("ord-pend")?, Some(p2.clone()), "last put wins");
        assert_eq!(v.pending("ord-pgone")?, None, "put then delete");
        match v.oob("ord-oob")? {
            Some(o) => assert!(same_oob(&o, &o2), "last OOB put wins: {o:?}"),
            None => panic!("OOB entry ord-oob missing"),
        }
        assert!(v.oob("ord-ogone")?.is_none(), "OOB put then delete");
        assert_eq!(v.token("ord-jti")?, Some(token("ord-jti", 500)), "token");
        assert_eq!(v.token("other-jti")?, None, "unknown token");
        Ok(())
    });
    apply(
        store,
        "delete then put again",
        vec![
            Change::DeleteDevice(did("ord-dev")),
            Change::PutDevice(device("ord-dev")),
            Change::DeletePending(did("ord-pend")),
        ],
    );
    view(store, "after the second unit", |v| {
        assert_eq!(v.device("ord-dev")?, Some(device("ord-dev")), "delete, put");
        assert_eq!(v.pending("ord-pend")?, None, "deleted in a later unit");
        Ok(())
    });
}

/// `oob_mac_owner` follows puts, replaces and deletes of OOB entries, and
/// an entry never removes the MAC mapping another entry holds.
pub fn oob_mac_index_follows_entries(store: &dyn Store) {
    let owner = |what: &str, m: &str| view(store, what, |v| v.oob_mac_owner(m));
    apply(
        store,
        "put A with MAC A",
        vec![Change::PutOob(oob("mac-a", Some(MAC_A)))],
    );
    assert_eq!(
        owner("after put", MAC_A),
        Some("mac-a".into()),
        "put maps the MAC"
    );
    assert_eq!(
        owner("MAC in the stored form", &mac(MAC_A).to_string()),
        Some("mac-a".into()),
        "the index is keyed by MacAddr's display form"
    );
    assert_eq!(
        owner("unknown MAC", MAC_C),
        None,
        "an unknown MAC has no owner"
    );

    apply(
        store,
        "replace A with MAC B",
        vec![Change::PutOob(oob("mac-a", Some(MAC_B)))],
    );
    assert_eq!(
        owner("old MAC after replace", MAC_A),
        None,
        "replace frees the old MAC"
    );
    assert_eq!(
        owner("new MAC after replace", MAC_B),
        Some("mac-a".into()),
        "replace maps the new MAC"
    );

    apply(
        store,
        "replace A without a MAC",
        vec![Change::PutOob(oob("mac-a", None))],
    );
    assert_eq!(
        owner("after dropping the MAC", MAC_B),
        None,
        "a MAC-less replace frees the MAC"
    );

    // B takes MAC A over from A (in one unit, as a batch may): A's later
    // replace and delete must leave B's mapping alone.
    apply(
        store,
        "A then B with MAC A",
        vec![
            Change::PutOob(oob("mac-a", Some(MAC_A))),
            Change::PutOob(oob("mac-b", Some(MAC_A))),
        ],
    );
    assert_eq!(
        owner("taken over", MAC_A),
        Some("mac-b".into()),
        "the later put owns the MAC"
    );
    apply(
        store,
        "replace A with MAC C",
        vec![Change::PutOob(oob("mac-a", Some(MAC_C)))],
    );
    assert_eq!(
        owner("after A's replace", MAC_A),
        Some("mac-b".into()),
        "A's replace must not unmap B's MAC"
    );
    assert_eq!(
        owner("A's new MAC", MAC_C),
        Some("mac-a".into()),
        "A's new MAC"
    );
    apply(
        store,
        "A takes MAC A back, then B takes it again",
        vec![
            Change::PutOob(oob("mac-a", Some(MAC_A))),
            Change::PutOob(oob("mac-b", Some(MAC_A))),
        ],
    );
    assert_eq!(
        owner("C freed by A's replace", MAC_C),
        None,
        "A's replace freed MAC C"
    );
    apply(store, "delete A", vec![Change::DeleteOob(did("mac-a"))]);
    assert_eq!(
        owner("after deleting A", MAC_A),
        Some("mac-b".into()),
        "deleting A must not unmap B's MAC"
    );
    apply(store, "delete B", vec![Change::DeleteOob(did("mac-b"))]);
    assert_eq!(
        owner("after deleting B", MAC_A),
        None,
        "deleting the owner frees the MAC"
    );
}

/// Inside a decision, reads see the state before the unit, whatever the
/// unit already holds.
pub fn reads_see_state_before_unit(store: &dyn Store) {
    apply(
        store,
        "initial state",
        vec![
            Change::PutDevice(device("before-old")),
            Change::PutOob(oob("before-oob", Some(MAC_A))),
            Change::AdvanceClock(100),
            Change::Audit(draft(1, "daemon", "first", None, "first")),
        ],
    );
    let (seen, _) = ok(
        store.transact_with(|v, u| {
            u.put_device(&device("before-new"));
            u.change(Change::DeleteDevice(did("before-old")));
            u.change(Change::DeleteOob(did("before-oob")));
            u.change(Change::PutOob(oob("before-oob2", Some(MAC_B))));
            u.change(Change::AdvanceClock(200));
            u.change(Change::RememberProof {
                key: "before\nproof".into(),
                until: 900,
            });
            u.audit(draft(2, "daemon", "second", None, "second"));
            Ok((
                v.device("before-new")?.is_some(),
                v.device("before-old")?.is_some(),
                v.device_count()?,
                v.oob_mac_owner(MAC_A)?,
                v.oob_mac_owner(MAC_B)?,
                v.clock_high_water()?,
                v.proof_seen("before\nproof")?,
                v.audit_all()?.len(),
            ))
        }),
        "decision reading after recording writes",
    );
    assert_eq!(
        seen,
        (
            false,
            true,
            1,
            Some("before-oob".into()),
            None,
            Some(100),
            false,
            1
        ),
        "reads inside the decision: (new device?, old device?, count, MAC A, MAC B, clock, proof, audit)"
    );
    view(store, "after the unit", |v| {
        assert!(v.device("before-new")?.is_some(), "the unit's put landed");
        assert!(
            v.device("before-old")?.is_none(),
            "the unit's delete landed"
        );
        assert_eq!(v.oob_mac_owner(MAC_B)?, Some("before-oob2".into()), "MAC B");
        assert_eq!(v.clock_high_water()?, Some(200), "clock");
        assert_eq!(v.audit_all()?.len(), 2, "audit");
        Ok(())
    });
}

/// Audit entries are numbered 1, 2, 3…, hash-chained from
/// [`GENESIS_HASH`], keep what the draft said, and come back in the events
/// in the unit's order, between its other events.
pub fn audit_chained_and_announced(store: &dyn Store) {
    let e1 = AdminEvent::OobChanged { count: 1 };
    let e2 = AdminEvent::DeviceRemoved {
        device_id: did("audit-dev"),
    };
    let mut with_source = draft(11, "admin:alice", "second", Some("audit-dev"), "two");
    with_source.source = Some("192.0.2.9".into());
    let drafts = [
        draft(10, "daemon", "first", None, "one"),
        with_source,
        draft(12, "admin:bob", "third", Some("x"), "three"),
    ];
    let events = ok(
        store.transact(&mut |_, u| {
            u.event(e1.clone());
            u.audit(drafts[0].clone());
            u.event(e2.clone());
            u.audit(drafts[1].clone());
            u.audit(drafts[2].clone());
            u.event(e1.clone());
            Ok(())
        }),
        "unit with audit entries and events",
    );
    let events2 = ok(
        store.transact(&mut |_, u| {
            u.audit(draft(13, "daemon", "fourth", None, "four"));
            u.put_device(&device("audit-dev"));
            u.audit(draft(14, "daemon", "fifth", None, "five"));
            Ok(())
        }),
        "second unit",
    );
    let all = view(store, "audit_all", |v| v.audit_all());
    assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5], "seq numbers");
    assert_eq!(
        all[0].prev_hash, GENESIS_HASH,
        "the first entry follows the genesis hash"
    );
    for w in all.windows(2) {
        assert_eq!(
            w[1].prev_hash, w[0].hash,
            "entry {} links to {}",
            w[1].seq, w[0].seq
        );
    }
    match verify_chain(GENESIS_HASH, &all) {
        Ok(last) => assert_eq!(last, all[4].hash, "verify_chain ends at the last hash"),
        Err(seq) => panic!("audit chain broken at seq {seq}: {all:?}"),
    }
    for (d, e) in drafts.iter().zip(&all) {
        assert_eq!(
            (e.at, &e.actor, &e.action, &e.target, &e.source, &e.detail),
            (d.at, &d.actor, &d.action, &d.target, &d.source, &d.detail),
            "entry {} keeps its draft",
            e.seq
        );
    }
    let audit = |i: usize| AdminEvent::Audit {
        entry: all[i].clone(),
    };
    assert_eq!(
        events,
        vec![e1.clone(), audit(0), e2, audit(1), audit(2), e1],
        "events: the unit's order, audit entries as stored"
    );
    assert_eq!(events2, vec![audit(3), audit(4)], "second unit's events");
}

/// `audit_page`: entries after a seq, oldest first, at most `limit`; `next`
/// only when another match follows; `total` counts every entry; `q` is a
/// case-insensitive substring of actor, action, target, source or detail.
pub fn audit_page_pages_and_filters(store: &dyn Store) {
    let mut third = draft(3, "admin:bob", "oob_import", None, "added 3");
    third.source = Some("192.0.2.7".into());
    apply(
        store,
        "five audit entries",
        vec![
            Change::Audit(draft(
                1,
                "admin:alice",
                "device_approved",
                Some("dev-1"),
                "approved",
            )),
            Change::Audit(draft(
                2,
                "daemon",
                "pending_expired",
                Some("dev-2"),
                "last seen 5",
            )),
            Change::Audit(third),
            Change::Audit(draft(
                4,
                "admin:alice",
                "device_removed",
                Some("dev-1"),
                "Removed By request",
            )),
            Change::Audit(draft(
                5,
                "daemon",
                "pending_expired",
                Some("dev-3"),
                "last seen 9",
            )),
        ],
    );
    let page = |after: u64, limit: usize, q: Option<&str>| {
        let (items, next, total) = view(store, "audit_page", |v| v.audit_page(after, limit, q));
        (seqs(&items), next, total)
    };
    // (after, limit, q, (seqs, next, total))
    type Case = (
        u64,
        usize,
        Option<&'static str>,
        (Vec<u64>, Option<u64>, u64),
    );
    let cases: &[Case] = &[
        (0, 2, None, (vec![1, 2], Some(2), 5)),
        (2, 2, None, (vec![3, 4], Some(4), 5)),
        (4, 2, None, (vec![5], None, 5)),
        (3, 2, None, (vec![4, 5], None, 5)),
        (5, 2, None, (vec![], None, 5)),
        (0, 100, None, (vec![1, 2, 3, 4, 5], None, 5)),
        (0, 10, Some("alice"), (vec![1, 4], None, 5)),
        (0, 1, Some("alice"), (vec![1], Some(1), 5)),
        (1, 1, Some("alice"), (vec![4], None, 5)),
        (0, 10, Some("dev-1"), (vec![1, 4], None, 5)),
        (0, 10, Some("192.0.2.7"), (vec![3], None, 5)),
        (0, 10, Some("pending_exp"), (vec![2, 5], None, 5)),
        (0, 10, Some("seen 9"), (vec![5], None, 5)),
        (0, 10, Some("removed by"), (vec![4], None, 5)),
        (0, 10, Some("ALICE"), (vec![1, 4], None, 5)),
        (0, 10, Some("no such text"), (vec![], None, 5)),
    ];
    for (after, limit, q, want) in cases {
        assert_eq!(
            &page(*after, *limit, *q),
            want,
            "audit_page(after {after}, limit {limit}, q {q:?}): (seqs, next, total)"
        );
    }
}

/// `RememberProof` makes a proof seen; `replay_count` counts remembered
/// proofs, `replay_live_count(now)` those remembered until `now` or later;
/// `PurgeExpired` forgets only proofs remembered until before `now`, at most
/// `max` of them (and `max` of the tokens besides).
pub fn replay_cache_remembers_and_purges(store: &dyn Store) {
    let remember = |key: &str, until: i64| Change::RememberProof {
        key: key.into(),
        until,
    };
    apply(
        store,
        "remember three proofs",
        vec![
            remember("d\n1", 100),
            remember("d\n2", 110),
            remember("d\n3", 300),
        ],
    );
    view(store, "remembered proofs", |v| {
        assert!(
            v.proof_seen("d\n1")? && v.proof_seen("d\n3")?,
            "remembered proofs are seen"
        );
        assert!(!v.proof_seen("d\n4")?, "an unknown proof is not seen");
        assert_eq!(v.replay_count()?, 3, "replay_count");
        let live: Vec<u64> = [0, 100, 101, 110, 111, 300, 301]
            .iter()
            .map(|&now| v.replay_live_count(now))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            live,
            vec![3, 3, 2, 2, 1, 1, 0],
            "replay_live_count at 0,100,101,110,111,300,301"
        );
        Ok(())
    });
    apply(
        store,
        "purge at 250, max 1",
        vec![Change::PurgeExpired { now: 250, max: 1 }],
    );
    view(store, "after purging one", |v| {
        assert_eq!(v.replay_count()?, 2, "PurgeExpired max 1 forgets one proof");
        assert!(v.proof_seen("d\n3")?, "a live proof is kept");
        assert!(
            v.proof_seen("d\n1")? != v.proof_seen("d\n2")?,
            "exactly one expired proof went"
        );
        Ok(())
    });
    apply(
        store,
        "purge at 300, max 10",
        vec![Change::PurgeExpired { now: 300, max: 10 }],
    );
    view(store, "after purging the rest", |v| {
        assert_eq!(v.replay_count()?, 1, "only expired proofs go");
        assert!(
            v.proof_seen("d\n3")?,
            "a proof remembered until now is kept"
        );
        Ok(())
    });
    apply(
        store,
        "one more proof and token, purge max 1",
        vec![
            remember("d\n5", 301),
            Change::PutToken(token("jti-x", 301)),
            Change::PutToken(token("jti-y", 900)),
            Change::PurgeExpired { now: 400, max: 1 },
        ],
    );
    view(store, "after a purge with max 1", |v| {
        assert_eq!(v.replay_count()?, 1, "max 1 forgets one proof");
        assert_eq!(v.token_count()?, 1, "and one token besides");
        assert!(
            !v.proof_seen("d\n3")? || !v.proof_seen("d\n5")?,
            "one expired proof went"
        );
        assert!(v.token("jti-y")?.is_some(), "the live token stays");
        Ok(())
    });
}

/// Token records are kept until they expire, then `PurgeExpired` drops
/// them (only those that expired before `now`, at most `max`).
pub fn token_records_purged_after_expiry(store: &dyn Store) {
    let count = |what: &str| view(store, what, |v| v.token_count());
    assert_eq!(count("fresh store"), 0, "a fresh store has no tokens");
    apply(
        store,
        "three tokens",
        vec![
            Change::PutToken(token("t1", 100)),
            Change::PutToken(token("t2", 300)),
            Change::PutToken(token("t3", 150)),
        ],
    );
    assert_eq!(count("three tokens"), 3, "token_count");
    apply(
        store,
        "purge max 1",
        vec![Change::PurgeExpired { now: 200, max: 1 }],
    );
    view(store, "after purging one", |v| {
        assert_eq!(v.token_count()?, 2, "max 1 purges one token");
        assert_eq!(
            v.token("t2")?,
            Some(token("t2", 300)),
            "the live token stays"
        );
        assert!(
            v.token("t1")?.is_some() != v.token("t3")?.is_some(),
            "one expired token went"
        );
        Ok(())
    });
    apply(
        store,
        "purge",
        vec![Change::PurgeExpired { now: 300, max: 10 }],
    );
    view(store, "after purging at 300", |v| {
        assert_eq!(v.token_count()?, 1, "expired tokens go");
        assert!(v.token("t2")?.is_some(), "a token expiring at now is kept");
        Ok(())
    });
    apply(
        store,
        "purge at 301",
        vec![Change::PurgeExpired { now: 301, max: 10 }],
    );
    assert_eq!(count("after purging at 301"), 0, "the last token expired");
}

/// `AdvanceClock` raises `clock_high_water` and never lowers it.
pub fn clock_never_goes_back(store: &dyn Store) {
    let hw = |what: &str| view(store, what, |v| v.clock_high_water());
    assert_eq!(
        hw("fresh store"),
        None,
        "a fresh store has no high-water mark"
    );
    apply(store, "advance to 100", vec![Change::AdvanceClock(100)]);
    assert_eq!(hw("after 100"), Some(100), "advance");
    apply(store, "advance to 50", vec![Change::AdvanceClock(50)]);
    assert_eq!(
        hw("after 50"),
        Some(100),
        "an earlier time must not lower it"
    );
    apply(
        store,
        "200 then 120 in one unit",
        vec![Change::AdvanceClock(200), Change::AdvanceClock(120)],
    );
    assert_eq!(
        hw("after 200, 120"),
        Some(200),
        "never lowered within a unit"
    );
    apply(store, "advance to 201", vec![Change::AdvanceClock(201)]);
    assert_eq!(hw("after 201"), Some(201), "advance by one");
}

/// `SetProvisioning` round-trips; the default is not paused.
pub fn provisioning_round_trips(store: &dyn Store) {
    let get = |what: &str| view(store, what, |v| v.provisioning());
    let running = ProvisioningState {
        paused: false,
        reason: None,
    };
    assert_eq!(get("fresh store"), running, "a fresh store provisions");
    let paused = ProvisioningState {
        paused: true,
        reason: Some("maintenance window".into()),
    };
    apply(
        store,
        "pause",
        vec![Change::SetProvisioning(paused.clone())],
    );
    assert_eq!(get("paused"), paused, "paused with its reason");
    apply(
        store,
        "resume",
        vec![Change::SetProvisioning(running.clone())],
    );
    assert_eq!(get("resumed"), running, "resumed");
}

/// The policy record (rules and windows) is absent on a fresh store, is
/// stored whole and replaced whole, and a failed decision leaves it.
pub fn policy_round_trips(store: &dyn Store) {
    use crate::policy::PolicyRecord;
    let get = |what: &str| view(store, what, |v| v.policy());
    assert_eq!(get("fresh store"), None, "a fresh store has no policy");
    let rule = match serde_json::from_str(r#"{"name":"a","action":"approve","device_id":"k-*"}"#) {
        Ok(r) => r,
        Err(e) => panic!("test rule: {e}"),
    };
    let one = PolicyRecord {
        rules_revision: 1,
        rules: vec![rule],
        windows: Vec::new(),
        next_window: 3,
    };
    apply(store, "put policy", vec![Change::PutPolicy(one.clone())]);
    assert_eq!(get("stored"), Some(one.clone()), "stored whole");
    let failed = store.transact(&mut |_, u| {
        u.change(Change::PutPolicy(PolicyRecord::default()));
        Err(crate::error::Error::conflict("changed my mind"))
    });
    assert!(failed.is_err(), "the failed decision reports its error");
    assert_eq!(
        get("after a failed decision"),
        Some(one),
        "a failed decision wrote it"
    );
    let two = PolicyRecord {
        rules_revision: 2,
        ..PolicyRecord::default()
    };
    apply(
        store,
        "replace policy",
        vec![Change::PutPolicy(two.clone())],
    );
    assert_eq!(get("replaced"), Some(two), "replaced whole");
}

/// Most ids `ids_with_key` / `ids_with_mac` may return (the flags need one).
pub const MAX_IDS_REPORTED: usize = 16;

/// `NoteIdentity` indexes key and MAC holders; `ids_with_key` /
/// `ids_with_mac` list them but `except`, bounded; `Forget*Holder` drop one.
pub fn identity_index(store: &dyn Store) {
    let note = |id: &str, kid: &str, m: Option<&str>| Change::NoteIdentity {
        device_id: did(id),
        kid: kid.into(),
        mac: m.map(mac),
    };
    let mut changes = vec![
        note("id-a", "k1", Some(MAC_A)),
        note("id-b", "k1", Some(MAC_A)),
        note("id-c", "k1", None),
        note("id-b", "k1", Some(MAC_A)),
        note("id-d", "k2", Some(MAC_B)),
    ];
    for i in 0..(MAX_IDS_REPORTED * 2) {
        changes.push(note(&format!("many-{i:02}"), "k-many", Some(MAC_C)));
    }
    apply(store, "note identities", changes);
    let keys = |kid: &str, except: &str| {
        sorted(view(store, "ids_with_key", |v| v.ids_with_key(kid, except)))
    };
    let macs =
        |m: &str, except: &str| sorted(view(store, "ids_with_mac", |v| v.ids_with_mac(m, except)));
    assert_eq!(
        keys("k1", "id-a"),
        strings(&["id-b", "id-c"]),
        "key holders but id-a, once each"
    );
    assert_eq!(
        keys("k1", ""),
        strings(&["id-a", "id-b", "id-c"]),
        "all key holders"
    );
    assert_eq!(
        keys("k2", "id-d"),
        Vec::<String>::new(),
        "only the excepted holder"
    );
    assert_eq!(keys("k3", ""), Vec::<String>::new(), "an unknown key");
    assert_eq!(
        keys("k", ""),
        Vec::<String>::new(),
        "a prefix of a key is another key"
    );
    assert_eq!(
        macs(MAC_A, "id-b"),
        strings(&["id-a"]),
        "MAC holders but id-b"
    );
    assert_eq!(macs(MAC_B, ""), strings(&["id-d"]), "MAC B");
    for (what, ids) in [
        ("key", keys("k-many", "many-00")),
        ("MAC", macs(MAC_C, "many-00")),
    ] {
        assert!(
            !ids.is_empty() && ids.len() <= MAX_IDS_REPORTED,
            "ids with a {what} held by {} ids: 1 to {MAX_IDS_REPORTED}, got {}",
            MAX_IDS_REPORTED * 2,
            ids.len()
        );
        assert!(
            ids.iter()
                .all(|id| id.starts_with("many-") && id != "many-00"),
            "ids with a {what}: only holders, never the excepted one: {ids:?}"
        );
    }
    apply(
        store,
        "forget holders",
        vec![
            Change::ForgetKeyHolder {
                kid: "k1".into(),
                device_id: "id-b".into(),
            },
            Change::ForgetMacHolder {
                mac: MAC_A.into(),
                device_id: "id-a".into(),
            },
            Change::ForgetKeyHolder {
                kid: "k-none".into(),
                device_id: "id-none".into(),
            },
        ],
    );
    assert_eq!(
        keys("k1", ""),
        strings(&["id-a", "id-c"]),
        "ForgetKeyHolder drops one holder"
    );
    assert_eq!(
        macs(MAC_A, ""),
        strings(&["id-b"]),
        "ForgetMacHolder drops one holder"
    );
}

/// `stale_pending(cutoff, max)`: pending records last seen before `cutoff`,
/// at most `max`.
pub fn stale_pending_bounded(store: &dyn Store) {
    apply(
        store,
        "four pending",
        vec![
            Change::PutPending(pending("st-3", 30)),
            Change::PutPending(pending("st-1", 10)),
            Change::PutPending(pending("st-4", 40)),
            Change::PutPending(pending("st-2", 20)),
        ],
    );
    let stale =
        |cutoff: i64, max: usize| view(store, "stale_pending", |v| v.stale_pending(cutoff, max));
    let ids = |v: &[PendingRecord]| sorted(v.iter().map(|p| p.device_id.to_string()).collect());
    assert_eq!(
        ids(&stale(35, 10)),
        strings(&["st-1", "st-2", "st-3"]),
        "last seen before 35"
    );
    assert_eq!(
        ids(&stale(30, 10)),
        strings(&["st-1", "st-2"]),
        "last seen exactly at the cutoff is not stale"
    );
    assert_eq!(stale(5, 10), Vec::new(), "nothing is older than 5");
    let two = stale(100, 2);
    assert_eq!(two.len(), 2, "at most max: {two:?}");
    assert!(
        two.iter().all(|p| p.last_seen < 100) && two[0].device_id != two[1].device_id,
        "two distinct stale records: {two:?}"
    );
    assert_eq!(stale(100, 0), Vec::new(), "max 0 lists none");
    assert_eq!(
        stale(15, 10),
        vec![pending("st-1", 10)],
        "the whole record comes back"
    );
}

/// One of the `list_*` reads: `(view, after, limit, keep)` to a page.
type Lister<T> =
    fn(&dyn StoreView, Option<&str>, usize, &dyn Fn(&T) -> bool) -> Result<Paged<T>, StoreError>;

/// Keyset paging of one of the lists (ids `pg-01` … `pg-07`).
fn check_paging<T>(
    store: &dyn Store,
    what: &str,
    put: fn(&str) -> Change,
    read: Lister<T>,
    id_of: fn(&T) -> String,
) {
    let puts = ["05", "02", "07", "01", "04", "06", "03"].map(|n| put(&format!("pg-{n}")));
    apply(store, &format!("seven records for {what}"), puts.into());
    let list = |after: Option<&str>, limit: usize, keep: &dyn Fn(&T) -> bool| {
        view(store, what, |v| read(v, after, limit, keep))
    };
    let num = move |t: &T| -> u32 {
        let id = id_of(t);
        id.trim_start_matches("pg-").parse().unwrap_or(0)
    };
    let all = |_: &T| true;
    let even = move |t: &T| num(t) % 2 == 0;
    let two_and_four = move |t: &T| matches!(num(t), 2 | 4);
    let none = |_: &T| false;
    // (after, limit, filter name, filter, (ids, next)); ids without "pg-".
    type Case<'k, T> = (
        Option<&'static str>,
        usize,
        &'static str,
        &'k dyn Fn(&T) -> bool,
        (Vec<&'static str>, Option<&'static str>),
    );
    let cases: Vec<Case<'_, T>> = vec![
        (
            None,
            100,
            "all",
            &all,
            (vec!["01", "02", "03", "04", "05", "06", "07"], None),
        ),
        (None, 3, "all", &all, (vec!["01", "02", "03"], Some("03"))),
        (
            Some("pg-03"),
            3,
            "all",
            &all,
            (vec!["04", "05", "06"], Some("06")),
        ),
        (Some("pg-06"), 3, "all", &all, (vec!["07"], None)),
        (
            Some("pg-04"),
            3,
            "all",
            &all,
            (vec!["05", "06", "07"], None),
        ),
        (
            Some("pg-035"),
            2,
            "all",
            &all,
            (vec!["04", "05"], Some("05")),
        ),
        (Some("pg-07"), 2, "all", &all, (vec![], None)),
        (None, 2, "even", &even, (vec!["02", "04"], Some("04"))),
        (Some("pg-04"), 2, "even", &even, (vec!["06"], None)),
        (None, 2, "2 and 4", &two_and_four, (vec!["02", "04"], None)),
        (None, 1, "2 and 4", &two_and_four, (vec!["02"], Some("02"))),
        (None, 5, "none", &none, (vec![], None)),
    ];
    for (after, limit, filter, keep, (want_ids, want_next)) in cases {
        let (items, next, total) = list(after, limit, keep);
        let got: Vec<String> = items.iter().map(id_of).collect();
        let want: Vec<String> = want_ids.iter().map(|n| format!("pg-{n}")).collect();
        let want_next = want_next.map(|n| format!("pg-{n}"));
        assert_eq!(
            (got, next, total),
            (want, want_next, 7),
            "{what}(after {after:?}, limit {limit}, keep {filter}): (ids in id order, next, total ignoring the filter)"
        );
    }
    // Following `next` visits everything once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let (items, next, _) = list(after.as_deref(), 2, &all);
        seen.extend(items.iter().map(id_of));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let want: Vec<String> = (1..=7).map(|n| format!("pg-{n:02}")).collect();
    assert_eq!(seen, want, "{what}: following next visits each entry once");
}

/// `list_devices` pages by id (see `check_paging`).
pub fn list_devices_pages(store: &dyn Store) {
    check_paging(
        store,
        "list_devices",
        |id| Change::PutDevice(device(id)),
        |v, after, limit, keep| v.list_devices(after, limit, keep),
        |d| d.device_id.to_string(),
    );
}

/// `list_pending` pages by id (see `check_paging`).
pub fn list_pending_pages(store: &dyn Store) {
    check_paging(
        store,
        "list_pending",
        |id| Change::PutPending(pending(id, 1)),
        |v, after, limit, keep| v.list_pending(after, limit, keep),
        |p| p.device_id.to_string(),
    );
}

/// `list_oob` pages by id (see `check_paging`).
pub fn list_oob_pages(store: &dyn Store) {
    check_paging(
        store,
        "list_oob",
        |id| Change::PutOob(oob(id, None)),
        |v, after, limit, keep| v.list_oob(after, limit, keep),
        |o| o.device_id.to_string(),
    );
}

/// `device_count`, `pending_count`, `oob_count` follow puts (a replace is
/// not a new record) and deletes.
pub fn counts_follow_changes(store: &dyn Store) {
    let counts = |what: &str| {
        view(store, what, |v| {
            Ok((v.device_count()?, v.pending_count()?, v.oob_count()?))
        })
    };
    assert_eq!(counts("fresh store"), (0, 0, 0), "a fresh store is empty");
    apply(
        store,
        "records",
        vec![
            Change::PutDevice(device("c-1")),
            Change::PutDevice(device("c-2")),
            Change::PutDevice(device("c-3")),
            Change::PutDevice(device("c-1")),
            Change::PutPending(pending("c-4", 1)),
            Change::PutPending(pending("c-5", 1)),
            Change::PutOob(oob("c-1", Some(MAC_A))),
            Change::PutOob(oob("c-1", Some(MAC_B))),
        ],
    );
    assert_eq!(counts("after puts"), (3, 2, 1), "(devices, pending, oob)");
    apply(
        store,
        "deletes",
        vec![
            Change::DeleteDevice(did("c-2")),
            Change::DeleteDevice(did("c-9")),
            Change::DeletePending(did("c-4")),
            Change::DeleteOob(did("c-1")),
        ],
    );
    assert_eq!(
        counts("after deletes"),
        (2, 1, 0),
        "(devices, pending, oob)"
    );
    let listed = view(store, "list_devices", |v| {
        v.list_devices(None, 10, &|_| true)
    });
    assert_eq!(
        device_ids(&listed.0),
        strings(&["c-1", "c-3"]),
        "devices left"
    );
}

/// Certificates: `PutCert`, `cert`, `device_certs`; `RevokeCert` stores
/// the record, lists it in `crl_entries(now)` (expired ones apart once
/// `not_after < now`) and bumps `revocation_version`; `DropCrlEntries`
/// removes entries without a bump.
pub fn certificates_and_revocation(store: &dyn Store) {
    let c1 = cert("0a", "cert-dev", 10_000);
    let c2 = cert("0b", "cert-dev", 10_000);
    let c3 = cert("0c", "cert-dev2", 1_000);
    apply(
        store,
        "three certificates",
        vec![
            Change::PutCert(c2.clone()),
            Change::PutCert(c1.clone()),
            Change::PutCert(c3.clone()),
        ],
    );
    let certs_of = |dev: &str| {
        let mut v = view(store, "device_certs", |v| v.device_certs(dev));
        v.sort_by(|a, b| a.serial.cmp(&b.serial));
        v
    };
    view(store, "certificates", |v| {
        assert_eq!(v.cert("0a")?, Some(c1.clone()), "cert by serial");
        assert_eq!(v.cert("0d")?, None, "unknown serial");
        assert_eq!(v.revocation_version()?, 0, "no revocation yet");
        assert_eq!(v.crl_entries(0)?, (vec![], vec![]), "no CRL entries yet");
        Ok(())
    });
    assert_eq!(
        certs_of("cert-dev"),
        vec![c1.clone(), c2.clone()],
        "a device's certificates (not cert-dev2's)"
    );
    assert_eq!(
        certs_of("cert-dev2"),
        vec![c3.clone()],
        "the other device's"
    );
    assert_eq!(
        certs_of("cert-de"),
        Vec::new(),
        "a prefix of a device id is another device"
    );

    let r1 = revoke(store, &c1, 500, "keyCompromise", 1);
    view(store, "after one revocation", |v| {
        assert_eq!(
            v.cert("0a")?,
            Some(r1.clone()),
            "RevokeCert stores the record"
        );
        assert_eq!(v.revocation_version()?, 1, "RevokeCert bumps the version");
        assert_eq!(
            v.crl_entries(600)?,
            (vec![("0a".into(), 500, 1)], vec![]),
            "CRL entries at 600"
        );
        Ok(())
    });
    assert_eq!(
        certs_of("cert-dev"),
        vec![r1.clone(), c2.clone()],
        "device_certs shows the revoked record"
    );

    let r3 = revoke(store, &c3, 700, "superseded", 4);
    let entries = |now: i64| {
        let (mut live, mut expired) = view(store, "crl_entries", |v| v.crl_entries(now));
        live.sort();
        expired.sort();
        (live, expired)
    };
    assert_eq!(
        view(store, "version", |v| v.revocation_version()),
        2,
        "second bump"
    );
    assert_eq!(
        entries(1_000),
        (vec![("0a".into(), 500, 1), ("0c".into(), 700, 4)], vec![]),
        "at not_after the certificate is still valid"
    );
    assert_eq!(
        entries(1_001),
        (vec![("0a".into(), 500, 1)], vec!["0c".into()]),
        "past not_after the entry is returned as expired"
    );
    apply(
        store,
        "drop 0c",
        vec![Change::DropCrlEntries(vec!["0c".into(), "ff".into()])],
    );
    assert_eq!(
        entries(1_001),
        (vec![("0a".into(), 500, 1)], vec![]),
        "DropCrlEntries"
    );
    assert_eq!(
        entries(0),
        (vec![("0a".into(), 500, 1)], vec![]),
        "dropped for good"
    );
    assert_eq!(
        view(store, "version", |v| v.revocation_version()),
        2,
        "DropCrlEntries does not bump the version (the CRL built with it records the version read before)"
    );
    assert_eq!(
        view(store, "cert 0c", |v| v.cert("0c")),
        Some(r3),
        "the record stays"
    );
}

/// Revoke `c` at `at` (one unit); returns the revoked record.
fn revoke(store: &dyn Store, c: &CertRecord, at: i64, reason: &str, code: u8) -> CertRecord {
    let mut r = c.clone();
    r.revoked_at = Some(at);
    r.revocation_reason = Some(reason.into());
    let change = Change::RevokeCert {
        cert: r.clone(),
        code,
    };
    apply(store, &format!("revoke {}", c.serial), vec![change]);
    r
}

/// `PutCrl` stores the CRL and its state; `crl()` gives the latest.
pub fn crl_round_trips(store: &dyn Store) {
    assert_eq!(
        view(store, "crl", |v| v.crl()),
        None,
        "a fresh store has no CRL"
    );
    let state = |number: u64| CrlState {
        number,
        this_update: 100 * number as i64,
        next_update: 100 * number as i64 + 50,
        version: number + 10,
        revoked: 3,
    };
    apply(
        store,
        "first CRL",
        vec![Change::PutCrl {
            der: vec![0x30, 1, 2],
            state: state(1),
        }],
    );
    assert_eq!(
        view(store, "crl", |v| v.crl()),
        Some((vec![0x30, 1, 2], state(1))),
        "first CRL"
    );
    apply(
        store,
        "second CRL",
        vec![Change::PutCrl {
            der: vec![0x30, 9],
            state: state(2),
        }],
    );
    assert_eq!(
        view(store, "crl", |v| v.crl()),
        Some((vec![0x30, 9], state(2))),
        "the latest CRL"
    );
}

/// `RetireKey` + `retired_key`.
pub fn retired_keys(store: &dyn Store) {
    let rec = RetiredKey {
        device_id: did("ret-dev"),
        at: 42,
        why: "removed".into(),
    };
    apply(
        store,
        "retire a key",
        vec![Change::RetireKey {
            kid: "kid-ret".into(),
            record: rec.clone(),
        }],
    );
    view(store, "retired keys", |v| {
        assert_eq!(v.retired_key("kid-ret")?, Some(rec.clone()), "retired key");
        assert_eq!(v.retired_key("kid-other")?, None, "a key never retired");
        Ok(())
    });
}

/// Registry CAs: put (insert or replace by fingerprint), list, delete.
pub fn registry_cas(store: &dyn Store) {
    let ca = |fp: &str, subject: &str| RegistryCaRecord {
        fingerprint: fp.into(),
        subject: subject.into(),
        not_before: 1,
        not_after: 2,
        added_at: 3,
        added_by: "admin:alice".into(),
        pem: format!("pem {fp}"),
    };
    let list = || {
        let mut v = view(store, "registry_cas", |v| v.registry_cas());
        v.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        v
    };
    assert_eq!(list(), Vec::new(), "a fresh store has no registry CA");
    apply(
        store,
        "two CAs, one replaced",
        vec![
            Change::PutRegistryCa(ca("fp-b", "CN=B")),
            Change::PutRegistryCa(ca("fp-a", "CN=A")),
            Change::PutRegistryCa(ca("fp-a", "CN=A2")),
        ],
    );
    assert_eq!(
        list(),
        vec![ca("fp-a", "CN=A2"), ca("fp-b", "CN=B")],
        "put replaces by fingerprint"
    );
    apply(
        store,
        "delete one",
        vec![
            Change::DeleteRegistryCa("fp-a".into()),
            Change::DeleteRegistryCa("fp-none".into()),
        ],
    );
    assert_eq!(list(), vec![ca("fp-b", "CN=B")], "DeleteRegistryCa");
}

fn import_opts(expected_entries: u64, now: i64) -> CommitOptions {
    CommitOptions {
        replace: false,
        prune: false,
        dry_run: false,
        expected_entries,
        now,
    }
}

type Committed =
    Result<(OobImportResult, Option<AuditEntry>, u64), Vec<idprov_proto::error::EntryError>>;

/// Commit an import, auditing it with `audit` (if true) from the result.
fn commit(store: &dyn Store, sid: &str, opts: CommitOptions, audit: bool) -> Committed {
    let r = store.commit_oob_import(sid, opts, &mut |res| {
        audit.then(|| {
            let mut d = draft(opts.now, "admin:alice", "oob_import", None, "");
            d.detail = format!(
                "added {}, changed {}, removed {}",
                res.added, res.changed, res.removed
            );
            d
        })
    });
    ok(r, &format!("commit_oob_import({sid})"))
}

fn stage(
    store: &dyn Store,
    sid: &str,
    records: &[OobRecord],
) -> (u64, Vec<idprov_proto::error::EntryError>) {
    ok(store.stage_oob(sid, records), &format!("stage_oob({sid})"))
}

/// `stage_oob` stages chunks (invisible until the commit); the commit adds
/// them all, appends the audit entry built from its result in the same
/// transaction, returns the entry and the new OOB count, keeps the MAC
/// index, and drops the session's staging.
pub fn oob_import_stage_and_commit(store: &dyn Store) {
    apply(
        store,
        "an audit entry before",
        vec![Change::Audit(draft(1, "daemon", "before", None, ""))],
    );
    assert_eq!(
        stage(
            store,
            "s1",
            &[oob("imp-2", None), oob("imp-1", Some(MAC_A))]
        ),
        (2, vec![]),
        "first chunk: entries staged so far"
    );
    assert_eq!(
        stage(store, "s1", &[oob("imp-3", Some(MAC_B))]),
        (3, vec![]),
        "second chunk"
    );
    view(store, "while staged", |v| {
        assert_eq!(v.oob_count()?, 0, "staged entries are not in the list");
        assert!(v.oob("imp-1")?.is_none(), "staged entry not visible");
        assert_eq!(v.oob_mac_owner(MAC_A)?, None, "staged MAC not indexed");
        Ok(())
    });
    let (res, entry, count) = match commit(store, "s1", import_opts(3, 2_000), true) {
        Ok(c) => c,
        Err(errors) => panic!("commit of a clean import refused: {errors:?}"),
    };
    let want = OobImportResult {
        added: 3,
        added_ids: vec![did("imp-1"), did("imp-2"), did("imp-3")],
        ..Default::default()
    };
    assert_eq!(res, want, "import result (ids in id order)");
    assert_eq!(count, 3, "the OOB count after the commit");
    let Some(entry) = entry else {
        panic!("the audit entry the commit was given is not returned")
    };
    assert_eq!(
        (entry.seq, entry.action.as_str(), entry.detail.as_str()),
        (2, "oob_import", "added 3, changed 0, removed 0"),
        "the import's audit entry, built from its result"
    );
    view(store, "after the commit", |v| {
        assert_eq!(v.oob_count()?, 3, "oob_count");
        match v.oob("imp-1")? {
            Some(o) => assert!(
                same_oob(&o, &oob("imp-1", Some(MAC_A))),
                "stored as staged: {o:?}"
            ),
            None => panic!("imp-1 not imported"),
        }
        assert_eq!(
            v.oob_mac_owner(MAC_A)?,
            Some("imp-1".into()),
            "MAC A indexed"
        );
        assert_eq!(
            v.oob_mac_owner(MAC_B)?,
            Some("imp-3".into()),
            "MAC B indexed"
        );
        let audit = v.audit_all()?;
        assert_eq!(
            audit.last(),
            Some(&entry),
            "the returned entry is the stored one"
        );
        assert!(
            verify_chain(GENESIS_HASH, &audit).is_ok(),
            "chain after an import"
        );
        Ok(())
    });
    assert_eq!(
        stage(store, "s1", &[oob("imp-1", Some(MAC_A))]),
        (1, vec![]),
        "the session's staging is gone after the commit"
    );
    ok(store.drop_oob_staging("s1"), "drop_oob_staging");
    assert_eq!(
        stage(store, "s1", &[oob("imp-9", None)]),
        (1, vec![]),
        "drop_oob_staging empties the session"
    );
    ok(
        store.drop_oob_staging("never-staged"),
        "dropping a session that staged nothing",
    );
}

/// A refused chunk stages nothing; a commit with refused entries or the
/// wrong count writes nothing (no entries, no audit) and keeps the staging.
pub fn oob_import_refusals_abort(store: &dyn Store) {
    apply(
        store,
        "an existing entry",
        vec![Change::PutOob(oob("old", Some(MAC_A)))],
    );
    assert_eq!(
        stage(store, "r", &[oob("r-1", None), oob("r-2", Some(MAC_B))]),
        (2, vec![]),
        "chunk"
    );
    let (_, errors) = stage(store, "r", &[oob("r-3", None), oob("r-1", None)]);
    assert!(
        errors
            .iter()
            .any(|e| e.index == 1 && e.device_id.as_deref() == Some("r-1")),
        "an id staged in an earlier chunk is refused at its index: {errors:?}"
    );
    let (_, errors) = stage(store, "r", &[oob("r-4", Some(MAC_B))]);
    assert!(
        errors.iter().any(|e| e.index == 0),
        "a MAC staged in an earlier chunk is refused: {errors:?}"
    );
    match commit(store, "r", import_opts(4, 10), true) {
        Err(errors) => assert!(!errors.is_empty(), "a count mismatch names a problem"),
        Ok(c) => panic!("refused chunks staged entries, or a wrong count committed: {c:?}"),
    }
    // r-1, r-2 staged; r-2's MAC is free but "old" holds MAC A.
    assert_eq!(
        stage(store, "r", &[oob("r-5", Some(MAC_A))]),
        (3, vec![]),
        "a third chunk"
    );
    match commit(store, "r", import_opts(3, 10), true) {
        Err(errors) => assert!(
            errors.iter().any(|e| e.device_id.as_deref() == Some("r-5")),
            "the entry asking for a MAC another entry holds is refused: {errors:?}"
        ),
        Ok(c) => panic!("an import taking another entry's MAC committed: {c:?}"),
    }
    view(store, "after refused commits", |v| {
        assert_eq!(v.oob_count()?, 1, "a refused commit adds nothing");
        assert!(v.oob("r-1")?.is_none(), "r-1 not added");
        assert_eq!(
            v.oob_mac_owner(MAC_A)?,
            Some("old".into()),
            "MAC A still old's"
        );
        assert!(v.audit_all()?.is_empty(), "a refused commit audits nothing");
        Ok(())
    });
    assert_eq!(
        stage(store, "r", &[oob("r-6", None)]),
        (4, vec![]),
        "a refused commit keeps the session's staging"
    );
    ok(store.drop_oob_staging("r"), "drop_oob_staging");
}

/// Replace (other credentials need it), prune (entries not in the import
/// go, their MACs freed), unchanged entries, and a dry run that writes
/// nothing and audits nothing.
pub fn oob_import_replace_prune_dry_run(store: &dyn Store) {
    apply(
        store,
        "existing entries",
        vec![
            Change::PutOob(oob("p-1", Some(MAC_A))),
            Change::PutOob(oob("p-2", None)),
            Change::PutOob(oob("p-3", Some(MAC_B))),
        ],
    );
    let mut moved = oob("p-1", Some(MAC_C));
    moved.created_at = 99;
    assert_eq!(
        stage(store, "x", &[moved, oob("p-2", None)]),
        (2, vec![]),
        "stage"
    );
    match commit(store, "x", import_opts(2, 3_000), true) {
        Err(errors) => assert!(
            errors.iter().any(|e| e.device_id.as_deref() == Some("p-1")),
            "other credentials without replace are refused: {errors:?}"
        ),
        Ok(c) => panic!("changed credentials committed without replace: {c:?}"),
    }
    let dry = CommitOptions {
        replace: true,
        prune: true,
        dry_run: true,
        ..import_opts(2, 3_000)
    };
    let (res, entry, _) = match commit(store, "x", dry, true) {
        Ok(c) => c,
        Err(errors) => panic!("dry run refused: {errors:?}"),
    };
    let want = OobImportResult {
        changed: 1,
        unchanged: 1,
        removed: 1,
        dry_run: true,
        changed_ids: vec![did("p-1")],
        removed_ids: vec![did("p-3")],
        ..Default::default()
    };
    assert_eq!(res, want, "dry-run result");
    assert_eq!(entry, None, "a dry run appends no audit entry");
    view(store, "after the dry run", |v| {
        assert_eq!(v.oob_count()?, 3, "a dry run removes nothing");
        assert_eq!(
            v.oob_mac_owner(MAC_A)?,
            Some("p-1".into()),
            "a dry run moves no MAC"
        );
        assert!(v.audit_all()?.is_empty(), "a dry run audits nothing");
        Ok(())
    });
    ok(store.drop_oob_staging("x"), "drop after the dry run");
    let mut moved = oob("p-1", Some(MAC_C));
    moved.created_at = 99;
    assert_eq!(
        stage(store, "x", &[moved, oob("p-2", None)]),
        (2, vec![]),
        "stage again"
    );
    let real = CommitOptions {
        dry_run: false,
        ..dry
    };
    let (res, entry, count) = match commit(store, "x", real, false) {
        Ok(c) => c,
        Err(errors) => panic!("replace+prune refused: {errors:?}"),
    };
    assert_eq!(
        res,
        OobImportResult {
            dry_run: false,
            ..want
        },
        "replace+prune result"
    );
    assert_eq!(
        (entry, count),
        (None, 2),
        "no audit asked for; two entries left"
    );
    view(store, "after replace+prune", |v| {
        assert_eq!(v.oob_count()?, 2, "p-3 pruned");
        assert!(v.oob("p-3")?.is_none(), "p-3 pruned");
        assert_eq!(
            v.oob_mac_owner(MAC_B)?,
            None,
            "the pruned entry's MAC is freed"
        );
        assert_eq!(v.oob_mac_owner(MAC_A)?, None, "p-1's old MAC is freed");
        assert_eq!(v.oob_mac_owner(MAC_C)?, Some("p-1".into()), "p-1's new MAC");
        match v.oob("p-1")? {
            Some(o) => assert_eq!(
                (o.mac, o.created_at, o.updated_at),
                (Some(mac(MAC_C)), 10, 3_000),
                "a changed entry keeps created_at and is updated at the commit's now"
            ),
            None => panic!("p-1 missing after replace"),
        }
        assert!(
            v.audit_all()?.is_empty(),
            "no audit entry when none is given"
        );
        Ok(())
    });
}

/// `drop_stale_oob_staging(live)` drops the staging of every session not in
/// `live` and keeps the live ones'; it returns 0 when nothing was stale.
pub fn oob_staging_dropped(store: &dyn Store) {
    let live: HashSet<String> = ["live".to_string()].into();
    assert_eq!(
        ok(
            store.drop_stale_oob_staging(&live),
            "drop_stale_oob_staging"
        ),
        0,
        "nothing staged yet"
    );
    assert_eq!(
        stage(store, "live", &[oob("st-1", None)]),
        (1, vec![]),
        "live session"
    );
    assert_eq!(
        stage(store, "dead", &[oob("st-2", None)]),
        (1, vec![]),
        "dead session"
    );
    let n = ok(
        store.drop_stale_oob_staging(&live),
        "drop_stale_oob_staging",
    );
    assert!(
        n > 0,
        "a stale session's staging was dropped (returned {n})"
    );
    assert_eq!(
        stage(store, "live", &[oob("st-3", None)]),
        (2, vec![]),
        "a live session keeps its staging"
    );
    assert_eq!(
        stage(store, "dead", &[oob("st-2", None)]),
        (1, vec![]),
        "the stale session starts over"
    );
    let everyone: HashSet<String> = ["live".to_string(), "dead".to_string()].into();
    assert_eq!(
        ok(
            store.drop_stale_oob_staging(&everyone),
            "drop_stale_oob_staging"
        ),
        0,
        "nothing stale"
    );
    assert_eq!(
        view(store, "oob_count", |v| v.oob_count()),
        0,
        "staging never reaches the list"
    );
}

static SNAPSHOT_FILES: AtomicU64 = AtomicU64::new(0);

/// `snapshot_into` copies one consistent state and counts what it holds
/// (import staging is not part of it).
pub fn snapshot_counts(store: &dyn Store) {
    apply(
        store,
        "records",
        vec![
            Change::PutDevice(device("snap-1")),
            Change::PutDevice(device("snap-2")),
            Change::PutPending(pending("snap-3", 1)),
            Change::PutOob(oob("snap-4", Some(MAC_A))),
            Change::PutOob(oob("snap-5", None)),
            Change::PutOob(oob("snap-6", None)),
            Change::PutToken(token("snap-jti", 100)),
            Change::Audit(draft(1, "daemon", "a", None, "")),
            Change::Audit(draft(2, "daemon", "b", None, "")),
            Change::PutCert(cert("5a", "snap-1", 100)),
        ],
    );
    assert_eq!(
        stage(store, "snap", &[oob("snap-7", None)]),
        (1, vec![]),
        "staged"
    );
    assert!(
        !store.location().is_empty(),
        "location names where the data lives"
    );
    let path = std::env::temp_dir().join(format!(
        "idprov-store-conformance-{}-{}.snapshot",
        std::process::id(),
        SNAPSHOT_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path);
    let file = ok(file, &format!("creating {}", path.display()));
    let counts = store.snapshot_into(file);
    let _ = std::fs::remove_file(&path);
    let counts = ok(counts, "snapshot_into");
    assert_eq!(
        counts,
        SnapshotCounts {
            devices: 2,
            pending: 1,
            oob: 3,
            tokens: 1,
            audit: 2,
            certificates: 1,
        },
        "snapshot counts"
    );
}
