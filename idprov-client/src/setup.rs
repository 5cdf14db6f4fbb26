//! The setup-code trust mode (docs/protocol.md, "Setup codes"): with no CA
//! pinned, the device runs SPAKE2+ with each daemon it finds, on one TLS
//! connection whose RFC 9266 exporter value is in the exchange's Context.
//! Only a daemon that holds this device's verifier, and is the TLS peer
//! itself (not a relay), sends a confirmV that checks; the device then
//! proves its key and pins the CA that the confirmed session MACed.
//!
//! Nothing derived from the code leaves the device before the daemon's
//! confirmation is checked, except shareP, which reveals nothing testable
//! offline: a rogue gets one online guess per exchange and learns nothing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use idprov_pake::setup_code::ID_VERIFIER;
use idprov_pake::spake2plus::{Binding, PakeError, Prover};
use idprov_pake::{KdfParams, SetupCode};
use idprov_proto::device::{ProvisionRequest, ProvisionResponse};
use idprov_proto::setup::{
    CA_MAC_INFO, CONTEXT_PREFIX, FinishRequest, FinishResponse, ParamsRequest, ParamsResponse,
    StartRequest, StartResponse, paths,
};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::bound::BoundConn;
use crate::error::Error;
use crate::trust::PinnedCa;

/// Largest answer read in the exchange (a pending or approved answer with a
/// certificate chain fits easily).
const MAX_BODY: usize = 256 * 1024;

/// What a confirmed exchange gives the client.
pub(crate) struct Confirmed {
    pub ca: PinnedCa,
    pub daemon_id: String,
    pub proof_max_lifetime_secs: u64,
    pub answer: ProvisionResponse,
}

/// The request the client builds for step 2, from the daemon's time and id
/// and the connection's `cbt`.
pub(crate) type BuildProvision<'a> =
    dyn Fn(&StartResponse, Option<&str>) -> Result<ProvisionRequest, Error> + Send + Sync + 'a;

async fn post<Req: serde::Serialize, Resp: DeserializeOwned>(
    conn: &mut BoundConn,
    path: &str,
    req: &Req,
) -> Result<Resp, Error> {
    let body =
        serde_json::to_vec(req).map_err(|e| Error::config_from("encoding the request", e))?;
    let raw = conn.post(path, body, MAX_BODY, &[]).await?;
    if raw.status.is_success() {
        return serde_json::from_slice(&raw.body)
            .map_err(|e| Error::protocol_from(raw.status.as_u16(), "unreadable answer", e));
    }
    Err(crate::api::api_error(
        raw.status,
        crate::api::retry_after(&raw.headers),
        &raw.body,
    ))
}

fn decode(value: &str, what: &str) -> Result<Vec<u8>, Error> {
    B64.decode(value)
        .map_err(|e| Error::protocol_from(200, format!("{what} is not base64url"), e))
}

/// Runs the whole exchange with the daemon at `base`.
pub(crate) async fn exchange(
    base: &str,
    device_id: &idprov_proto::DeviceId,
    code: &SetupCode,
    build: &BuildProvision<'_>,
    timeout: Duration,
) -> Result<Confirmed, Error> {
    let run = async {
        // Nothing is trusted yet: the PAKE authenticates the peer, and its
        // Context binds it to this connection.
        let tls = Arc::new(crate::trust::bootstrap_tls_config()?);
        let mut conn = BoundConn::connect(&tls, base).await?;
        let exporter = conn.exporter.ok_or_else(|| {
            Error::untrusted(format!("{base}: the TLS connection has no exporter"))
        })?;
        let cbt = conn.cbt();

        let params: ParamsResponse = post(
            &mut conn,
            paths::PARAMS,
            &ParamsRequest {
                device_id: device_id.clone(),
            },
        )
        .await?;
        if params.kdf != "argon2id" {
            return Err(Error::protocol(
                200,
                format!("{base}: unknown setup-code KDF"),
            ));
        }
        let salt = decode(&params.salt, "salt")?;
        let kdf = KdfParams {
            memory_kib: params.memory_kib,
            iterations: params.iterations,
            parallelism: params.parallelism,
        };
        // The KDF is the costly part (Argon2id, 19 MiB by default): off the
        // async threads. A daemon asking for more than the bounds is refused
        // (CodeError::Params), so it cannot make the device allocate without limit.
        let (c, id) = (code.clone(), device_id.to_string());
        let secrets = tokio::task::spawn_blocking(move || c.derive(&id, &salt, &kdf))
            .await
            .map_err(|e| Error::config_from("setup-code KDF task", e))?
            .map_err(|e| {
                Error::untrusted_from(format!("{base}: setup-code parameters refused"), e)
            })?;

        let prover = Prover::start(secrets);
        let start: StartResponse = post(
            &mut conn,
            paths::START,
            &StartRequest {
                device_id: device_id.clone(),
                share_p: B64.encode(prover.share_p()),
            },
        )
        .await?;
        let ctx = [CONTEXT_PREFIX, &exporter[..]].concat();
        let binding = Binding {
            context: &ctx,
            id_prover: device_id.as_str().as_bytes(),
            id_verifier: ID_VERIFIER,
        };
        let done = prover
            .finish(
                &binding,
                &decode(&start.share_v, "share_v")?,
                &decode(&start.confirm_v, "confirm_v")?,
            )
            .map_err(|e| match e {
                PakeError::Confirmation => Error::untrusted(format!(
                    "{base} failed the setup code's key confirmation: it does not hold this device's code (a rogue server), or it relays to the daemon over another TLS connection; nothing was sent to it"
                )),
                other => Error::untrusted_from(format!("{base}: setup-code exchange refused"), other),
            })?;

        let finish: FinishResponse = post(
            &mut conn,
            paths::FINISH,
            &FinishRequest {
                exchange: start.exchange.clone(),
                confirm_p: B64.encode(done.confirm_p),
                provision: build(&start, cbt.as_deref())?,
            },
        )
        .await?;
        let mac = done.key.mac(CA_MAC_INFO, finish.ca_fingerprint.as_bytes());
        let given = decode(&finish.ca_mac, "ca_mac")?;
        if !bool::from(mac.as_slice().ct_eq(&given)) {
            return Err(Error::untrusted(format!(
                "{base}: the CA fingerprint is not authenticated by the setup-code session"
            )));
        }
        let ca = PinnedCa::from_pem(&finish.ca_pem)?;
        if ca.fingerprint() != finish.ca_fingerprint.to_ascii_lowercase() {
            return Err(Error::untrusted(format!(
                "{base}: the CA certificate does not match the authenticated fingerprint"
            )));
        }
        Ok(Confirmed {
            ca,
            daemon_id: start.daemon_id,
            proof_max_lifetime_secs: start.proof_max_lifetime_secs,
            answer: finish.answer,
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| Error::Network {
            server: base.to_string(),
            message: format!("setup-code exchange: no answer within {timeout:?}"),
            source: None,
        })?
}
