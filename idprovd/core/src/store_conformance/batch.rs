//! Conformance checks of [`Store::transact_batch`] (group commit): order,
//! isolation of a refused decision, and a one-time secret consumed once.

use super::*;

/// A decision that consumes the one-time secret of OOB entry `id` and
/// admits device `dev`; refused when the secret is already consumed.
fn consume_secret(
    id: &'static str,
    dev: &'static str,
    at: i64,
) -> impl FnMut(&dyn StoreView, &mut Unit) -> Result<(), Error> + Send {
    move |v, u| {
        let mut entry = v
            .oob(id)?
            .ok_or_else(|| Error::not_found("conformance: no OOB entry"))?;
        if entry.secret_consumed_at.is_some() {
            return Err(Error::conflict("conformance: secret already consumed"));
        }
        entry.secret_consumed_at = Some(at);
        u.change(Change::PutOob(entry));
        u.upsert_device(&device(dev));
        u.audit(draft(
            at,
            "daemon",
            "device_admitted",
            Some(dev),
            "by secret",
        ));
        Ok(())
    }
}

/// Two decisions in one batch consume the same one-time secret: the first
/// wins, the second reads it consumed and is refused; only the first's
/// device is stored.
pub fn batch_one_time_secret_once(store: &dyn Store) {
    let mut entry = oob("batch-secret", None);
    entry.secret_hash = Some("hash".into());
    entry.secret_salt = Some("salt".into());
    apply(
        store,
        "OOB entry with a secret",
        vec![Change::PutOob(entry)],
    );
    let mut first = consume_secret("batch-secret", "batch-first", 100);
    let mut second = consume_secret("batch-secret", "batch-second", 101);
    let mut batch: [&mut Decide<'_>; 2] = [&mut first, &mut second];
    let slots = ok(
        store.transact_batch(&mut batch),
        "batch of two decisions on one secret",
    );
    assert_eq!(slots.len(), 2, "one slot per decision");
    assert!(slots[0].is_ok(), "the first decision wins: {:?}", slots[0]);
    match &slots[1] {
        Err(Error::Conflict(m)) if m == "conformance: secret already consumed" => {}
        other => panic!("the second decision must see the secret consumed, got {other:?}"),
    }
    view(store, "state after the batch", |v| {
        let e = v.oob("batch-secret")?;
        assert_eq!(
            e.and_then(|e| e.secret_consumed_at),
            Some(100),
            "consumed by the first decision"
        );
        assert!(v.device("batch-first")?.is_some(), "first device stored");
        assert_eq!(v.device("batch-second")?, None, "refused device not stored");
        Ok(())
    });
}

/// A refused decision in the middle of a batch writes nothing and leaves
/// the others: the decision after it sees the one before it, the audit
/// chain holds the two committed entries in order, and each committed
/// decision's events carry its own entry.
pub fn batch_refusal_leaves_others(store: &dyn Store) {
    let mut a = |_: &dyn StoreView, u: &mut Unit| -> Result<(), Error> {
        u.change(Change::PutDevice(device("batch-a")));
        u.audit(draft(1, "daemon", "a", Some("batch-a"), "a"));
        Ok(())
    };
    let mut b = |_: &dyn StoreView, u: &mut Unit| -> Result<(), Error> {
        u.change(Change::PutDevice(device("batch-b")));
        u.change(Change::AdvanceClock(9000));
        u.audit(draft(2, "daemon", "b", Some("batch-b"), "must not be kept"));
        Err(Error::conflict("conformance: b refused"))
    };
    let mut c = |v: &dyn StoreView, u: &mut Unit| -> Result<(), Error> {
        if v.device("batch-a")?.is_none() {
            return Err(Error::conflict("conformance: c does not see a"));
        }
        if v.device("batch-b")?.is_some() {
            return Err(Error::conflict("conformance: c sees the refused b"));
        }
        u.change(Change::PutDevice(device("batch-c")));
        u.audit(draft(3, "daemon", "c", Some("batch-c"), "c"));
        Ok(())
    };
    let mut batch: [&mut Decide<'_>; 3] = [&mut a, &mut b, &mut c];
    let slots = ok(
        store.transact_batch(&mut batch),
        "batch with a refusal in the middle",
    );
    assert_eq!(slots.len(), 3, "one slot per decision");
    let mut slots = slots.into_iter();
    let (sa, sb, sc) = (slots.next(), slots.next(), slots.next());
    let audit_of = |slot: Option<Result<Vec<AdminEvent>, Error>>, who: &str| -> AuditEntry {
        match slot {
            Some(Ok(events)) => events
                .into_iter()
                .find_map(|e| match e {
                    AdminEvent::Audit { entry } => Some(entry),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("decision {who} announces its audit entry")),
            other => panic!("decision {who} must be committed, got {other:?}"),
        }
    };
    let ea = audit_of(sa, "a");
    assert!(
        matches!(&sb, Some(Err(Error::Conflict(m))) if m == "conformance: b refused"),
        "the refused decision's error comes back as is, got {sb:?}"
    );
    let ec = audit_of(sc, "c");
    assert_eq!((ea.action.as_str(), ec.action.as_str()), ("a", "c"));
    assert_eq!(ec.seq, ea.seq + 1, "c's entry follows a's in the chain");
    assert_eq!(ec.prev_hash, ea.hash, "c's entry chains to a's");
    view(store, "state after the batch", |v| {
        assert!(v.device("batch-a")?.is_some(), "a stored");
        assert_eq!(v.device("batch-b")?, None, "refused b not stored");
        assert!(v.device("batch-c")?.is_some(), "c stored");
        assert_eq!(v.clock_high_water()?, None, "refused b's clock not kept");
        let chain = v.audit_all()?;
        assert_eq!(
            seqs(&chain),
            vec![ea.seq, ec.seq],
            "only a's and c's entries"
        );
        assert!(
            verify_chain(GENESIS_HASH, &chain).is_ok(),
            "the chain verifies"
        );
        Ok(())
    });
}
