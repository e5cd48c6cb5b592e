//! The delivery clients' TLS: rustls with the ring provider (as the MLLP listener), trusting
//! the CA certificates of a PEM file, or else the system's trusted roots.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use super::NotifyError;
use crate::mllp::TlsError;
use crate::mllp::tls::certificates;

/// A client TLS configuration: the servers it trusts are those whose certificate chains to a
/// certificate of `ca_file` (PEM), or, without one, to a root the system trusts. `alpn` names
/// the application protocols offered (`http/1.1`; none for MLLP).
///
/// # Errors
/// The CA file cannot be read or holds no usable certificate, or (without one) the system has
/// no trusted root certificate.
pub fn client_config(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: path.to_owned(),
                    what: e.to_string(),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::Rustls(
                    "the system has no trusted root certificate: name a CA file".to_owned(),
                ));
            }
        }
    }
    // As the listener: the ring provider (key exchange X25519, P-256 or P-384).
    #[allow(deprecated)]
    let provider = Arc::new(crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// What a client needs to open TLS connections to one server.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl Connector {
    /// A connector for the server `server_name` (a DNS name or an IP address).
    pub(crate) fn new(
        ca_file: Option<&Path>,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> Result<Self, NotifyError> {
        let config = client_config(ca_file, alpn)?;
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| NotifyError::ServerName(server_name.to_owned()))?;
        Ok(Self {
            connector: TlsConnector::from(config),
            server_name,
        })
    }
}
