//! RFC 9383 Appendix C, the P256-SHA256-HKDF-SHA256-HMAC-SHA256 vectors.

use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

const CONTEXT: &[u8] = b"SPAKE2+-P256-SHA256-HKDF-SHA256-HMAC-SHA256 Test Vectors";
const W0: &str = "bb8e1bbcf3c48f62c08db243652ae55d3e5586053fca77102994f23ad95491b3";
const W1: &str = "7e945f34d78785b8a3ef44d0df5a1a97d6b3b460409a345ca7830387a74b1dba";
const L: &str = "04eb7c9db3d9a9eb1f8adab81b5794c1f13ae3e225efbe91ea487425854c7fc00f00bfedcbd09b2400142d40a14f2064ef31dfaa903b91d1faea7093d835966efd";
const X: &str = "d1232c8e8693d02368976c174e2088851b8365d0d79a9eee709c6a05a2fad539";
const SHARE_P: &str = "04ef3bd051bf78a2234ec0df197f7828060fe9856503579bb1733009042c15c0c1de127727f418b5966afadfdd95a6e4591d171056b333dab97a79c7193e341727";
const Y: &str = "717a72348a182085109c8d3917d6c43d59b224dc6a7fc4f0483232fa6516d8b3";
const SHARE_V: &str = "04c0f65da0d11927bdf5d560c69e1d7d939a05b0e88291887d679fcadea75810fb5cc1ca7494db39e82ff2f50665255d76173e09986ab46742c798a9a68437b048";
const Z: &str = "04bbfce7dd7f277819c8da21544afb7964705569bdf12fb92aa388059408d50091a0c5f1d3127f56813b5337f9e4e67e2ca633117a4fbd559946ab474356c41839";
const V: &str = "0458bf27c6bca011c9ce1930e8984a797a3419797b936629a5a937cf2f11c8b9514b82b993da8a46e664f23db7c01edc87faa530db01c2ee405230b18997f16b68";
const K_MAIN: &str = "4c59e1ccf2cfb961aa31bd9434478a1089b56cd11542f53d3576fb6c2a438a29";
const K_CONFIRM_P: &str = "871ae3f7b78445e34438fb284504240239031c39d80ac23eb5ab9be5ad6db58a";
const K_CONFIRM_V: &str = "ccd53c7c1fa37b64a462b40db8be101cedcf838950162902054e644b400f1680";
const CONFIRM_P: &str = "926cc713504b9b4d76c9162ded04b5493e89109f6d89462cd33adc46fda27527";
const CONFIRM_V: &str = "9747bcc4f8fe9f63defee53ac9b07876d907d55047e6ff2def2e7529089d3e68";
const K_SHARED: &str = "0c5f8ccd1413423a54f6c1fb26ff01534a87f893779c6e68666d772bfd91f3e7";

fn binding() -> Binding<'static> {
    Binding {
        context: CONTEXT,
        id_prover: b"client",
        id_verifier: b"server",
    }
}

fn secrets() -> ProverSecrets {
    let w0 = decode_scalar(&h(W0)).unwrap_or(Scalar::ZERO);
    let w1 = decode_scalar(&h(W1)).unwrap_or(Scalar::ZERO);
    ProverSecrets::new(w0, w1)
}

fn scalar(s: &str) -> Scalar {
    decode_scalar(&h(s)).unwrap_or(Scalar::ZERO)
}

#[test]
fn m_and_n_are_the_rfc_points() {
    let m = point(&M_COMPRESSED).to_affine().to_encoded_point(true);
    let n = point(&N_COMPRESSED).to_affine().to_encoded_point(true);
    assert_eq!(
        hex::encode(m.as_bytes()),
        "02886e2f97ace46e55ba9dd7242579f2993b64e16ef3dcab95afd497333d8fa12f"
    );
    assert_eq!(
        hex::encode(n.as_bytes()),
        "03d8bbd6c639c62937b04d997f38c3770719c629d7014d49a24b4f98baa1292b49"
    );
}

#[test]
fn verifier_record_is_l_of_the_vectors() {
    let rec = secrets().verifier();
    assert_eq!(hex::encode(rec.l_bytes()), L);
    assert_eq!(hex::encode(rec.w0_bytes()), W0);
}

