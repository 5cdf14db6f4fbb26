"""Independent device: PyJWT + cryptography make the proof, and the daemon's
token is verified in PyJWT against the daemon's JWKS.

usage: interop.py URL CA_FILE   (devices py-es256 / py-rs256 must be OOB-listed
                                 with MAC 02:00:00:00:00:01 / :02)
Prints one JSON line; exits non-zero on any failure.
"""
import base64
import hashlib
import json
import ssl
import sys
import urllib.error
import urllib.request
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

URL, CAFILE = sys.argv[1], sys.argv[2]
CTX = ssl.create_default_context(cafile=CAFILE)


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def get(path):
    with urllib.request.urlopen(URL + path, context=CTX) as r:
        return json.load(r)


def post(path, body):
    req = urllib.request.Request(
        URL + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=CTX) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def thumbprint(pub) -> str:
    """RFC 7638, computed here independently of the daemon."""
    nums = pub.public_numbers()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = {"crv": "P-256", "kty": "EC", "x": b64(nums.x.to_bytes(32, "big")),
               "y": b64(nums.y.to_bytes(32, "big"))}
    else:
        jwk = {"e": b64(uint(nums.e)), "kty": "RSA", "n": b64(uint(nums.n))}
    canon = json.dumps(jwk, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canon.encode()).digest())


def device(device_id, mac, key, alg, info):
    pub = key.public_key()
    pem = pub.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    kid = thumbprint(pub)
    now = info["time"]  # the server's clock, as a device without RTC would
    proof = jwt.encode(
        {"sub": device_id, "aud": f"idprov:{info['daemon_id']}:provision",
         "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex},
        key, algorithm=alg, headers={"typ": "idprov-proof+jwt", "kid": kid},
    )
    status, body = post("/idprov/v1/provision",
                        {"device_id": device_id, "public_key": pem, "mac": mac, "proof": proof})
    assert status == 200, (status, body)
    assert body["key_id"] == kid, (body["key_id"], kid)
    # A replay of the same proof is refused.
    status2, body2 = post("/idprov/v1/provision",
                          {"device_id": device_id, "public_key": pem, "mac": mac, "proof": proof})
    assert status2 == 401 and body2["code"] == "invalid_proof", (status2, body2)

    token = body["token"]
    jwks = get("/.well-known/jwks.json")
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256", header
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    verifier = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    claims = jwt.decode(token, verifier, algorithms=["ES256"],
                        audience=info["token_audience"], issuer=info["daemon_id"])
    assert claims["sub"] == device_id and claims["cnf"]["jkt"] == kid, claims
    return kid


def main():
    info = get("/idprov/v1/info")
    es = device("py-es256", "02:00:00:00:00:01", ec.generate_private_key(ec.SECP256R1()), "ES256", info)
    rs = device("py-rs256", "02:00:00:00:00:02",
                rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", info)
    print(json.dumps({"ok": True, "es256_kid": es, "rs256_kid": rs}))


if __name__ == "__main__":
    main()
