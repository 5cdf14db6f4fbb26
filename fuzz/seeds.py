#!/usr/bin/env python3
"""Write the seed corpus (fuzz/corpus/TARGET/seed-*) from the fixed test keys
in fuzz/keys: valid proofs and tokens signed with them, keys in each format,
CSRs, OOB files, DNS-SD answers and JSON bodies, plus near misses. The fuzz
targets' input conventions are described at the top of each target.

    python3 fuzz/seeds.py        (needs PyJWT and cryptography, as the tests)

Seeds are deterministic except for signatures (ECDSA) and certificate
serials; rerunning rewrites the seed-* files and leaves found inputs alone.
"""

import base64
import datetime
import json
import os
import pathlib

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = pathlib.Path(__file__).resolve().parent
KEYS = HERE / "keys"
CORPUS = HERE / "corpus"

DAEMON_ID = "fuzz-daemon"
DEVICE_ID = "sensor-0001"
NOW = 1_800_000_000
PROOF_AUD = f"idprov:{DAEMON_ID}:provision"
TOKEN_AUD = "idprov-hub"


def key(name):
    return serialization.load_pem_private_key((KEYS / name).read_bytes(), None)


ES = key("device-es256.key.pem")
RS = key("device-rs256.key.pem")
DAEMON = key("daemon-signing.key.pem")


def pub_pem(k):
    return k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def pkcs1_pem(k):
    return k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()


def cert_pem(k, cn=DEVICE_ID):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(4242)
        .not_valid_before(t)
        .not_valid_after(t + datetime.timedelta(days=3650))
        .sign(k, hashes.SHA256())
    )
    return c.public_bytes(serialization.Encoding.PEM).decode()


