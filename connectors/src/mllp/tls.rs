//! MLLP over TLS: the listener's TLS configuration, from PEM files.
//!
//! rustls with the ring provider: TLS 1.2 and 1.3 with rustls's safe defaults (key exchange
//! X25519, P-256 or P-384; no post-quantum key exchange, which only rustls's aws-lc-rs provider
//! has). With a client CA,
//! every client must present a certificate it signed (mutual TLS): the listener then knows who
//! connects, which MLLP itself cannot tell.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

/// Why a TLS configuration cannot be made. Messages name the file, never its content.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file cannot be read, or holds nothing of what it should.
    #[error("{}: {what}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the certificates or the key.
    #[error("{0}")]
    Rustls(String),
}

/// The certificates of a PEM file, in order.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |what: String| TlsError::File {
        path: path.to_owned(),
        what,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no PEM certificate in it".to_owned()));
    }
    Ok(certs)
}

/// The TLS configuration of a listener: its certificate chain (`certificate`, PEM, the server's
/// certificate first) and private key (`key`, PEM: PKCS#8, PKCS#1 or SEC1), and, for mutual
/// TLS, the CA certificates client certificates must chain to (`client_ca`, PEM).
///
/// # Errors
/// A file cannot be read or holds no usable certificate or key, or the key does not match the
/// certificate.
pub fn server_config(
    certificate: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(certificate)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_owned(),
        what: format!("no usable PEM private key: {e}"),
    })?;
    // rustls deprecates the ring provider for lacking post-quantum key exchange (only its
    // aws-lc-rs provider has it); the key exchange here is X25519, P-256 or P-384.
    #[allow(deprecated)]
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: ca.to_owned(),
                    what: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}
