//! What a client needs to connect to a lake, and the ATTACH string built from it.

use serde::Serialize;

use crate::config::{Config, LakeConfig};
use crate::secret::Secret;

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
    /// Connection details for `lake`, with the admin password when it can be read.
    pub fn for_lake(config: &Config, lake: &LakeConfig) -> ConnectionInfo {
        let (password, source) = match (
            &config.postgres.admin_password,
            &config.postgres.admin_password_file,
        ) {
            _ if config.postgres.admin_password_secret.is_some() => (
                None,
                format!(
                    "Secrets Manager secret {}",
                    config
                        .postgres
                        .admin_password_secret
                        .as_ref()
                        .expect("checked")
                ),
            ),
            (Some(pw), Some(file)) => (
                Some(pw.clone()),
                format!("postgres.admin_password_file ({})", file.display()),
            ),
            (Some(pw), None) => (Some(pw.clone()), "postgres.admin_password".to_owned()),
            _ => {
                let file = config.generated_password_file();
                let pw = read_password_file(&file).ok().flatten();
                (pw, format!("generated, stored in {}", file.display()))
            }
        };
        let (host, port, sslmode) = match config.external() {
            Some(r) => (r.host.clone(), r.port, Some("require")),
            None => (config.client_host(), config.postgres.port, None),
        };
        ConnectionInfo {
            lake: lake.name.clone(),
            host,
            port,
            sslmode,
            dbname: lake.name.clone(),
            user: config.postgres.admin_user.clone(),
            data_path: lake.data_path.to_string(),
            password_source: source,
            password,
        }
    }

    /// The libpq connection string; the password only when `with_password`.
    pub fn conninfo(&self, with_password: bool) -> String {
        let mut s = format!("host={} port={} user={}", self.host, self.port, self.user);
        if with_password {
            if let Some(pw) = &self.password {
                s.push_str(" password=");
                s.push_str(&crate::postgres::conninfo_value(pw.expose()));
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
        format!(
            "ATTACH {} AS {}",
            crate::postgres::quote_literal(&target),
            self.lake
        )
    }
}

/// The admin password as a client needs it: from Secrets Manager (read now), the
/// configuration, or the generated file; `None` when the generated file is not readable.
pub async fn admin_password(
    config: &Config,
) -> Result<Option<Secret>, crate::secrets_manager::SecretError> {
    if let Some(r) = &config.postgres.admin_password_secret {
        let mut config = config.clone();
        let (_, aws) = config
            .prepare_aws()
            .await?
            .expect("a configured secret uses AWS");
        return Ok(Some(crate::secrets_manager::fetch(&aws, r).await?.password));
    }
    if let Some(pw) = &config.postgres.admin_password {
        return Ok(Some(pw.clone()));
    }
    Ok(read_password_file(&config.generated_password_file())
        .ok()
        .flatten())
}

/// The password stored in `file`: `None` when the file is missing or empty.
pub(crate) fn read_password_file(file: &std::path::Path) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(file) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(Secret::new(s.trim_end()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
