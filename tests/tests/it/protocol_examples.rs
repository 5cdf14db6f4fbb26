//! The example exchanges of docs/protocol.md §12 are produced here, from a
//! real daemon driven over HTTPS, so the document cannot drift from the
//! daemon: each fenced block between `<!-- example: NAME -->` and
//! `<!-- /example -->` must equal what this test renders. On a difference
//! the test fails and names the blocks; `UPDATE_DOCS=1` rewrites them.
//!
//! What is random in a run (the daemon id, its CA and signing key, ECDSA
//! signatures, token ids, the admin secret) is replaced by the same
//! `<placeholder>` every time it appears. The clock is fixed and the two
//! device keys are fixed test keys, so times, thumbprints, verification
//! codes and revisions are the daemon's real answers.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use idprov_proto::device::{PROOF_TYP, ProofEndpoint, paths, proof_audience};
use idprov_tests::{DeviceKey, TestDaemon};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

/// 2026-11-21T23:35:31Z: the clock of every example.
const T0: i64 = 1_795_304_131;
const DEVICE: &str = "sensor-0042";
const MAC: &str = "02:00:5e:10:00:42";
const ADMIN: &str = "/idprov/v1/admin";

/// Fixed test keys (P-256), so thumbprints and codes stay the same.
const KEY1: (&str, &str) = (
    "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgg0j3rCMJYSXcexIT
pj0KziVGvVI5+6yZpKX1saM/OyShRANCAARFVbGSXVABQy5zea1fQx7VTr8VKOIp
R8xj5tmRQI9e0jm28os3YF4IAMeiC7Vo/lV/0eL0AprrRAhoikbI1iiZ
-----END PRIVATE KEY-----
",
    "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERVWxkl1QAUMuc3mtX0Me1U6/FSji
KUfMY+bZkUCPXtI5tvKLN2BeCADHogu1aP5Vf9Hi9AKa60QIaIpGyNYomQ==
-----END PUBLIC KEY-----
",
);
const KEY2: (&str, &str) = (
    "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6Ob2O8ArEQwgigGF
GmGuFCOWsvo2FWPfD+va1XpHGlKhRANCAARSCrn8wHl1I5TsPzDvA94mo+Gf0l+X
L9nPTTLm0KqO1YA6wAwVbhX009gPdUFY6JQa5zZF8OMy2M0/4Q/NHkla
-----END PRIVATE KEY-----
",
    "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUgq5/MB5dSOU7D8w7wPeJqPhn9Jf
ly/Zz00y5tCqjtWAOsAMFW4V9NPYD3VBWOiUGuc2RfDjMtjNP+EPzR5JWg==
-----END PUBLIC KEY-----
",
);

/// Response headers worth showing (the others vary or say nothing; the
/// CRL's `x-crl-next-update` comes from the daemon's start, before the
/// example clock is set).
const SHOWN_HEADERS: [&str; 4] = ["content-type", "retry-after", "cache-control", "allow"];

/// Replaces what is random in a run by stable placeholders.
#[derive(Default)]
struct Redactor {
    pairs: Vec<(String, String)>,
    tokens: usize,
}

impl Redactor {
    fn add(&mut self, actual: impl Into<String>, placeholder: impl Into<String>) {
        let actual = actual.into();
        if !actual.is_empty() && !self.pairs.iter().any(|(a, _)| *a == actual) {
            self.pairs.push((actual, placeholder.into()));
        }
    }

    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (a, p) in &self.pairs {
            s = s.replace(a.as_str(), p);
        }
        s
    }

    fn json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        // An error's request id is new with every request.
                        let x = match k.as_str() {
                            "request_id" => Value::String("<request id>".into()),
                            _ => self.json(x),
                        };
                        (k.clone(), x)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Name every token and certificate an answer carries.
    fn learn(&mut self, answer: &Value) {
        if let Some(t) = answer["token"].as_str() {
            self.tokens += 1;
            let n = self.tokens;
            self.add(t, format!("<token {n}>"));
            if let Some(jti) = token_claims(t).and_then(|c| c["jti"].as_str().map(str::to_string)) {
                self.add(jti, format!("<jti of token {n}>"));
            }
        }
        if let Some(c) = answer["certificate"].as_str() {
            self.add(c, "<client certificate, PEM>");
        }
    }
}

