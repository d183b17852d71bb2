//! The connection details the configuration gives a client: the admin password and where it
//! comes from, on top of [`lake_admin::connection::ConnectionInfo`].

use crate::config::{Config, LakeConfig};
use crate::secret::Secret;
pub use lake_admin::connection::ConnectionInfo;

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
    let mut info =
        ConnectionInfo::new(&config.client_endpoint(), &config.postgres.admin_user, lake);
    info.password = password;
    info.password_source = source;
    info
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
