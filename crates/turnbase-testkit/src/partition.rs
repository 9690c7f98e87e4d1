//! A TCP relay that can fall silent like a network partition, for faults
//! the real parts cannot produce on demand: after [`Partition::cut`] the
//! connections open at that moment stay open but nothing crosses them any
//! more, in either direction. Connections made after the cut are relayed
//! again, as if the network had healed.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Partition {
    addr: std::net::SocketAddr,
    cuts: watch::Sender<u64>,
    relay: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Relays connections to `target` (`host:port`) from a new loopback port.
    pub async fn start(target: &str) -> std::io::Result<Partition> {
        let target = target.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, _) = watch::channel(0u64);
        let watching = cuts.clone();
        let relay = tokio::spawn(async move {
            // Silenced connections are parked here, open, until the relay
            // is dropped.
            let parked = Arc::new(Mutex::new(Vec::new()));
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let mut cut = watching.subscribe();
                let parked = parked.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {
                            parked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((inbound, outbound));
                        }
                    }
                });
            }
        });
        Ok(Partition { addr, cuts, relay })
    }

    /// The relay's own address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Silences every connection open now.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.relay.abort();
    }
}