#[test]
fn transcript_and_key_schedule_match_the_vectors() {
    let tt = transcript(&binding(), &h(SHARE_P), &h(SHARE_V), &h(Z), &h(V), &h(W0));
    assert_eq!(hex::encode(Sha256::digest(&tt)), K_MAIN);
    let keys = schedule(&tt);
    assert_eq!(hex::encode(keys.confirm_p), K_CONFIRM_P);
    assert_eq!(hex::encode(keys.confirm_v), K_CONFIRM_V);
    assert_eq!(hex::encode(keys.shared), K_SHARED);
}

#[test]
fn full_exchange_matches_the_vectors() {
    let prover = Prover::start_with(secrets(), scalar(X));
    assert_eq!(hex::encode(prover.share_p()), SHARE_P);
    let record = VerifierRecord::from_bytes(&h(W0), &h(L)).expect("vector record");
    let (verifier, answer) =
        Verifier::respond_with(&record, &binding(), prover.share_p(), scalar(Y)).expect("respond");
    assert_eq!(hex::encode(answer.share_v), SHARE_V);
    assert_eq!(hex::encode(answer.confirm_v), CONFIRM_V);
    let done = prover
        .finish(&binding(), &answer.share_v, &answer.confirm_v)
        .expect("prover accepts confirmV");
    assert_eq!(hex::encode(done.confirm_p), CONFIRM_P);
    assert_eq!(hex::encode(done.key.as_bytes()), K_SHARED);
    let key = verifier
        .verify(&done.confirm_p)
        .expect("verifier accepts confirmP");
    assert_eq!(hex::encode(key.as_bytes()), K_SHARED);
}

#[test]
fn random_exchange_agrees_and_another_context_fails() {
    let record = secrets().verifier();
    let prover = Prover::start(secrets());
    let (verifier, answer) =
        Verifier::respond(&record, &binding(), prover.share_p()).expect("respond");
    let other = Binding {
        context: b"another TLS connection",
        ..binding()
    };
    // A prover whose transcript differs (a relay's other TLS connection)
    // refuses the verifier's confirmation.
    let p2 = Prover::start(secrets());
    let (_, answer2) = Verifier::respond(&record, &other, p2.share_p()).expect("respond");
    assert_eq!(
        p2.finish(&binding(), &answer2.share_v, &answer2.confirm_v)
            .err(),
        Some(PakeError::Confirmation)
    );
    let done = prover
        .finish(&binding(), &answer.share_v, &answer.confirm_v)
        .expect("finish");
    let key = verifier.verify(&done.confirm_p).expect("verify");
    assert_eq!(key.as_bytes(), done.key.as_bytes());
}

#[test]
fn wrong_w1_fails_confirmation() {
    let record = secrets().verifier();
    let wrong = ProverSecrets::new(scalar(W0), scalar(X));
    let prover = Prover::start(wrong);
    let (_, answer) = Verifier::respond(&record, &binding(), prover.share_p()).expect("respond");
    assert_eq!(
        prover
            .finish(&binding(), &answer.share_v, &answer.confirm_v)
            .err(),
        Some(PakeError::Confirmation)
    );
}

#[test]
fn bad_points_are_refused() {
    let record = secrets().verifier();
    let mut off_curve = h(SHARE_P);
    off_curve[64] ^= 1;
    let compressed = point(&M_COMPRESSED).to_affine().to_encoded_point(true);
    for bad in [
        vec![0u8],
        off_curve,
        compressed.as_bytes().to_vec(),
        vec![4u8; 65],
        Vec::new(),
    ] {
        assert_eq!(
            Verifier::respond(&record, &binding(), &bad).err(),
            Some(PakeError::BadPoint),
            "{}",
            hex::encode(&bad)
        );
    }
}

#[test]
fn wide_reduction_is_mod_the_order() {
    // (2^256 - 1 + 1) as 40 bytes: hi = 1, lo = 0 → 2^256 mod p.
    let mut b = [0u8; 40];
    b[7] = 1;
    let got = reduce_wide(&b);
    // p = ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551,
    // so 2^256 - p = 00000000ffffffff00000000000000004319055258e8617b0c46353d039cdaaf.
    assert_eq!(
        hex::encode(got.to_repr()),
        "00000000ffffffff00000000000000004319055258e8617b0c46353d039cdaaf"
    );
    let small = reduce_wide(
        &[0u8; 39]
            .iter()
            .copied()
            .chain([5u8])
            .collect::<Vec<_>>()
            .try_into()
            .unwrap_or([0; 40]),
    );
    assert_eq!(small, Scalar::from(5u64));
}
