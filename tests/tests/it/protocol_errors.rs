//! Protocol-level errors (issue 13 item 12), sent as raw bytes over TLS:
//! what the daemon answers to requests no HTTP client would send. Each
//! answer is either our JSON error or one of the exceptions docs/protocol.md
//! lists (hyper answers those itself, before any of our code runs).

use std::time::Duration;

use idprov_tests::TestDaemon;
use idprov_tests::security::raw_exchange;

type R = anyhow::Result<()>;

/// Status, headers (lower case) and body of the first answer in `raw`.
fn split(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_or_the_documented_exceptions() -> R {
    let d = TestDaemon::start().await?;
    let token = {
        let (_, p) = idprov_admin_client::load_profile(Some(&d.profile_path()))?;
        p.token.expose().to_string()
    };
    let post =
        "POST /idprov/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let big = "a".repeat(70 * 1024);
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    // (what, request, status, JSON error body? — false: hyper's own empty answer)
    let cases: Vec<(&str, String, u16, bool)> = vec![
        (
            "conflicting Content-Length",
            format!("{post}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"),
            400,
            false,
        ),
        (
            "Content-Length not a number",
            format!("{post}Content-Length: 2x\r\n\r\n{{}}"),
            400,
            false,
        ),
        (
            "unknown Transfer-Encoding",
            format!("{post}Transfer-Encoding: gzip\r\n\r\n{{}}"),
            400,
            false,
        ),
        (
            "headers too large",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
            431,
            false,
        ),
        (
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
            431,
            false,
        ),
        (
            "broken chunked body",
            format!("{post}Transfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"),
            413,
            true,
        ),
        (
            "path segment not UTF-8",
            format!(
                "GET /idprov/v1/admin/devices/%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
            400,
            true,
        ),
        (
            "key id not UTF-8",
            format!(
                "DELETE /idprov/v1/admin/devices/d1/keys/%C3%28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
            400,
            true,
        ),
    ];
    for (what, request, status, json) in &cases {
        let raw = raw_exchange(
            d.addr,
            &d.ca_pem(),
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await?;
        let (got, head, body) = split(&raw);
        assert_eq!(got, *status, "{what}: {head} {body}");
        if *json {
            assert!(
                head.contains("content-type: application/json"),
                "{what}: {head}"
            );
            let v: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| anyhow::anyhow!("{what}: not JSON ({e}): {body}"))?;
            assert!(
                v["code"].is_string() && v["message"].is_string(),
                "{what}: {v}"
            );
            assert!(v["request_id"].is_string(), "{what}: {v}");
        } else {
            // The documented exceptions: hyper's own answer, empty, and the
            // connection closed (docs/protocol.md §8).
            assert!(
                head.contains("content-length: 0") && body.is_empty(),
                "{what}: {head} {body:?}"
            );
            assert!(head.contains("connection: close"), "{what}: {head}");
        }
    }
    Ok(())
}