def csr_pem(k, cn=DEVICE_ID, sans=None, ca=False, h=None):
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(k, h or hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def proof_claims(**over):
    c = {
        "sub": DEVICE_ID,
        "aud": PROOF_AUD,
        "iat": NOW - 5,
        "exp": NOW + 120,
        "jti": "c2VlZC1wcm9vZi1qdGktMDAwMQ",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def proofs():
    cbt = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    hdr = {"typ": "idprov-proof+jwt"}
    for sel, k, alg in ((0, ES, "ES256"), (1, RS, "RS256")):
        good = jwt.encode(proof_claims(), k, algorithm=alg, headers=hdr)
        write("proof", f"{alg}-valid", bytes([sel]) + good.encode())
        write("proof", f"{alg}-cbt", bytes([sel | 2]) + jwt.encode(
            proof_claims(cbt=cbt, nbf=NOW - 5, iss=DEVICE_ID), k, algorithm=alg, headers=hdr).encode())
        write("proof", f"{alg}-expired", bytes([sel]) + jwt.encode(
            proof_claims(iat=NOW - 3600, exp=NOW - 3000), k, algorithm=alg, headers=hdr).encode())
        write("proof", f"{alg}-kid", bytes([sel]) + jwt.encode(
            proof_claims(), k, algorithm=alg, headers={**hdr, "kid": "x"}).encode())
        # Structure-aware: header and claims, signed by the target.
        write("proof", f"{alg}-raw", bytes([0x80 | sel]) + compact({"alg": alg, **hdr}) + b"\n"
              + compact(proof_claims(cbt=cbt)))
    write("proof", "raw-jwk", b"\x80" + compact({"alg": "ES256", **hdr, "jwk": {"kty": "EC"}})
          + b"\n" + compact(proof_claims()))
    write("proof", "raw-crit", b"\x80" + compact({"alg": "ES256", **hdr, "crit": ["exp"]})
          + b"\n" + compact(proof_claims()))
    write("proof", "alg-none", b"\x00" + jwt.encode(proof_claims(), None, algorithm="none",
                                                   headers=hdr).encode())
    write("proof", "hs256", b"\x00" + jwt.encode(proof_claims(), "secret", algorithm="HS256",
                                                headers=hdr).encode())


def tokens():
    claims = {
        "iss": DAEMON_ID, "sub": DEVICE_ID, "aud": TOKEN_AUD, "iat": NOW - 60,
        "nbf": NOW - 60, "exp": NOW + 3600, "jti": "c2VlZC10b2tlbi1qdGk",
        "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
    }
    hdr = {"typ": "at+jwt", "kid": "fuzz-signing-key"}
    write("token", "valid", b"\x00" + jwt.encode(claims, DAEMON, algorithm="ES256", headers=hdr).encode())
    write("token", "expired", b"\x00" + jwt.encode({**claims, "exp": NOW - 1}, DAEMON,
                                                  algorithm="ES256", headers=hdr).encode())
    write("token", "foreign-kid", b"\x00" + jwt.encode(claims, DAEMON, algorithm="ES256",
                                                      headers={**hdr, "kid": "other"}).encode())
    write("token", "raw", b"\x80" + compact({"alg": "ES256", **hdr}) + b"\n" + compact(claims))
    write("token", "raw-foreign", b"\x80" + compact({"alg": "ES256", **hdr}) + b"\n"
          + compact({**claims, "aud": "elsewhere"}))


def keys():
    # Selector: 0 none, 1 RSA_PEM, 2 RSA_X509_PEM, 3 ES256_PEM, 4 ES256_X509_PEM.
    write("public_key", "es256-pkix", b"\x03" + pub_pem(ES).encode())
    write("public_key", "es256-pkix-undeclared", b"\x00" + pub_pem(ES).encode())
    write("public_key", "rsa-pkix", b"\x01" + pub_pem(RS).encode())
    write("public_key", "rsa-pkcs1", b"\x01" + pkcs1_pem(RS).encode())
    write("public_key", "es256-cert", b"\x04" + cert_pem(ES).encode())
    write("public_key", "rsa-cert", b"\x02" + cert_pem(RS).encode())
    write("public_key", "crlf", b"\x00" + pub_pem(ES).replace("\n", "\r\n").encode())
    write("public_key", "mismatch", b"\x01" + pub_pem(ES).encode())
    p384 = ec.generate_private_key(ec.SECP384R1())
    write("public_key", "p384", b"\x00" + pub_pem(p384).encode())
    write("public_key", "labels-differ", b"\x00" + pub_pem(ES).replace(
        "END PUBLIC KEY", "END RSA PUBLIC KEY").encode())


def csrs():
    uri = f"urn:idprov:device:{DEVICE_ID}"
    write("csr", "es256", csr_pem(ES))
    write("csr", "rsa", csr_pem(RS))
    write("csr", "es256-sans", csr_pem(ES, sans=[x509.DNSName(DEVICE_ID),
                                                 x509.UniformResourceIdentifier(uri)]))
    write("csr", "foreign-cn", csr_pem(ES, cn="other"))
    write("csr", "ca", csr_pem(RS, ca=True))
    write("csr", "sha384", csr_pem(ES, h=hashes.SHA384()))
    write("csr", "new-label", csr_pem(ES).replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"))


def oob_files():
    es, rs, cert = pub_pem(ES), pkcs1_pem(RS), cert_pem(ES)
    q = lambda s: '"' + s.replace('"', '""') + '"'
    csv = ("device_id,public_key,key_format,mac,secret,expires,note\n"
           f"line7-0001,{q(es)},ES256_PEM,,,,\n"
           "sensor-12,,,02:00:5e:10:00:12,,2037-01-01,hall B\n"
           "gw-3,,,,7Kq2-v9Lm-Xw4p,,\n"
           f"cam-9,{q(rs)},RSA_PEM,,,2040-01-01T12:00:00Z,'=formula\n"
           "dev-file,key.pem,,,,,key by path\n")
    write("oob_file", "csv", b"\x00" + csv.encode())
    write("oob_file", "csv-crlf-bom", b"\x00" + b"\xef\xbb\xbf" + csv.replace("\n", "\r\n").encode())
    write("oob_file", "csv-ragged", b"\x00device_id,mac\nx-1,02:00:5e:10:00:01,extra\n")
    write("oob_file", "csv-dup-header", b"\x00device_id,device_id\na,b\n")
    entries = [
        {"device_id": "line7-0001", "public_key": es, "key_format": "ES256_PEM"},
        {"device_id": "sensor-12", "mac": "02:00:5e:10:00:12", "expires": "2037-01-01", "note": "hall B"},
        {"device_id": "gw-3", "secret": "7Kq2-v9Lm-Xw4p", "expires": 2100000000},
        {"device_id": "cert-1", "public_key": cert, "key_format": "ES256_X509_PEM"},
    ]
    write("oob_file", "json", b"\x01" + json.dumps(entries, indent=1).encode())
    write("oob_file", "json-bad-type", b"\x01" + b'[{"device_id": "a", "mac": 7}]')
    write("oob_file", "jsonl", b"\x02" + "\n".join(json.dumps(e) for e in entries).encode() + b"\n\n")
    write("oob_file", "jsonl-unknown", b'\x02{"device_id": "a", "secret": "12345678", "colour": 1}\n')


def field(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return tag + bytes([len(data)]) + data


def txt(**kv):
    out = b""
    for k, v in kv.items():
        s = f"{k}={v}".encode() if v is not None else k.encode()
        out += bytes([len(s)]) + s
    return out


def dnssd():
    ca = "3f1c" * 16
    hub = (field(b"N", "hub") + field(b"H", "hub.local.") + field(b"O", (8445).to_bytes(2, "big"))
           + field(b"A", bytes([192, 0, 2, 10])) + field(b"T", txt(v="1", path="/idprov/v1", ca=ca, id="hub-1")))
    rogue = (field(b"N", "rogue") + field(b"H", "evil.local.") + field(b"O", (443).to_bytes(2, "big"))
             + field(b"A", bytes([0xfe, 0x80] + [0] * 13 + [1])) + field(b"A", bytes(16))
             + field(b"T", txt(v="1", ca="AB" * 32, id="\x1b[2J", flag=None)))
    write("dnssd_txt", "one", hub)
    write("dnssd_txt", "pinned", field(b"P", ca) + hub + rogue)
    write("dnssd_txt", "tofu-two", hub + rogue)
    write("dnssd_txt", "v2", field(b"N", "new") + field(b"A", bytes([10, 0, 0, 1]))
          + field(b"T", txt(v="2", path="/other")))


def bodies():
    es = pub_pem(ES)
    proof = jwt.encode(proof_claims(), ES, algorithm="ES256", headers={"typ": "idprov-proof+jwt"})
    entry = {"device_id": "line7-0001", "public_key": es, "key_format": "ES256_PEM",
             "mac": "02:00:5e:10:00:12", "secret": "7Kq2-v9Lm-Xw4p", "expires": NOW + 86400,
             "note": "hall B"}
    creds = {"device_id": DEVICE_ID, "token": "a.b.c", "issued_at": NOW, "expires_at": NOW + 3600,
             "renew_after": NOW + 1800, "key_id": "k1", "certificate": cert_pem(ES),
             "ca_chain": [cert_pem(RS)]}
    seeds = {
        0: {"device_id": DEVICE_ID, "public_key": es, "key_format": "ES256_PEM",
            "mac": "02:00:5e:10:00:01", "secret": "s3cret-value", "proof": proof,
            "csr": csr_pem(ES)},
        1: {"token": "a.b.c", "proof": proof, "csr": csr_pem(RS)},
        2: {"token": "a.b.c"},
        3: {"device_id": DEVICE_ID, "proof": proof, "public_key": pkcs1_pem(RS),
            "key_format": "RSA_PEM", "key_proof": proof, "expires_at": NOW + 86400},
        4: {"csr": csr_pem(ES)},
        5: {"entries": [entry, {"device_id": "gw-3", "secret": "7Kq2-v9Lm-Xw4p"}],
            "replace": True, "dry_run": False},
        6: {"revision": 3, "reason": "seen on the bench"},
        7: {"paused": True, "reason": "maintenance"},
        8: {"public_key": cert_pem(ES), "key_format": "ES256_X509_PEM", "expires_at": NOW + 60,
            "revision": 2},
        9: {"public_key": es, "mac": "02:00:5e:10:00:01", "revision": 4, "reason": "swap"},
        10: {"pem": cert_pem(RS)},
        11: {"replace": False, "prune": True},
        12: {"seq": 0, "entries": [entry]},
        13: {"dry_run": True, "expected_entries": 1},
        14: {"status": "approved", **creds},
        15: {"protocol": "1", "daemon_id": DAEMON_ID, "api_path": "/idprov/v1"},
        17: {"code": "invalid_request", "message": "bad", "retry_after_secs": 3,
             "details": [{"index": 0, "device_id": "a", "message": "x"}], "request_id": "r1"},
        19: {"id": "imp-1", "idle_timeout_secs": 300},
        20: {"seq": 1, "staged": 10},
        21: {"added": 1},
        26: {"type": "pending_removed", "device_id": DEVICE_ID},
    }
    write("json_bodies", "14-pending", b"\x0e" + json.dumps(
        {"status": "pending", "device_id": DEVICE_ID, "retry_after_secs": 30,
         "verification_code": "1234-5678"}).encode())
    for sel, body in seeds.items():
        write("json_bodies", f"{sel:02}", bytes([sel]) + json.dumps(body).encode())
    write("json_bodies", "05-array", b"\x05" + json.dumps([[entry], True, False]).encode())
    write("json_bodies", "00-unknown", b"\x00" + json.dumps({**seeds[0], "extra": 1}).encode())


if __name__ == "__main__":
    proofs()
    tokens()
    keys()
    csrs()
    oob_files()
    dnssd()
    bodies()
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())))
