//! Dials the factory: TCP, then TLS for an `https` upstream.
//!
//! TCP: every address the name resolves to in turn, all within
//! `upstream.connect_timeout`; `TCP_NODELAY` (an order is one small write)
//! and keep-alive probes after 60 s idle, so a pooled connection to a
//! factory that vanished is noticed. TLS: rustls over aws-lc-rs with the
//! webpki roots plus `upstream.ca_file` ([`crate::tls`]), ALPN offering h2
//! and http/1.1 so the factory picks; its handshake is bounded by the
//! caller's attempt timeout. The result is an [`Io`], the byte stream
//! either protocol is spoken over.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamUrl;
use crate::tls::{TlsError, client_config};

/// The byte stream to the factory: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What a dial produced.
#[derive(Debug)]
pub enum Dialed {
    /// Speak HTTP/1.1 (plain TCP, or TLS without ALPN h2).
    Http1(Io),
    /// The factory chose h2 by ALPN.
    H2(Io),
}

/// Opens connections to the one factory.
#[derive(Clone)]
pub struct Dialer {
    /// Host to resolve (an IPv6 literal without its brackets).
    host: Arc<str>,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Dialer {
    pub fn new(
        url: &UpstreamUrl,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
    ) -> Result<Dialer, TlsError> {
        let host = url
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = if url.is_https() {
            let mut tls = client_config(ca_file)?;
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())
                .map_err(|e| TlsError::ServerName(e.to_string()))?;
            Some((TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        Ok(Dialer {
            host: host.into(),
            port: url.port(),
            tls,
            connect_timeout,
        })
    }

    /// A new connection, TLS included for an `https` upstream.
    pub async fn dial(&self) -> io::Result<Dialed> {
        let tcp = tokio::time::timeout(self.connect_timeout, self.tcp())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                )
            })??;
        let Some((connector, name)) = &self.tls else {
            return Ok(Dialed::Http1(Io::Plain(tcp)));
        };
        let tls = connector.connect(name.clone(), tcp).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = Io::Tls(Box::new(tls));
        Ok(if h2 {
            Dialed::H2(io)
        } else {
            Dialed::Http1(io)
        })
    }

    async fn tcp(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in tokio::net::lookup_host((&*self.host, self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
                    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolves to no address", self.host),
            )
        }))
    }
}
