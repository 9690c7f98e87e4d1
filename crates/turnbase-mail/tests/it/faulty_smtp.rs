//! A fake SMTP server, named as such: it exists only to inject the faults
//! a real server does not produce on demand (451, 550, silence, a dropped
//! connection), one behaviour per connection.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers like a working server.
    Accept,
    /// Refuses the sender with 451 (try again later).
    Transient,
    /// Refuses the sender with 550 (never).
    Permanent,
    /// Accepts the connection and never says a word.
    Hang,
    /// Greets, then closes the connection.
    Drop,
    /// Accepts one message, then closes the connection (as relays that
    /// limit messages per connection, or time idle ones out, do).
    AcceptOnce,
}

/// Serves each new connection with the next behaviour of the script; the
/// last one repeats. Counts the messages it accepted.
pub struct FaultySmtp {
    pub port: u16,
    pub accepted: Arc<Mutex<u32>>,
    /// Connections opened to it.
    pub connections: Arc<Mutex<u32>>,
}

impl FaultySmtp {
    pub async fn start(script: Vec<Behaviour>) -> FaultySmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(Mutex::new(0));
        let connections = Arc::new(Mutex::new(0));
        let counter = accepted.clone();
        let opened = connections.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((stream, _)) = listener.accept().await {
                *opened.lock().expect("lock") += 1;
                let behaviour = script[n.min(script.len() - 1)];
                n += 1;
                let counter = counter.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, behaviour, counter).await;
                });
            }
        });
        FaultySmtp {
            port,
            accepted,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    behaviour: Behaviour,
    accepted: Arc<Mutex<u32>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    if behaviour == Behaviour::Hang {
        // Hold the connection open in silence.
        let mut lines = BufReader::new(read).lines();
        while lines.next_line().await?.is_some() {}
        return Ok(());
    }
    write.write_all(b"220 faulty.test ESMTP\r\n").await?;
    if behaviour == Behaviour::Drop {
        return Ok(());
    }
    let mut lines = BufReader::new(read).lines();
    let mut in_data = false;
    while let Some(line) = lines.next_line().await? {
        if in_data {
            if line == "." {
                in_data = false;
                *accepted.lock().expect("lock") += 1;
                write.write_all(b"250 2.0.0 queued\r\n").await?;
                if behaviour == Behaviour::AcceptOnce {
                    return Ok(());
                }
            }
            continue;
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 faulty.test\r\n"
        } else if upper.starts_with("MAIL FROM") {
            match behaviour {
                Behaviour::Transient => b"451 4.3.0 try again later\r\n",
                Behaviour::Permanent => b"550 5.1.1 no such user\r\n",
                _ => b"250 2.1.0 ok\r\n",
            }
        } else if upper.starts_with("RCPT TO") {
            b"250 2.1.5 ok\r\n"
        } else if upper.starts_with("DATA") {
            in_data = true;
            b"354 go ahead\r\n"
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 ok\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
