-- CFSSL's certificate database for SQLite (the "Up" of CFSSL's certdb/sqlite migration
-- 001_CreateCertificates.sql; Debian's golang-cfssl ships no migration). Create it once:
--   sqlite3 certs.db < certdb-sqlite.sql
-- and name it in db.json: {"driver":"sqlite3","data_source":"/absolute/path/certs.db"}
CREATE TABLE certificates (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  ca_label                 blob,
  status                   blob NOT NULL,
  reason                   int,
  expiry                   timestamp,
  revoked_at               timestamp,
  pem                      blob NOT NULL,
  PRIMARY KEY(serial_number, authority_key_identifier)
);

CREATE TABLE ocsp_responses (
  serial_number            blob NOT NULL,
  authority_key_identifier blob NOT NULL,
  body                     blob NOT NULL,
  expiry                   timestamp,
  PRIMARY KEY(serial_number, authority_key_identifier),
  FOREIGN KEY(serial_number, authority_key_identifier)
    REFERENCES certificates(serial_number, authority_key_identifier)
);
