//! A TCP relay that can fall silent like a network partition, or go down
//! like a stopped server, for faults the real parts cannot produce on
//! demand. After [`Partition::cut`] the connections open at that moment
//! stay open but nothing crosses them any more, in either direction;
//! connections made after the cut are relayed again, as if the network had
//! healed. After [`Partition::go_down`] every relayed connection is closed
//! and new ones are closed as soon as they arrive, until
//! [`Partition::come_back`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Partition {
    addr: std::net::SocketAddr,
    cuts: watch::Sender<u64>,
    downs: watch::Sender<u64>,
    down: Arc<AtomicBool>,
    relay: tokio::task::JoinHandle<()>,
}

impl Partition {
    /// Relays connections to `target` (`host:port`) from a new loopback port.
    pub async fn start(target: &str) -> std::io::Result<Partition> {
        let target = target.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, _) = watch::channel(0u64);
        let (downs, _) = watch::channel(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let (watching, watching_downs, is_down) = (cuts.clone(), downs.clone(), down.clone());
        let relay = tokio::spawn(async move {
            // Silenced connections are parked here, open, until the relay
            // is dropped.
            let parked = Arc::new(Mutex::new(Vec::new()));
            while let Ok((mut inbound, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(mut outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let mut cut = watching.subscribe();
                let mut gone = watching_downs.subscribe();
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
                        // Both ends are closed when this task ends.
                        _ = gone.changed() => {}
                    }
                });
            }
        });
        Ok(Partition {
            addr,
            cuts,
            downs,
            down,
            relay,
        })
    }

    /// The relay's own address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Silences every connection open now.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Closes every relayed connection and closes new ones at once, like a
    /// server that stopped.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.downs.send_modify(|n| *n += 1);
    }

    /// Relays new connections again.
    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.relay.abort();
    }
}
