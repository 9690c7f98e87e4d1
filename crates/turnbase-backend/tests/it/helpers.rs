//! `spawn_app`: a started backend with its own database and ports.

use turnbase_backend::config::Profile;
use turnbase_backend::{App, Config};
use turnbase_core::telemetry::Telemetry;
use turnbase_testkit::{Backend, TestDb};

pub struct TestApp {
    pub app: App,
    pub base: String,
    pub metrics: String,
    pub client: reqwest::Client,
    db: TestDb,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut env: Vec<(String, String)> = vec![
        ("BACKEND_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_GRPC_PUSH_ADDR".into(), "127.0.0.1:0".into()),
        ("BACKEND_FRESHNESS_WINDOW".into(), "1m".into()),
        ("BACKEND_MAIL_DELIVERY".into(), "file".into()),
        ("BACKEND_MAIL_POLL_INTERVAL".into(), "100ms".into()),
        ("BACKEND_DATA_DIR".into(), db.dir().display().to_string()),
        ("BACKEND_LOG_LEVEL".into(), "warn".into()),
    ];
    if let Some(url) = &db.url {
        env.push(("BACKEND_DATABASE_URL".into(), url.clone()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::load(Profile::Backend, env, None).expect("test config is valid");
    let telemetry = Telemetry::init(&config.telemetry).expect("telemetry");
    let app = App::start(config, telemetry, "test")
        .await
        .expect("backend starts");
    TestApp {
        base: format!("http://{}", app.http_addr),
        metrics: format!(
            "http://{}/metrics",
            app.metrics_addr.expect("metrics listener")
        ),
        app,
        client: reqwest::Client::new(),
        db,
    }
}

impl TestApp {
    pub fn app_data_dir(&self) -> String {
        self.db.dir().display().to_string()
    }

    /// The Prometheus text the metrics listener serves.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(&self.metrics)
            .send()
            .await
            .expect("metrics");
        response.text().await.expect("metrics text")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }
}
