//! SMTP delivery: lettre speaks the protocol over connections this module
//! opens, secures and pools itself.
//!
//! lettre's own pooled transport opens its sockets without `TCP_NODELAY`
//! and writes a message and its closing `.` in two writes, so against a
//! relay that delays its ACKs (Linux does, by up to 40 ms) every message
//! waits for that ACK: about 25 messages per second per connection. It also
//! sends a `NOOP` before reusing a connection, one more round trip per
//! message. Here every socket gets `TCP_NODELAY`, and before a pooled
//! connection is reused a look at its socket (no round trip) tells whether
//! the relay closed it or said something unasked (a 421); only after a long
//! idle spell is it probed with `NOOP`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::Message;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::sender::{Accepted, MailSender, SendError};

/// A pooled connection idle for longer than this is probed with `NOOP`
/// before it carries a message, besides the check for a close (a relay
/// that vanished without closing leaves nothing to see).
const PROBE_AFTER: Duration = Duration::from_secs(30);
/// A pooled connection idle for longer than this is closed, not reused.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How the connection to the relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// `smtp://`: plain text.
    None,
    /// `smtp://…?tls=required`: STARTTLS, or no delivery.
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: STARTTLS when the relay offers it.
    StartTlsOpportunistic,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// Where and how to deliver, from an SMTP URL.
#[derive(Debug, Clone)]
struct Relay {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
}

/// Reads `smtp://[user:pass@]host[:port][/ehlo-name][?tls=required|opportunistic]`
/// or `smtps://…`. Default ports: 25 for plain `smtp://`, 587 with
/// STARTTLS, 465 for `smtps://`. User and password are percent-decoded.
fn parse_relay(text: &str) -> Result<Relay, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let (security, default_port) = match (url.scheme(), tls.as_deref()) {
        ("smtp", None) => (Security::None, 25),
        ("smtp", Some("required")) => (Security::StartTlsRequired, 587),
        ("smtp", Some("opportunistic")) => (Security::StartTlsOpportunistic, 587),
        ("smtps", None) => (Security::Implicit, 465),
        ("smtp" | "smtps", Some(other)) => {
            return Err(format!(
                "tls={other} is not a TLS mode (use tls=required or tls=opportunistic with smtp://)"
            ));
        }
        (scheme, _) => return Err(format!("{scheme}:// is not smtp:// or smtps://")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|d| d.into_owned())
            .map_err(|_| "the user name or password is not UTF-8 once decoded".to_string())
    };
    let credentials = match url.password() {
        Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
        None if !url.username().is_empty() => {
            return Err("the URL has a user name but no password".into());
        }
        None => None,
    };
    let name = url.path().trim_matches('/');
    let hello = if name.is_empty() {
        ClientId::default()
    } else {
        ClientId::Domain(name.to_string())
    };
    Ok(Relay {
        host,
        port: url.port().unwrap_or(default_port),
        security,
        credentials,
        hello,
    })
}

/// Checks an SMTP URL without connecting (and without a runtime).
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    parse_relay(url)
        .map(|_| ())
        .map_err(|e| format!("not a usable SMTP URL: {e}"))
}

/// Masks the password of `smtps://user:password@host`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => match url[scheme + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..scheme + 3 + colon], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// An idle connection: lettre's side, a second handle on its socket to
/// look at without disturbing it, and since when it is idle.
struct Pooled {
    conn: AsyncSmtpConnection,
    socket: std::net::TcpStream,
    since: Instant,
}

