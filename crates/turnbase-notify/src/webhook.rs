//! Webhooks: which URLs may be registered, and the sender. An address in a
//! forbidden range (loopback, private, link-local, …) is refused both when
//! the URL is registered and when each request connects (the name could
//! resolve elsewhere by then), unless private targets are allowed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// A URL that passed the registration checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Why a URL or a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("only http and https URLs are accepted")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("URLs with a user name or password are not accepted")]
    Credentials,
    #[error("{0} is in a forbidden address range (loopback, private, link-local or reserved)")]
    Forbidden(IpAddr),
    #[error("the host {0} does not resolve")]
    Unresolved(String),
}

/// Whether an address is one a webhook may never reach by default.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a URL for registration: its form, and every address it
/// resolves to now.
pub async fn check_url(text: &str, allow_private: bool) -> Result<WebhookUrl, UrlError> {
    let url = url::Url::parse(text.trim()).map_err(|e| UrlError::Invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials);
    }
    if url.host_str().is_none() {
        return Err(UrlError::NoHost);
    }
    addresses(&url, allow_private).await?;
    Ok(WebhookUrl(url))
}

async fn addresses(url: &url::Url, allow_private: bool) -> Result<Vec<SocketAddr>, UrlError> {
    let port = url.port_or_known_default().ok_or(UrlError::NoHost)?;
    let found: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
            .await
            .map_err(|_| UrlError::Unresolved(name.to_string()))?
            .collect(),
        None => return Err(UrlError::NoHost),
    };
    if found.is_empty() {
        return Err(UrlError::Unresolved(
            url.host_str().unwrap_or("").to_string(),
        ));
    }
    if !allow_private && let Some(bad) = found.iter().find(|a| forbidden(a.ip())) {
        return Err(UrlError::Forbidden(bad.ip()));
    }
    Ok(found)
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl Delivery {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends webhook requests: one connection per request, the whole
/// exchange under one deadline (a tarpit cannot hold a slot longer).
#[derive(Clone)]
pub struct WebhookSender {
    pub timeout: Duration,
    pub allow_private: bool,
    tls: tokio_rustls::TlsConnector,
}

impl WebhookSender {
    pub fn new(timeout: Duration, allow_private: bool) -> WebhookSender {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        WebhookSender {
            timeout,
            allow_private,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// POSTs `body` with `headers`; never fails, the outcome says how it went.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Delivery {
        match tokio::time::timeout(self.timeout, self.exchange(url, headers, body)).await {
            Ok(Ok(status)) => Delivery {
                status: Some(status),
                error: (!(200..300).contains(&status))
                    .then(|| format!("the receiver answered {status}")),
            },
            Ok(Err(e)) => Delivery {
                status: None,
                error: Some(e),
            },
            Err(_) => Delivery {
                status: None,
                error: Some(format!("no answer within {:?}", self.timeout)),
            },
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<u16, String> {
        let url = url::Url::parse(url).map_err(|e| format!("bad URL: {e}"))?;
        let addrs = addresses(&url, self.allow_private)
            .await
            .map_err(|e| e.to_string())?;
        let mut last = String::from("no address");
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("connect {addr}: {e}"),
            }
        }
        let stream = stream.ok_or(last)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = http::Request::post(path)
            .header(http::header::HOST, authority(&url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "Turnbase-Webhook/1");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        if url.scheme() == "https" {
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| format!("TLS name: {e}"))?;
            let tls = self
                .tls
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(stream), request).await
        }
    }
}

fn authority(url: &url::Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    }
}

async fn send<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"));
    let status = match answer {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read (and drop) what the receiver says, so it sees a clean end.
            let _ = response.into_body().collect().await;
            Ok(status)
        }
        Err(e) => Err(e),
    };
    drop(sender);
    driver.abort();
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(forbidden(ip.parse().expect("IP")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!forbidden(ip.parse().expect("IP")), "{ip}");
        }
    }

    #[tokio::test]
    async fn registration_refuses_bad_urls() {
        assert_eq!(
            check_url("ftp://example.org/x", false).await,
            Err(UrlError::Scheme)
        );
        assert!(matches!(
            check_url("not a url", false).await,
            Err(UrlError::Invalid(_))
        ));
        assert_eq!(
            check_url("http://127.0.0.1:9/hook", false).await,
            Err(UrlError::Forbidden("127.0.0.1".parse().expect("IP")))
        );
        assert_eq!(
            check_url("http://u:p@93.184.216.34/", false).await,
            Err(UrlError::Credentials)
        );
        assert!(check_url("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_url("https://93.184.216.34/hook", false).await.is_ok());
    }
}
