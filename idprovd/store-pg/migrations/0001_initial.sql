-- idprov store schema, version 1. Applied once, in one transaction, by the
-- first daemon that starts on an empty database (src/migrate.rs). Never
-- edit a migration that has shipped: add the next numbered file instead.
--
-- Keys are text in the "C" collation, so lists page in byte order of the
-- id as on redb. Each record keeps its indexed fields as columns (what the
-- daemon looks up, orders or purges by) and the record itself as jsonb.

-- The site: one row. The audit chain head, the clock high-water mark, the
-- event counter and the revocation generation live here, so every write
-- transaction that moves one of them takes this row's lock.
CREATE TABLE site (
    id               integer PRIMARY KEY CHECK (id = 1),
    site_id          text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    clock_high_water bigint,
    provisioning     jsonb,
    audit_seq        bigint NOT NULL DEFAULT 0,
    audit_hash       text NOT NULL,
    event_seq        bigint NOT NULL DEFAULT 0,
    revocation_version bigint NOT NULL DEFAULT 0,
    crl_der          bytea,
    crl_state        jsonb
);

CREATE TABLE devices (
    device_id  text COLLATE "C" PRIMARY KEY,
    status     text NOT NULL,
    record     jsonb NOT NULL
);

CREATE TABLE pending (
    device_id  text COLLATE "C" PRIMARY KEY,
    last_seen  bigint NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX pending_last_seen ON pending (last_seen);

CREATE TABLE oob (
    device_id  text COLLATE "C" PRIMARY KEY,
    mac        text,
    record     jsonb NOT NULL
);

-- MAC → the OOB entry that holds it (the last one that set it).
CREATE TABLE oob_mac (
    mac        text COLLATE "C" PRIMARY KEY,
    device_id  text COLLATE "C" NOT NULL
);

-- Proofs remembered until they expire (invariant I5): `device_id \n jti`.
CREATE TABLE replay (
    proof_key  text COLLATE "C" PRIMARY KEY,
    until      bigint NOT NULL
);
CREATE INDEX replay_until ON replay (until);

-- Every issued token (invariant I2), until it expires.
CREATE TABLE tokens (
    jti        text COLLATE "C" PRIMARY KEY,
    expires_at bigint NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX tokens_expires ON tokens (expires_at);

-- The hash-chained audit log, one column per field.
CREATE TABLE audit (
    seq        bigint PRIMARY KEY,
    at         bigint NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text,
    source     text,
    detail     text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL
);

-- Which device ids a key and a MAC were seen under (flags).
CREATE TABLE key_ids (
    kid        text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (kid, device_id)
);
CREATE TABLE mac_ids (
    mac        text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    PRIMARY KEY (mac, device_id)
);

CREATE TABLE certs (
    serial     text COLLATE "C" PRIMARY KEY,
    device_id  text COLLATE "C" NOT NULL,
    record     jsonb NOT NULL
);
CREATE INDEX certs_device ON certs (device_id, serial);

CREATE TABLE crl_entries (
    serial     text COLLATE "C" PRIMARY KEY,
    revoked_at bigint NOT NULL,
    not_after  bigint NOT NULL,
    reason     smallint NOT NULL
);

CREATE TABLE retired_keys (
    kid        text COLLATE "C" PRIMARY KEY,
    record     jsonb NOT NULL
);

CREATE TABLE registry_cas (
    fingerprint text COLLATE "C" PRIMARY KEY,
    record      jsonb NOT NULL
);

-- Bulk import staging, per session; dropped at commit or when stale.
CREATE TABLE oob_staging (
    sid        text COLLATE "C" NOT NULL,
    device_id  text COLLATE "C" NOT NULL,
    mac        text,
    -- The stored secret hash the uploaded secret was found equal to.
    same_secret text,
    record     jsonb NOT NULL,
    PRIMARY KEY (sid, device_id)
);
CREATE UNIQUE INDEX oob_staging_mac ON oob_staging (sid, mac);

-- What each committed unit told administrators, in commit order (seq comes
-- from site.event_seq under the site row's lock). Every daemon reads it by
-- cursor to carry the other daemons' changes on its own event stream.
CREATE TABLE events (
    seq        bigint PRIMARY KEY,
    origin     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    event      jsonb NOT NULL
);
