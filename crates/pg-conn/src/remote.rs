//! An external PostgreSQL (Amazon RDS, Aurora PostgreSQL, any PostgreSQL 15 or newer) that the
//! server administers over TLS as a login without SUPERUSER, instead of a cluster of its own
//! (`postgres.url`, docs/external-postgres.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::conninfo_value;

/// How the TLS certificate of an external PostgreSQL is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, certificate not checked (libpq's `sslmode=require`).
    Encrypt,
    /// The certificate chains to `sslrootcert` and names the host (libpq's `verify-full`).
    Full { root_cert: PathBuf },
}

/// Where an external PostgreSQL is, from `postgres.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePg {
    pub host: String,
    pub port: u16,
    /// The admin login: `CREATEDB CREATEROLE`, never needs SUPERUSER.
    pub user: String,
    /// The database the admin logs in to first (the lake registry's database is created from
    /// it).
    pub dbname: String,
    pub verify: Verify,
}

/// Why `postgres.url` is not usable; the text follows the key's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl RemotePg {
    /// Parses `postgres://USER@HOST[:PORT][/DB][?sslmode=require|verify-full&sslrootcert=PATH]`
    /// (or libpq's `key=value` form). `cwd` resolves a relative `sslrootcert`.
    pub fn parse(url: &str, cwd: &Path) -> Result<RemotePg, UrlError> {
        let bad = |m: String| UrlError(m);
        let (base, params) = split_params(url);
        let mut sslmode = "require".to_owned();
        let mut root_cert = None;
        let mut rest = Vec::new();
        for (k, v) in params {
            match k.as_str() {
                "sslmode" => sslmode = v,
                "sslrootcert" => root_cert = Some(cwd.join(v)),
                _ => rest.push(format!("{k}={v}")),
            }
        }
        let rebuilt = if rest.is_empty() {
            base.clone()
        } else if base.contains("://") {
            format!("{base}?{}", rest.join("&"))
        } else {
            format!("{base} {}", rest.join(" "))
        };
        let cfg: tokio_postgres::Config = rebuilt.parse().map_err(|e| {
            bad(format!(
                "does not parse ({e}); write postgres://USER@HOST:5432/postgres"
            ))
        })?;
        if cfg.get_password().is_some() {
            return Err(bad("holds a password, which would show in `config show` and logs; give it as postgres.admin_password, admin_password_file or admin_password_secret".into()));
        }
        let host = match cfg.get_hosts() {
            [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
            [] => {
                return Err(bad(
                    "names no host; write postgres://USER@HOST:5432/postgres".into(),
                ))
            }
            [_] => {
                return Err(bad(
                    "names a Unix socket; an external PostgreSQL is reached over TCP with TLS"
                        .into(),
                ))
            }
            _ => return Err(bad(
                "names several hosts; give one endpoint (Aurora: the cluster's writer endpoint)"
                    .into(),
            )),
        };
        let port = match cfg.get_ports() {
            [] => 5432,
            [p] => *p,
            _ => return Err(bad("names several ports; give one".into())),
        };
        let user = cfg
            .get_user()
            .ok_or_else(|| {
                bad(
                    "names no user; write postgres://USER@HOST:5432/postgres with the admin login"
                        .into(),
                )
            })?
            .to_owned();
        let dbname = cfg.get_dbname().unwrap_or("postgres").to_owned();
        let verify = match (sslmode.as_str(), root_cert) {
            ("require", None) => Verify::Encrypt,
            ("verify-full", Some(root_cert)) => Verify::Full { root_cert },
            ("verify-full", None) => return Err(bad("has sslmode=verify-full without sslrootcert; add sslrootcert=/path/to/global-bundle.pem (RDS's CA bundle)".into())),
            ("require", Some(_)) => return Err(bad("has sslrootcert with sslmode=require, which does not check it; use sslmode=verify-full".into())),
            (other, _) => return Err(bad(format!("has sslmode={other}; an external PostgreSQL is reached over TLS: use sslmode=require or verify-full"))),
        };
        Ok(RemotePg {
            host,
            port,
            user,
            dbname,
            verify,
        })
    }

    /// libpq's `sslmode` for this endpoint.
    pub fn sslmode(&self) -> &'static str {
        match self.verify {
            Verify::Encrypt => "require",
            Verify::Full { .. } => "verify-full",
        }
    }

    /// A libpq connection string (for DuckDB's postgres extension and clients).
    pub fn conninfo(&self, user: &str, password: Option<&str>, dbname: &str) -> String {
        let mut s = format!(
            "host={} port={} user={} dbname={} sslmode={}",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(user),
            conninfo_value(dbname),
            self.sslmode()
        );
        if let Verify::Full { root_cert } = &self.verify {
            s.push_str(" sslrootcert=");
            s.push_str(&conninfo_value(&root_cert.to_string_lossy()));
        }
        if let Some(pw) = password {
            s.push_str(" password=");
            s.push_str(&conninfo_value(pw));
        }
        s
    }

    /// A TLS session as `user` in `dbname`, its connection driven by a background task.
    /// `options` are server options (`-c name=value`).
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
        application_name: &str,
        options: Option<&str>,
    ) -> Result<tokio_postgres::Client, RemoteError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(dbname)
            .application_name(application_name)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(o) = options {
            cfg.options(o);
        }
        let tls = tls(&self.verify)?;
        let (client, conn) = cfg.connect(tls).await.map_err(|e| RemoteError::Connect {
            endpoint: format!("{}:{}", self.host, self.port),
            user: user.to_owned(),
            dbname: dbname.to_owned(),
            detail: crate::pg_message(&e),
            sqlstate: e.code().cloned(),
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "external PostgreSQL session closed");
            }
        });
        Ok(client)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot log in to the external PostgreSQL {endpoint} as {user} (database {dbname}): {detail}; check postgres.url, the admin password and the security group")]
    Connect {
        endpoint: String,
        user: String,
        dbname: String,
        detail: String,
        /// PostgreSQL's code for the refusal, when it answered: callers decide by it, never by
        /// the message's text.
        sqlstate: Option<tokio_postgres::error::SqlState>,
    },
    #[error("read the CA bundle {path} (sslrootcert in postgres.url): {detail}")]
    RootCert { path: String, detail: String },
}

