//! The `turnbase` binary as a child process: configuration errors, start,
//! probes, signals, stop order, startup failures and telemetry output.

mod mail;
mod process;
mod push;
mod telemetry;

pub mod harness {
    //! Starting the binary and reading what it prints.

    use std::io::{BufRead as _, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// How long a child may take to start or stop before the test fails.
    pub const PATIENCE: Duration = Duration::from_secs(30);

    pub fn command(args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnbase"));
        cmd.args(args);
        // Only the variables the test chooses.
        for (key, _) in std::env::vars() {
            if key.starts_with("BACKEND_") || key.starts_with("GATEWAY_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("BACKEND_LOG_FORMAT", "json");
        // `up` runs a gateway too; tests run side by side.
        cmd.env("GATEWAY_HTTP_ADDR", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// A running `turnbase` with its output collected line by line.
    pub struct Running {
        pub child: Child,
        stdout: mpsc::Receiver<String>,
        stderr: mpsc::Receiver<String>,
        pub stdout_lines: Vec<String>,
        pub stderr_lines: Vec<String>,
    }

    impl Running {
        pub fn start(args: &[&str], env: &[(&str, String)]) -> Running {
            let mut child = command(args, env)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the turnbase binary starts");
            let stdout = lines(child.stdout.take().expect("piped stdout"));
            let stderr = lines(child.stderr.take().expect("piped stderr"));
            Running {
                child,
                stdout,
                stderr,
                stdout_lines: Vec::new(),
                stderr_lines: Vec::new(),
            }
        }

        /// Waits for the whole banner and returns the API base URL it names.
        /// The gateway's base URL from the banner (after `base_url`).
        pub fn gateway_url(&self) -> String {
            let line = self
                .stdout_lines
                .iter()
                .find(|l| l.trim_start().starts_with("Gateway:"))
                .expect("a Gateway: line in the banner");
            let url = line.split_whitespace().nth(1).expect("URL after Gateway:");
            url.trim_end_matches("/api/v1/").to_string()
        }

        /// The backend's base URL from the banner.
        pub fn base_url(&mut self) -> String {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let complete = self
                    .stdout_lines
                    .iter()
                    .any(|l| l.starts_with("Press Ctrl-C"));
                if let Some(line) = self
                    .stdout_lines
                    .iter()
                    .find(|l| complete && l.trim_start().starts_with("Backend:"))
                {
                    let url = line.split_whitespace().nth(1).expect("URL after Backend:");
                    return url.trim_end_matches("/api/v1/").to_string();
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.stdout.recv_timeout(left) {
                    Ok(line) => self.stdout_lines.push(line),
                    Err(_) => {
                        self.drain();
                        panic!("no banner; stderr:\n{}", self.stderr_lines.join("\n"))
                    }
                }
            }
        }

        /// The next line printed to stdout.
        pub fn stdout_line(&mut self) -> String {
            match self.stdout.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.stdout_lines.push(line.clone());
                    line
                }
                Err(_) => {
                    self.drain();
                    panic!("no output; stderr:\n{}", self.stderr_lines.join("\n"))
                }
            }
        }

        pub fn signal(&self, name: &str) {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.child.id().to_string())
                .status()
                .expect("kill runs");
            assert!(status.success());
        }

        /// Waits for the exit code, then collects the remaining output.
        pub fn wait(&mut self) -> i32 {
            let deadline = Instant::now() + PATIENCE;
            let code = loop {
                if let Some(status) = self.child.try_wait().expect("wait") {
                    break status.code().unwrap_or(-1);
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!("turnbase did not exit in time");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            self.drain();
            code
        }

        /// Collects output printed so far (waiting briefly for more).
        pub fn pump(&mut self) {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                self.stderr_lines.push(line);
            }
            while let Ok(line) = self.stderr.try_recv() {
                self.stderr_lines.push(line);
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "turnbase exited early ({status}): {}",
                    self.stderr_lines.join("\n")
                );
            }
        }

        fn drain(&mut self) {
            while let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(500)) {
                self.stdout_lines.push(line);
            }
            while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(500)) {
                self.stderr_lines.push(line);
            }
        }

        /// The JSON log lines printed to stderr.
        pub fn logs(&self) -> Vec<serde_json::Value> {
            self.stderr_lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// A blocking GET returning status and body.
    pub fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut request = reqwest::Client::new().get(url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        })
    }
}
