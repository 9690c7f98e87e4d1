//! The web benchmark: cold loads of a Conquest game page in headless
//! Chromium (Debian's `chromium`, driven through `chromedriver` over the
//! W3C WebDriver protocol) from a real `turnbase up` on loopback.
//!
//! Each load is a new browser profile, so nothing is cached. Printed per
//! load and as medians: the bytes transferred (compressed, headers
//! included, from the Resource Timing entries' `transferSize`), the
//! requests made until the map is interactive (the navigation, every
//! resource entry before that moment, and the event stream's WebSocket,
//! which Resource Timing does not list) and in all once the page has
//! settled, and the time from navigation start to the client's
//! `map-interactive` mark (set once the map is drawn with its order
//! controls live). `TURNBASE_BENCH_WEB_LIST=1` lists each load's requests.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[derive(clap::Args)]
pub struct WebArgs {
    /// Cold loads measured.
    #[arg(long, default_value_t = 5)]
    loads: usize,
    /// The `turnbase` binary (default: beside this one).
    #[arg(long)]
    turnbase: Option<PathBuf>,
    /// The browser.
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// Its WebDriver.
    #[arg(long, default_value = "/usr/bin/chromedriver")]
    chromedriver: PathBuf,
}

/// One cold load.
#[derive(Debug, Clone, Copy)]
struct Load {
    bytes: f64,
    requests: usize,
    requests_total: usize,
    interactive_ms: f64,
}

