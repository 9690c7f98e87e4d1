//! Shared pieces of the benchmark: process CPU and memory from `/proc`,
//! wall-clock nanoseconds, the payload carrying its publish time, latency
//! percentiles, pacing, and the JSON-line protocol between parent and
//! child processes.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Nanoseconds since the Unix epoch; both sides of a measurement run on
/// one machine and read the same clock.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// CPU seconds (user + system) and peak resident memory of a process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_s: f64,
    pub peak_rss_kb: u64,
}

/// CPU seconds (user + system) from a `/proc/<pid>/stat` line; with
/// `reaped`, also those of the children the process has waited for.
fn stat_cpu_s(stat: &str, reaped: bool) -> Option<f64> {
    // Kernel clock ticks per second; 100 on every Linux this runs on.
    const TICKS: f64 = 100.0;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<f64>().ok();
    let mut ticks = field(11)? + field(12)?;
    if reaped {
        ticks += field(13)? + field(14)?;
    }
    Some(ticks / TICKS)
}

/// CPU seconds used so far by every process on this machine whose command
/// name is `comm`, counting the children they have reaped (a server's
/// finished connection processes); `None` when there is no such process.
pub fn cpu_of_named(comm: &str) -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name);
        if name == Some(comm)
            && let Some(cpu) = stat_cpu_s(&stat, true)
        {
            *total.get_or_insert(0.0) += cpu;
        }
    }
    total
}

/// Reads the usage of `pid` ("self" for this process) from `/proc`.
pub fn usage(pid: &str) -> Usage {
    let cpu_s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_cpu_s(&stat, false))
        .unwrap_or(0.0);
    let peak_rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    Usage { cpu_s, peak_rss_kb }
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Lets memory settle, then reads RSS.
pub async fn settled_rss(pid: &str) -> u64 {
    tokio::time::sleep(Duration::from_secs(2)).await;
    rss(pid)
}

/// A JSON payload of exactly `size` bytes carrying its publish time:
/// `{"t":<ns>,"pad":"xxx…"}`.
pub fn payload(size: usize) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"t\":";
    const MIDDLE: &[u8] = b",\"pad\":\"";
    const FRAME: usize = HEAD.len() + 19 + MIDDLE.len() + 2;
    // One allocation of the final size, the time as 19 zero-padded digits
    // written by hand: a producer's own formatting, kept cheap on both
    // sides of the push benchmark alike.
    let mut p = Vec::with_capacity(size.max(FRAME));
    p.extend_from_slice(HEAD);
    let mut digits = [b'0'; 19];
    let mut t = now_ns();
    for d in digits.iter_mut().rev() {
        *d = b'0' + (t % 10) as u8;
        t /= 10;
    }
    p.extend_from_slice(&digits);
    p.extend_from_slice(MIDDLE);
    p.resize(size.saturating_sub(2).max(p.len()), b'x');
    p.extend_from_slice(b"\"}");
    p
}

/// [`payload`] as a [`turnbase_push::JsonPayload`]: JSON by
/// construction (digits and `x`s in a fixed frame), so taken unchecked, as
/// a producer that writes its own JSON hands it over — the same bytes and
/// the same formatting cost as the NATS side's payloads.
pub fn json_payload(size: usize) -> turnbase_push::JsonPayload {
    turnbase_push::JsonPayload::from_trusted(payload(size))
}

