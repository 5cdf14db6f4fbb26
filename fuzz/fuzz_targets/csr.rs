//! PKCS#10 certificate signing requests sent with `provision`, `renew` and
//! mTLS renewal: `x509::check_csr`, the daemon's only look at them before it
//! signs a certificate.
//!
//! Input: the PEM text.
#![no_main]

use idprov_fuzz::DEVICE;
use idprovd_core::x509;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pem) = std::str::from_utf8(data) else {
        return;
    };
    let _ = x509::check_csr(pem, &DEVICE);
});