pub async fn run(args: WebArgs) -> anyhow::Result<()> {
    let turnbase = match &args.turnbase {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has a folder")?
            .join("turnbase"),
    };
    anyhow::ensure!(
        turnbase.exists(),
        "{} is missing: cargo build --release -p turnbase (or pass --turnbase)",
        turnbase.display()
    );
    let stack = Up::start(&turnbase).await?;
    let http = reqwest::Client::new();
    let (token, game) = conquest_game(&http, &stack.url).await?;
    let driver = Driver::start(&args.chromedriver).await?;
    println!(
        "web benchmark: {} cold loads of a Conquest game page (3 seats, 12 planets) from {}",
        args.loads, stack.url
    );
    let mut loads = Vec::new();
    for i in 0..args.loads {
        let load = driver
            .cold_load(&args.chromium, &stack.url, &token, &game)
            .await
            .with_context(|| format!("load {}", i + 1))?;
        println!(
            "  load {}: {:.1} KB transferred, {} requests to an interactive map ({} once settled), \
             interactive after {:.0} ms",
            i + 1,
            load.bytes / 1024.0,
            load.requests,
            load.requests_total,
            load.interactive_ms
        );
        loads.push(load);
    }
    drop(driver);
    stack.stop().await;
    let median = |f: fn(&Load) -> f64| {
        let mut v: Vec<f64> = loads.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let bytes = median(|l| l.bytes);
    let requests = median(|l| l.requests as f64) as usize;
    let requests_total = median(|l| l.requests_total as f64) as usize;
    let interactive = median(|l| l.interactive_ms);
    let worst = loads
        .iter()
        .map(|l| l.interactive_ms)
        .fold(0.0_f64, f64::max);
    println!(
        "median: {:.1} KB, {requests} requests ({requests_total} once settled), interactive after \
         {interactive:.0} ms (slowest {worst:.0} ms)",
        bytes / 1024.0
    );
    println!("targets: <= 150 KB compressed, <= 15 requests, <= 500 ms to an interactive map");
    println!(
        "{}",
        json!({
            "bench": "web",
            "bytes": bytes.round() as u64,
            "requests": requests,
            "requests_total": requests_total,
            "interactive_ms": crate::api::round2(interactive),
        })
    );
    Ok(())
}

/// `turnbase up` in a scratch folder; `url` is its Play address.
struct Up {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Up {
    async fn start(program: &std::path::Path) -> anyhow::Result<Up> {
        let dir = tempfile::tempdir()?;
        let mut child = tokio::process::Command::new(program)
            .arg("up")
            .env("BACKEND_DATA_DIR", dir.path())
            .env("BACKEND_HTTP_ADDR", "127.0.0.1:0")
            .env("BACKEND_GRPC_PUSH_ADDR", "127.0.0.1:0")
            .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
            .env("BACKEND_MAIL_DELIVERY", "file")
            .env("BACKEND_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix("Play:") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    return Ok(url.trim_end_matches('/').to_string());
                }
            }
            anyhow::bail!("turnbase up ended without printing its Play address")
        })
        .await
        .context("turnbase up did not start within 60 s")??;
        // Keep reading, so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Up {
            child,
            url,
            _dir: dir,
        })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM: a clean stop, as an operator would.
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
    want: u16,
) -> anyhow::Result<Value> {
    let mut r = http.request(method, &url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let response = r.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    anyhow::ensure!(status == want, "{url}: {status} {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A running Conquest game of a guest and two bots, its first turn
/// planned: (the guest's token, the game's id).
async fn conquest_game(http: &reqwest::Client, base: &str) -> anyhow::Result<(String, String)> {
    use reqwest::Method;
    let api = format!("{base}/api/v1");
    let guest = send(
        http,
        Method::POST,
        format!("{api}/public/auth/guest"),
        None,
        Some(json!({"display_name": "Bench"})),
        201,
    )
    .await?;
    let token = guest["token"].as_str().unwrap_or_default().to_string();
    let t = Some(token.as_str());
    let deadline = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let game = send(
        http,
        Method::POST,
        format!("{api}/user/games"),
        t,
        Some(json!({
            "title": "Bench conquest", "engine": "conquest",
            "settings": {"planets": 12, "map_size": 40},
            "enrol_deadline": deadline,
            "schedule": {"kind": "interval", "every": "1h"},
        })),
        201,
    )
    .await?;
    let id = game["id"].as_str().unwrap_or_default().to_string();
    let application = send(
        http,
        Method::POST,
        format!("{api}/user/games/{id}/applications"),
        t,
        Some(json!({"race_name": "Bench Prime"})),
        201,
    )
    .await?;
    let application = application["id"].as_str().unwrap_or_default();
    send(
        http,
        Method::POST,
        format!("{api}/user/games/{id}/applications/{application}/approve"),
        t,
        None,
        200,
    )
    .await?;
    for name in ["Orion Bench Bot", "Lyra Bench Bot"] {
        send(
            http,
            Method::POST,
            format!("{api}/user/games/{id}/bots"),
            t,
            Some(json!({ "name": name })),
            201,
        )
        .await?;
    }
    send(
        http,
        Method::POST,
        format!("{api}/user/games/{id}/start"),
        t,
        None,
        200,
    )
    .await?;
    let started = Instant::now();
    loop {
        let clock = http
            .get(format!("{api}/user/games/{id}/clock"))
            .bearer_auth(&token)
            .send()
            .await?;
        if clock.status().is_success() {
            let clock: Value = clock.json().await?;
            if clock["trigger"] != "open"
                && clock["to_move"].as_array().is_some_and(|a| !a.is_empty())
            {
                break;
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the game's first turn was not planned within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((token, id))
}

/// `chromedriver` on a loopback port of its own.
struct Driver {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(program: &std::path::Path) -> anyhow::Result<Driver> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (apt-get install chromium-driver)",
                    program.display()
                )
            })?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        while driver
            .http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(driver)
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "WebDriver {path}: {status} {answer}");
        Ok(answer["value"].clone())
    }

    async fn cold_load(
        &self,
        chromium: &std::path::Path,
        base: &str,
        token: &str,
        game: &str,
    ) -> anyhow::Result<Load> {
        use reqwest::Method;
        let session = self
            .command(
                Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                                 "--disable-gpu", "--window-size=1280,900"],
                    },
                }}}),
            )
            .await?;
        let id = session["sessionId"]
            .as_str()
            .context("a session id")?
            .to_string();
        let result = self.measure(&id, base, token, game).await;
        let _ = self
            .command(Method::DELETE, &format!("/session/{id}"), json!({}))
            .await;
        result
    }

    async fn measure(&self, id: &str, base: &str, token: &str, game: &str) -> anyhow::Result<Load> {
        use reqwest::Method;
        let script = |source: &str| json!({"script": source, "args": []});
        // The token goes in on a page of the origin that loads nothing,
        // so the game page's load starts with an empty cache.
        self.command(
            Method::POST,
            &format!("/session/{id}/url"),
            json!({"url": format!("{base}/healthz")}),
        )
        .await?;
        self.command(
            Method::POST,
            &format!("/session/{id}/execute/sync"),
            json!({"script": "localStorage.setItem('turnbase.token', arguments[0])", "args": [token]}),
        )
        .await?;
        self.command(
            Method::POST,
            &format!("/session/{id}/url"),
            json!({"url": format!("{base}/#/games/{game}")}),
        )
        .await?;
        let started = Instant::now();
        let interactive = loop {
            let mark = self
                .command(
                    Method::POST,
                    &format!("/session/{id}/execute/sync"),
                    script(
                        "const m = performance.getEntriesByName('map-interactive')[0]; \
                         return m ? m.startTime : null;",
                    ),
                )
                .await?;
            if let Some(ms) = mark.as_f64() {
                break ms;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the map was not interactive within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Let the requests that follow the board (history, unread count,
        // signing keys) finish.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let entries = self
            .command(
                Method::POST,
                &format!("/session/{id}/execute/sync"),
                script(
                    "const nav = performance.getEntriesByType('navigation')[0]; \
                     const res = performance.getEntriesByType('resource'); \
                     const live = performance.getEntriesByName('live-open')[0]; \
                     return {nav: nav.transferSize, live: live ? live.startTime : null, \
                             res: res.map(r => [r.startTime, r.transferSize, r.name])};",
                ),
            )
            .await?;
        let resources = entries["res"].as_array().cloned().unwrap_or_default();
        let bytes = entries["nav"].as_f64().unwrap_or(0.0)
            + resources
                .iter()
                .map(|r| r[1].as_f64().unwrap_or(0.0))
                .sum::<f64>();
        let before = resources
            .iter()
            .filter(|r| r[0].as_f64().unwrap_or(f64::MAX) <= interactive)
            .count();
        if std::env::var_os("TURNBASE_BENCH_WEB_LIST").is_some() {
            for r in &resources {
                println!(
                    "    {:>7.1} ms {:>6} B {}",
                    r[0].as_f64().unwrap_or(0.0),
                    r[1].as_f64().unwrap_or(0.0),
                    r[2].as_str().unwrap_or_default().replace(base, "")
                );
            }
        }
        // The navigation and the event stream's WebSocket are requests too
        // (the socket counts before the map when it opened before it).
        let socket_before = entries["live"].as_f64().is_some_and(|t| t <= interactive);
        Ok(Load {
            bytes,
            requests: 1 + before + usize::from(socket_before),
            requests_total: 1 + resources.len() + usize::from(!entries["live"].is_null()),
            interactive_ms: interactive,
        })
    }
}