impl Pooled {
    /// Whether the relay closed the connection or sent something nobody
    /// asked for (which is a 421 before closing): either way it cannot
    /// carry a message. The socket is non-blocking, so this never waits.
    fn closed_by_relay(&self) -> bool {
        !matches!(
            self.socket.peek(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

/// SMTP with pooled connections (`smtp://`, `smtps://`, and
/// `smtp://…?tls=required` for STARTTLS).
pub struct SmtpSender {
    relay: Relay,
    /// For STARTTLS, which lettre performs on the open connection.
    starttls: Option<TlsParameters>,
    /// For `smtps://`, where TLS starts before lettre reads a byte.
    implicit: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    timeout: Duration,
    /// One permit per connection the pool may have open.
    slots: Semaphore,
    idle: Mutex<Vec<Pooled>>,
    /// Connections opened so far.
    opened: std::sync::atomic::AtomicU64,
    described: String,
}

impl SmtpSender {
    /// A sender with up to `pool_size` connections to the relay at `url`.
    /// `timeout` bounds each network step (the whole conversation gets
    /// three times as long). `extra_roots` (PEM) are trusted besides the
    /// public roots, for relays with a private CA.
    pub fn new(
        url: &str,
        timeout: Duration,
        pool_size: u32,
        extra_roots: Option<&[u8]>,
    ) -> Result<Self, String> {
        let relay = parse_relay(url).map_err(|e| format!("not a usable SMTP URL: {e}"))?;
        let extra: Vec<rustls::pki_types::CertificateDer<'static>> = match extra_roots {
            Some(pem) => {
                use rustls::pki_types::pem::PemObject as _;
                let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("not a PEM certificate: {e}"))?;
                if certs.is_empty() {
                    return Err("not a PEM certificate: none found".into());
                }
                certs
            }
            None => Vec::new(),
        };
        let starttls = match relay.security {
            Security::StartTlsRequired | Security::StartTlsOpportunistic => {
                let mut builder = TlsParameters::builder(relay.host.clone());
                for cert in &extra {
                    let root = lettre::transport::smtp::client::Certificate::from_der(
                        cert.as_ref().to_vec(),
                    )
                    .map_err(|e| format!("not a usable certificate: {e}"))?;
                    builder = builder.add_root_certificate(root);
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|e| format!("cannot set up TLS: {e}"))?,
                )
            }
            Security::None | Security::Implicit => None,
        };
        let implicit = match relay.security {
            Security::Implicit => Some(implicit_tls(&relay.host, extra)?),
            _ => None,
        };
        Ok(Self {
            relay,
            starttls,
            implicit,
            timeout,
            slots: Semaphore::new(pool_size.max(1) as usize),
            idle: Mutex::new(Vec::new()),
            opened: std::sync::atomic::AtomicU64::new(0),
            described: redact(url),
        })
    }

    /// How many connections this sender has opened (each one carries as
    /// many messages as it can).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens, secures and (with credentials) authenticates a connection.
    async fn open(&self) -> Result<(AsyncSmtpConnection, std::net::TcpStream), SendError> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let address = (self.relay.host.as_str(), self.relay.port);
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(address)).await {
            Err(_) => {
                return Err(transient(format!(
                    "connecting took over {:?}",
                    self.timeout
                )));
            }
            Ok(Err(e)) => return Err(transient(format!("cannot connect: {e}"))),
            Ok(Ok(tcp)) => tcp,
        };
        tcp.set_nodelay(true)
            .map_err(|e| transient(format!("cannot set TCP_NODELAY: {e}")))?;
        let (tcp, socket) = tcp
            .into_std()
            .and_then(|std| {
                let socket = std.try_clone()?;
                Ok((TcpStream::from_std(std)?, socket))
            })
            .map_err(|e| transient(format!("cannot keep a handle on the socket: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.implicit {
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), tcp);
                match tokio::time::timeout(self.timeout, handshake).await {
                    Err(_) => {
                        return Err(transient(format!(
                            "the TLS handshake took over {:?}",
                            self.timeout
                        )));
                    }
                    Ok(Err(e)) => return Err(transient(format!("TLS handshake: {e}"))),
                    Ok(Ok(tls)) => Box::new(TlsStream(tls)),
                }
            }
            None => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.relay.hello)
            .await
            .map_err(classify)?;
        if let Some(tls) = &self.starttls {
            if conn.can_starttls() {
                conn.starttls(tls.clone(), &self.relay.hello)
                    .await
                    .map_err(classify)?;
            } else if self.relay.security == Security::StartTlsRequired {
                conn.abort().await;
                return Err(transient(
                    "the relay does not offer STARTTLS, which the URL requires".into(),
                ));
            }
        }
        if let Some(credentials) = &self.relay.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(classify)?;
        }
        Ok((conn, socket))
    }

    /// A pooled connection that is fit to use, if there is one.
    async fn checkout(&self) -> Option<Pooled> {
        loop {
            let mut pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let idle = pooled.since.elapsed();
            if idle > IDLE_LIMIT || pooled.closed_by_relay() {
                continue;
            }
            if idle > PROBE_AFTER && !pooled.conn.test_connected().await {
                continue;
            }
            return Some(pooled);
        }
    }

    fn checkin(&self, conn: AsyncSmtpConnection, socket: std::net::TcpStream) {
        if !conn.has_broken() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Pooled {
                    conn,
                    socket,
                    since: Instant::now(),
                });
        }
    }

    async fn deliver(&self, message: &Message) -> Result<Accepted, SendError> {
        let (mut conn, socket) = match self.checkout().await {
            Some(pooled) => (pooled.conn, pooled.socket),
            None => self.open().await?,
        };
        let sent = conn.send(message.envelope(), &message.formatted()).await;
        // lettre marks a connection broken after any failure; a healthy
        // one goes back to the pool either way.
        self.checkin(conn, socket);
        let response = sent.map_err(classify)?;
        Ok(Accepted {
            code: response.code().to_string().parse().ok(),
        })
    }
}