/// The publish time inside a payload made by [`payload`].
pub fn payload_time(p: &[u8]) -> Option<u64> {
    let digits = p.get(5..24)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

pub fn latency(mut samples_ns: Vec<u64>) -> Latency {
    if samples_ns.is_empty() {
        return Latency::default();
    }
    samples_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((samples_ns.len() as f64 - 1.0) * q).round() as usize;
        samples_ns[i] as f64 / 1e6
    };
    Latency {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

/// Publishes `events` by calling `publish`, at `rate` per second (0: as
/// fast as possible), catching up in bursts when behind.
pub async fn paced(events: u64, rate: f64, mut publish: impl FnMut()) {
    if rate <= 0.0 {
        for _ in 0..events {
            publish();
        }
        return;
    }
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    while sent < events {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(events);
        while sent < due {
            publish();
            sent += 1;
        }
        let next = start + Duration::from_secs_f64(sent as f64 / rate);
        tokio::time::sleep_until(next).await;
    }
}

/// Prints one JSON line for the parent process.
pub fn report(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Waits until the parent closes our stdin: the signal to stop.
pub async fn wait_for_parent() {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = lines.next_line().await {}
}

/// A child process of the benchmark, speaking JSON lines.
pub struct ChildProc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl ChildProc {
    /// Starts this same program in another mode.
    pub fn spawn_self(args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this program")?;
        Self::spawn(exe.as_os_str(), args)
    }

    pub fn spawn(program: &std::ffi::OsStr, args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON line the child prints, parsed.
    pub async fn next<T: for<'de> Deserialize<'de>>(&mut self) -> anyhow::Result<T> {
        let line = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .context("the child said nothing for two minutes")??
            .context("the child exited early")?;
        serde_json::from_str(&line).with_context(|| format!("unexpected child output: {line}"))
    }

    /// Sends the child one JSON line on its stdin.
    pub async fn send(&mut self, value: &impl Serialize) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self.stdin.as_mut().context("the child's stdin is closed")?;
        let mut line = serde_json::to_vec(value)?;
        line.push(b'\n');
        stdin.write_all(&line).await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Closes the child's stdin, telling it to finish.
    pub fn finish(&mut self) {
        self.stdin.take();
    }

    pub async fn wait(mut self) -> anyhow::Result<()> {
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "child failed: {status}");
        Ok(())
    }
}

/// A database of its own on a Postgres server, for one measurement.
pub struct ScratchDatabase {
    admin: sqlx::PgPool,
    name: String,
    /// Where the measured backend connects.
    pub url: String,
}

impl ScratchDatabase {
    /// Creates it on `server` (a URL of a role that may create databases).
    pub async fn create(server: &str) -> anyhow::Result<ScratchDatabase> {
        use anyhow::Context as _;
        let name = format!("turnbase_bench_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(server)
            .await
            .with_context(|| format!("cannot reach Postgres at {server}"))?;
        crate::mail::sqlx_exec(&admin, &format!("CREATE DATABASE {name}")).await?;
        let url = turnbase_testkit::with_database(server, &name);
        Ok(ScratchDatabase { admin, name, url })
    }

    /// Drops it, whatever the measurement's outcome.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        crate::mail::sqlx_exec(&self.admin, &sql).await?;
        self.admin.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_are_json_and_carry_their_time() {
        for size in [64, 256, 1024] {
            let typed = json_payload(size);
            assert_eq!(typed.len(), size);
            assert!(serde_json::from_slice::<serde_json::Value>(typed.as_bytes()).is_ok());
            assert!(payload_time(typed.as_bytes()).is_some_and(|t| t <= now_ns()));
            let before = now_ns();
            let p = payload(size);
            assert_eq!(p.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&p).expect("JSON");
            assert!(v["pad"].is_string());
            let t = payload_time(&p).expect("time");
            assert!(t >= before && t <= now_ns());
        }
    }

    #[test]
    fn percentiles() {
        let l = latency((1..=1000).map(|ms| ms * 1_000_000).collect());
        assert_eq!((l.p50_ms, l.p99_ms, l.p999_ms), (501.0, 990.0, 999.0));
        assert_eq!(latency(Vec::new()).p99_ms, 0.0);
    }

    #[test]
    fn cpu_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid … utime stime cutime cstime …
        let stat = "4242 (postgres: a (b) c) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 50 30 20 20 0 1 0 100 1000 10";
        assert_eq!(stat_cpu_s(stat, false), Some(2.0));
        assert_eq!(stat_cpu_s(stat, true), Some(2.5));
        assert_eq!(stat_cpu_s("4242 (x) S 1", false), None);
    }

    #[test]
    fn this_process_has_usage() {
        let u = usage("self");
        assert!(u.peak_rss_kb > 0);
    }
}
