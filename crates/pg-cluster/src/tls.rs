//! The self-signed TLS certificate generated at first boot when none is configured.

use std::path::Path;

use super::ClusterError;

/// Returns the certificate and key already in PGDATA, or generates a self-signed pair for
/// `host` (plus `localhost` and `127.0.0.1`).
pub(super) fn existing_or_new(
    pgdata: &Path,
    host: &str,
) -> Result<(Vec<u8>, Vec<u8>), ClusterError> {
    let (cert, key) = (pgdata.join("server.crt"), pgdata.join("server.key"));
    if let (Ok(c), Ok(k)) = (std::fs::read(&cert), std::fs::read(&key)) {
        if !c.is_empty() && !k.is_empty() {
            return Ok((c, k));
        }
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !names.iter().any(|n| n == host) {
        names.push(host.to_owned());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ClusterError::Tls(format!("generate a self-signed certificate: {e}")))?;
    tracing::info!(host, "generated a self-signed TLS certificate; set postgres.tls_cert_file and tls_key_file to use your own");
    Ok((
        certified.cert.pem().into_bytes(),
        certified.key_pair.serialize_pem().into_bytes(),
    ))
}