fn transient(message: String) -> SendError {
    SendError::Transient {
        code: None,
        message,
    }
}

/// 5xx replies are permanent; everything else (4xx, network, TLS) is
/// worth another try.
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let code = e.status().and_then(|c| c.to_string().parse().ok());
    let message = e.to_string();
    if e.is_permanent() {
        SendError::Permanent { code, message }
    } else {
        SendError::Transient { code, message }
    }
}

/// The TLS client for `smtps://`: the public roots plus `extra`.
fn implicit_tls(
    host: &str,
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra {
        roots
            .add(cert)
            .map_err(|e| format!("not a usable certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A TLS connection in the shape lettre takes for a transport.
struct TlsStream(tokio_rustls::client::TlsStream<TcpStream>);

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.0.get_ref().0.peer_addr().ok())
            .finish()
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl MailSender for SmtpSender {
    async fn send(&self, _id: Uuid, message: Message) -> Result<Accepted, SendError> {
        let Ok(_slot) = self.slots.acquire().await else {
            return Err(SendError::Transient {
                code: None,
                message: "the SMTP sender is closed".into(),
            });
        };
        // Each network step has its own timeout; this bounds the whole
        // conversation, so a server that trickles bytes cannot hold a worker.
        match tokio::time::timeout(self.timeout * 3, self.deliver(&message)).await {
            Err(_) => Err(transient(format!(
                "no answer within {:?}",
                self.timeout * 3
            ))),
            Ok(result) => result,
        }
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_read_with_their_defaults() {
        let plain = parse_relay("smtp://mail.example").expect("valid");
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.security),
            ("mail.example", 25, Security::None)
        );
        assert!(plain.credentials.is_none());
        let starttls = parse_relay("smtp://mail.example?tls=required").expect("valid");
        assert_eq!(
            (starttls.port, starttls.security),
            (587, Security::StartTlsRequired)
        );
        let maybe = parse_relay("smtp://mail.example:2525?tls=opportunistic").expect("valid");
        assert_eq!(
            (maybe.port, maybe.security),
            (2525, Security::StartTlsOpportunistic)
        );
        let implicit =
            parse_relay("smtps://us%40er:p%3Ass@mail.example/game.example").expect("valid");
        assert_eq!(
            (implicit.port, implicit.security),
            (465, Security::Implicit)
        );
        assert_eq!(
            implicit.credentials,
            Some(Credentials::new("us@er".into(), "p:ss".into()))
        );
        assert_eq!(implicit.hello, ClientId::Domain("game.example".into()));
        let v6 = parse_relay("smtp://[::1]:2525").expect("valid");
        assert_eq!(v6.host, "::1");
    }

    #[test]
    fn unusable_smtp_urls_are_refused_with_a_reason() {
        for (url, reason) in [
            ("ftp://mail.example", "is not smtp:// or smtps://"),
            ("smtp://mail.example?tls=always", "is not a TLS mode"),
            ("smtps://mail.example?tls=required", "is not a TLS mode"),
            ("smtp://user@mail.example", "no password"),
            ("smtp://", "no host"),
            ("mail.example:25", "not"),
        ] {
            let err = check_smtp_url(url).expect_err(url);
            assert!(err.contains(reason), "{url}: {err}");
        }
        assert!(check_smtp_url("smtp://mail.example:25").is_ok());
    }

    #[test]
    fn smtp_urls_are_redacted() {
        assert_eq!(
            redact("smtps://user:secret@mail.example:465"),
            "smtps://user:***@mail.example:465"
        );
        assert_eq!(redact("smtp://mail.example:25"), "smtp://mail.example:25");
    }
}
