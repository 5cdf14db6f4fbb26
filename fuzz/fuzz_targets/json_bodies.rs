//! JSON bodies from outside: every request body the daemon parses (device
//! and admin API, bulk import), and the answers the device client and the
//! admin tools parse. Each is deserialized as the daemon's `parse_json` and
//! the clients do (`serde_json::from_slice` into the protocol type); one
//! that parses must serialize and parse back to the same thing, and OOB
//! entries then go through the daemon's entry rules (`oob::validate_oob`).
//!
//! Input: one selector byte (which body), then the body.
#![no_main]

use idprov_fuzz::NOW;
use idprov_proto::admin::{
    AdminEvent, AlertList, DecisionRequest, DeviceView, OobEntryView, OobUpsertRequest,
    OobUpsertResult, Page, PendingView, ProvisioningState, WhoAmI,
};
use idprov_proto::device::{
    InfoResponse, ProvisionRequest, ProvisionResponse, RenewRequest, TokenStatusRequest,
    TokenStatusResponse,
};
use idprov_proto::oob_import::{
    OobImportChunk, OobImportChunkAck, OobImportCommit, OobImportResult, OobImportSession,
    OobImportStart,
};
use idprov_proto::x509::{
    AddKeyRequest, AdminKeyAddRequest, KeysResponse, MtlsRenewRequest, RegistryCaAddRequest,
    ReprovisionRequest,
};
use idprov_proto::{ErrorBody, admin::OobEntryInput};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parse as `T`; if that works, check the round trip and hand it back.
fn parse<T: Serialize + DeserializeOwned>(body: &[u8]) -> Option<T> {
    let t: T = serde_json::from_slice(body).ok()?;
    let first = serde_json::to_vec(&t);
    let first = match first {
        Ok(v) => v,
        Err(e) => panic!("parsed but does not serialize: {e}"),
    };
    let back: T = match serde_json::from_slice(&first) {
        Ok(b) => b,
        Err(e) => panic!(
            "own serialization does not parse: {e}: {}",
            String::from_utf8_lossy(&first)
        ),
    };
    let second = serde_json::to_vec(&back).unwrap_or_default();
    assert_eq!(first, second, "round trip changed the value");
    Some(t)
}

fn entries(e: &[OobEntryInput]) {
    let _ = idprovd_core::oob::validate_oob(e, NOW);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 28 {
        // Device API requests.
        0 => drop(parse::<ProvisionRequest>(body)),
        1 => drop(parse::<RenewRequest>(body)),
        2 => drop(parse::<TokenStatusRequest>(body)),
        3 => drop(parse::<AddKeyRequest>(body)),
        4 => drop(parse::<MtlsRenewRequest>(body)),
        // Admin API requests.
        5 => {
            if let Some(r) = parse::<OobUpsertRequest>(body) {
                entries(&r.entries);
            }
        }
        6 => drop(parse::<DecisionRequest>(body)),
        7 => drop(parse::<ProvisioningState>(body)),
        8 => drop(parse::<AdminKeyAddRequest>(body)),
        9 => drop(parse::<ReprovisionRequest>(body)),
        10 => drop(parse::<RegistryCaAddRequest>(body)),
        11 => drop(parse::<OobImportStart>(body)),
        12 => {
            if let Some(c) = parse::<OobImportChunk>(body) {
                entries(&c.entries);
            }
        }
        13 => drop(parse::<OobImportCommit>(body)),
        // Answers the device client reads.
        14 => drop(parse::<ProvisionResponse>(body)),
        15 => drop(parse::<InfoResponse>(body)),
        16 => drop(parse::<TokenStatusResponse>(body)),
        17 => drop(parse::<ErrorBody>(body)),
        // Answers the admin tools (idprov-oob, the TUI) read.
        18 => drop(parse::<KeysResponse>(body)),
        19 => drop(parse::<OobImportSession>(body)),
        20 => drop(parse::<OobImportChunkAck>(body)),
        21 => drop(parse::<OobImportResult>(body)),
        22 => drop(parse::<OobUpsertResult>(body)),
        23 => drop(parse::<Page<DeviceView>>(body)),
        24 => drop(parse::<Page<PendingView>>(body)),
        25 => drop(parse::<Page<OobEntryView>>(body)),
        26 => drop(parse::<AdminEvent>(body)),
        _ => {
            drop(parse::<AlertList>(body));
            drop(parse::<WhoAmI>(body));
        }
    }
});
