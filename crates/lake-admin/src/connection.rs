//! What a client needs to connect to a lake, and the ATTACH string built from it.

use serde::Serialize;

use crate::settings::{ClientEndpoint, LakeConfig};
use base::Secret;

/// The connection details of one lake.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub lake: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub data_path: String,
    /// Where the password comes from when it is not shown.
    pub password_source: String,
    /// libpq's `sslmode` clients should use: `require` for an external PostgreSQL (whose
    /// `pg_hba.conf` is not ours); unset for the supervised one (TLS is offered, libpq's
    /// default `prefer` takes it).
    pub sslmode: Option<&'static str>,
    #[serde(skip)]
    pub password: Option<Secret>,
}

impl ConnectionInfo {
    /// Connection details for `lake` at `clients` as `user`, without a password.
    pub fn new(clients: &ClientEndpoint, user: &str, lake: &LakeConfig) -> ConnectionInfo {
        ConnectionInfo {
            lake: lake.name.clone(),
            host: clients.host.clone(),
            port: clients.port,
            sslmode: clients.sslmode,
            dbname: lake.name.clone(),
            user: user.to_owned(),
            data_path: lake.data_path.to_string(),
            password_source: String::new(),
            password: None,
        }
    }

    /// The libpq connection string; the password only when `with_password`.
    pub fn conninfo(&self, with_password: bool) -> String {
        let mut s = format!("host={} port={} user={}", self.host, self.port, self.user);
        if with_password {
            if let Some(pw) = &self.password {
                s.push_str(" password=");
                s.push_str(&base::conninfo_value(pw.expose()));
            }
        }
        s.push_str(" dbname=");
        s.push_str(&self.dbname);
        if let Some(mode) = self.sslmode {
            s.push_str(" sslmode=");
            s.push_str(mode);
        }
        s
    }

    /// `ATTACH 'ducklake:postgres:…' AS <lake>`, ready to paste into DuckDB.
    pub fn attach_sql(&self, with_password: bool) -> String {
        let target = format!("ducklake:postgres:{}", self.conninfo(with_password));
        format!("ATTACH {} AS {}", base::quote_literal(&target), self.lake)
    }
}