fn token_claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&raw).ok()
}

/// One request and its answer, as the document shows them.
struct Exchange<'a> {
    d: &'a TestDaemon,
    http: reqwest::Client,
    admin_token: String,
    red: Redactor,
    blocks: Vec<(String, String)>,
    jti: u32,
}

impl Exchange<'_> {
    /// A proof by `key` for `endpoint`, with a readable `jti`.
    fn proof(&mut self, key: &DeviceKey, endpoint: ProofEndpoint, label: &str) -> String {
        self.jti += 1;
        let now = self.d.now();
        let claims = json!({
            "sub": DEVICE,
            "aud": proof_audience(&self.d.daemon_id(), endpoint),
            "iat": now,
            "exp": now + 60,
            "jti": format!("example-proof-{:04}", self.jti),
        });
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(PROOF_TYP.to_string());
        h.kid = Some(key.kid().to_string());
        let proof = key.sign_raw(&h, &claims);
        self.red.add(proof.clone(), format!("<proof by {label}>"));
        proof
    }

    /// Send a request, render it into block `name`, return the answer.
    async fn call(
        &mut self,
        name: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut text = format!("{method} {path}\n");
        let mut req = self.http.request(method, self.d.endpoint(path));
        if path.starts_with(ADMIN) {
            req = req.bearer_auth(&self.admin_token);
            text.push_str("authorization: Bearer <admin token>\n");
        }
        if let Some(b) = &body {
            req = req.json(b);
            text.push_str("content-type: application/json\n\n");
            text.push_str(&pretty(&self.red.json(b))?);
            text.push('\n');
        }
        let resp = req.send().await.with_context(|| format!("{name}: send"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp.text().await?;
        let answer: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        self.red.learn(&answer);
        write!(
            text,
            "\nHTTP {} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )?;
        for h in SHOWN_HEADERS {
            if let Some(v) = headers.get(h).and_then(|v| v.to_str().ok()) {
                writeln!(text, "{h}: {}", self.red.text(v))?;
            }
        }
        if answer.is_null() {
            if !raw.is_empty() {
                write!(text, "\n{}\n", self.red.text(&raw).trim_end())?;
            }
        } else {
            write!(text, "\n{}\n", pretty(&self.red.json(&answer))?)?;
        }
        self.blocks.push((name.to_string(), text));
        Ok((status.as_u16(), answer))
    }

    async fn post(&mut self, name: &str, path: &str, body: Value) -> Result<(u16, Value)> {
        self.call(name, reqwest::Method::POST, path, Some(body))
            .await
    }

    /// A block that is not an exchange (a decoded proof or token).
    fn note(&mut self, name: &str, header: &Value, claims: &Value) -> Result<()> {
        let text = format!(
            "{}\n{}\n",
            pretty(&self.red.json(header))?,
            pretty(&self.red.json(claims))?
        );
        self.blocks.push((name.to_string(), text));
        Ok(())
    }
}

fn pretty(v: &Value) -> Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

fn jws_part(jws: &str, n: usize) -> Value {
    use base64::Engine;
    jws.split('.')
        .nth(n)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or(Value::Null)
}

/// Drive every device endpoint (and the admin calls the story needs) and
/// render the exchanges.
async fn render(d: &TestDaemon) -> Result<Vec<(String, String)>> {
    use reqwest::Method;
    let k1 = DeviceKey::from_pems(Algorithm::ES256, KEY1.0.into(), KEY1.1.into());
    let k2 = DeviceKey::from_pems(Algorithm::ES256, KEY2.0.into(), KEY2.1.into());
    let profile = std::fs::read_to_string(d.profile_path())?;
    let admin_token = profile
        .lines()
        .find_map(|l| l.strip_prefix("token = \""))
        .and_then(|l| l.strip_suffix('"'))
        .context("admin token in the profile")?
        .to_string();
    let mut red = Redactor::default();
    red.add(d.ca_pem(), "<CA certificate, PEM>");
    red.add(d.daemon.pki.ca_fingerprint.clone(), "<ca fingerprint>");
    red.add(d.daemon_id(), "<daemon id>");
    red.add(admin_token.clone(), "<admin token>");
    let mut x = Exchange {
        d,
        http: d.http(),
        admin_token,
        red,
        blocks: Vec::new(),
        jti: 0,
    };

    x.call("info", Method::GET, paths::INFO, None).await?;
    x.call("ca", Method::GET, paths::CA, None).await?;
    let (_, jwks) = x.call("jwks", Method::GET, paths::JWKS, None).await?;
    if let Some(k) = jwks["keys"][0].as_object() {
        for (field, label) in [("kid", "<signing key id>"), ("x", "<x>"), ("y", "<y>")] {
            if let Some(v) = k.get(field).and_then(Value::as_str) {
                x.red.add(v, label);
            }
        }
    }
    // The JWKS block was rendered before its values were known.
    x.blocks.pop();
    x.call("jwks", Method::GET, paths::JWKS, None).await?;
    x.call("healthz", Method::GET, paths::HEALTHZ, None).await?;

    let proof = x.proof(&k1, ProofEndpoint::Provision, "key 1");
    x.note("proof", &jws_part(&proof, 0), &jws_part(&proof, 1))?;
    let ask = |proof: String| json!({"device_id": DEVICE, "public_key": KEY1.1, "mac": MAC, "proof": proof});
    x.post("provision-pending", paths::PROVISION, ask(proof))
        .await?;
    let early = x.proof(&k1, ProofEndpoint::Provision, "key 1");
    x.post("provision-slow-down", paths::PROVISION, ask(early))
        .await?;

    let pending_path = format!("{}/pending?limit=10", ADMIN);
    let (_, list) = x
        .call("admin-pending", Method::GET, &pending_path, None)
        .await?;
    let revision = list["items"][0]["revision"].as_u64().unwrap_or(0);
    let approve = format!("{}/pending/{DEVICE}/approve", ADMIN);
    x.post("admin-approve", &approve, json!({"revision": revision}))
        .await?;

    d.clock.advance(30);
    let poll = x.proof(&k1, ProofEndpoint::Provision, "key 1");
    let (_, first) = x
        .post("provision-approved", paths::PROVISION, ask(poll))
        .await?;
    let token1 = first["token"].as_str().unwrap_or("").to_string();
    x.note("token", &jws_part(&token1, 0), &jws_part(&token1, 1))?;

    d.clock.advance(60);
    let renew = x.proof(&k1, ProofEndpoint::Renew, "key 1");
    let csr = idprov_tests::x509::csr(&k1, DEVICE)?;
    x.red.add(csr.clone(), "<CSR by key 1, PEM>");
    let (_, renewed) = x
        .post(
            "renew",
            paths::RENEW,
            json!({"token": token1, "proof": renew, "csr": csr}),
        )
        .await?;
    let token2 = renewed["token"].as_str().unwrap_or("").to_string();

    let (p1, p2) = (
        x.proof(&k1, ProofEndpoint::AddKey, "key 1"),
        x.proof(&k2, ProofEndpoint::AddKey, "key 2"),
    );
    x.post(
        "add-key",
        paths::KEYS,
        json!({"device_id": DEVICE, "proof": p1, "public_key": KEY2.1, "key_proof": p2}),
    )
    .await?;
    let rotate = x.proof(&k2, ProofEndpoint::Renew, "key 2");
    let (_, rotated) = x
        .post(
            "renew-rotate",
            paths::RENEW,
            json!({"token": token2, "proof": rotate}),
        )
        .await?;
    let token3 = rotated["token"].as_str().unwrap_or("").to_string();
    x.post(
        "token-status",
        paths::TOKEN_STATUS,
        json!({"token": token3}),
    )
    .await?;
    x.call(
        "crl",
        Method::GET,
        &format!("{}?format=pem", paths::CRL),
        None,
    )
    .await?;
    // The CRL's signature differs every run; its PEM is shown redacted.
    if let Some((_, block)) = x.blocks.last_mut() {
        *block = redact_pem_body(block);
    }

    let revoke = format!("{}/devices/{DEVICE}/revoke", ADMIN);
    x.post("admin-revoke", &revoke, json!({"reason": "stolen"}))
        .await?;
    x.post(
        "token-status-revoked",
        paths::TOKEN_STATUS,
        json!({"token": token3}),
    )
    .await?;
    let after = x.proof(&k2, ProofEndpoint::Renew, "key 2");
    x.post(
        "renew-revoked",
        paths::RENEW,
        json!({"token": token3, "proof": after}),
    )
    .await?;
    Ok(x.blocks)
}

/// Replace the base64 lines of PEM blocks by one placeholder line.
fn redact_pem_body(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            inside = true;
            out.push_str(line);
            out.push_str("\n<base64, different every run>\n");
            continue;
        }
        if line.starts_with("-----END ") {
            inside = false;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")
}

/// The document with every example block replaced by `blocks`; the names of
/// blocks that changed, and of markers without a block or blocks without a
/// marker.
fn splice(doc: &str, blocks: &[(String, String)]) -> Result<(String, Vec<String>)> {
    let mut out = String::new();
    let mut changed = Vec::new();
    let mut used = Vec::new();
    let mut rest = doc;
    while let Some(start) = rest.find("<!-- example: ") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let open_end = from.find("-->").context("unclosed example marker")? + 3;
        let name = from["<!-- example: ".len()..open_end - 3]
            .trim()
            .to_string();
        let close = from
            .find("<!-- /example -->")
            .context("example without its end marker")?;
        let Some((_, text)) = blocks.iter().find(|(n, _)| *n == name) else {
            bail!("docs/protocol.md has example {name:?}, which the test does not produce");
        };
        // Decoded JWS parts are JSON; everything else is an exchange.
        let lang = if text.starts_with('{') {
            "json"
        } else {
            "http"
        };
        let fenced = format!("<!-- example: {name} -->\n```{lang}\n{text}```\n");
        if from[..close] != fenced {
            changed.push(name.clone());
        }
        out.push_str(&fenced);
        used.push(name);
        rest = &from[close..];
    }
    out.push_str(rest);
    for (n, _) in blocks {
        if !used.contains(n) {
            changed.push(format!("{n} (no marker in the document)"));
        }
    }
    Ok((out, changed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_md_examples_are_what_the_daemon_answers() -> Result<()> {
    let d = TestDaemon::start_with(|c| {
        // The defaults a reader sees in §11, not the test's short waits.
        c.pending.retry_after = idprovd::Config::default().pending.retry_after;
    })
    .await?;
    d.clock.set(T0);
    let blocks = render(&d).await?;
    let path = doc_path();
    let doc = std::fs::read_to_string(&path)?;
    let (updated, changed) = splice(&doc, &blocks)?;
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, updated)?;
        return Ok(());
    }
    if !changed.is_empty() {
        let mut report = String::new();
        for name in &changed {
            if let Some((_, text)) = blocks.iter().find(|(n, _)| n == name) {
                write!(report, "\n--- {name}: the daemon now answers:\n{text}")?;
            } else {
                write!(report, "\n--- {name}")?;
            }
        }
        bail!(
            "docs/protocol.md §12 differs from the daemon in {changed:?}; \
             check the change and rerun with UPDATE_DOCS=1 to rewrite the blocks:{report}"
        );
    }
    Ok(())
}