impl RemoteError {
    /// The login was refused because its database does not exist (SQLSTATE 3D000).
    pub fn database_missing(&self) -> bool {
        matches!(self, RemoteError::Connect { sqlstate: Some(code), .. }
            if *code == tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
    }
}

/// `key=value` parameters after `?` (URL form) or among the words (libpq form).
fn split_params(url: &str) -> (String, Vec<(String, String)>) {
    let url = url.trim();
    let mut params = Vec::new();
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), params);
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((k.to_owned(), v.to_owned()));
        }
        return (base.to_owned(), params);
    }
    let mut base = Vec::new();
    for word in url.split_whitespace() {
        match word.split_once('=') {
            Some((k, v)) if k == "sslmode" || k == "sslrootcert" => {
                params.push((k.to_owned(), v.to_owned()));
            }
            _ => base.push(word),
        }
    }
    (base.join(" "), params)
}

/// rustls for sessions with a PostgreSQL: checking the certificate against `verify`'s CA
/// bundle, or only encrypting (`sslmode=require`).
pub fn tls(verify: &Verify) -> Result<tokio_postgres_rustls::MakeRustlsConnect, RemoteError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let config = match verify {
        Verify::Encrypt => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(any_certificate::AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::Full { root_cert } => {
            let bad = |detail: String| RemoteError::RootCert {
                path: root_cert.display().to_string(),
                detail,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(root_cert).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A verifier that accepts any certificate but still checks the handshake's signatures, as
/// libpq's `sslmode=require` does.
mod any_certificate {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    pub(super) struct AnyCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_endpoint_and_refuse_what_would_leak_or_not_encrypt() {
        let cwd = Path::new("/srv");
        let r =
            RemotePg::parse("postgres://catalog_admin@db.example.com:6432/catalog", cwd).unwrap();
        assert_eq!(
            (
                r.host.as_str(),
                r.port,
                r.user.as_str(),
                r.dbname.as_str(),
                r.sslmode()
            ),
            (
                "db.example.com",
                6432,
                "catalog_admin",
                "catalog",
                "require"
            )
        );
        let r = RemotePg::parse(
            "postgres://a@h/postgres?sslmode=verify-full&sslrootcert=certs/rds.pem",
            cwd,
        )
        .unwrap();
        assert_eq!(
            r.verify,
            Verify::Full {
                root_cert: "/srv/certs/rds.pem".into()
            }
        );
        assert_eq!((r.port, r.dbname.as_str()), (5432, "postgres"));
        let r = RemotePg::parse("host=h user=a sslmode=require", cwd).unwrap();
        assert_eq!((r.host.as_str(), r.user.as_str()), ("h", "a"));
        for (bad, says) in [
            ("postgres://a:pw@h/postgres", "password"),
            ("postgres://h/postgres", "no user"),
            ("postgres://a@h/postgres?sslmode=disable", "sslmode=disable"),
            ("postgres://a@h/postgres?sslmode=prefer", "sslmode=prefer"),
            ("postgres://a@h/postgres?sslmode=verify-full", "sslrootcert"),
            ("postgres://a@h,g/postgres", "several hosts"),
            ("host=/run/postgresql user=a", "Unix socket"),
            ("postgres://a@h:notaport/x", "does not parse"),
        ] {
            let e = RemotePg::parse(bad, cwd).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn conninfo_names_the_tls_mode_and_quotes_values() {
        let r = RemotePg::parse("postgres://a@h/postgres", Path::new("/")).unwrap();
        assert_eq!(
            r.conninfo("u", Some("p w"), "lake"),
            "host=h port=5432 user=u dbname=lake sslmode=require password='p w'"
        );
    }
}
