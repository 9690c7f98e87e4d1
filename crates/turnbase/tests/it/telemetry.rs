//! Trace ids on log lines, and export to a real OTLP/HTTP listener.

use std::sync::{Arc, Mutex};

use crate::harness::{Running, get};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn log_lines_inside_a_request_carry_its_trace_and_span_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = Running::start(&["backend"], &crate::process::data_env(&dir));
    // `backend` prints no banner; find the address in the log.
    let base = loop {
        up.pump();
        if let Some(addr) = up
            .logs()
            .iter()
            .find(|l| l["message"] == "HTTP API listening")
            .and_then(|l| l["addr"].as_str().map(String::from))
        {
            break format!("http://{addr}");
        }
    };
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let (status, _) = get(
        &format!("{base}/api/v1/public/info"),
        &[("traceparent", &traceparent), ("x-request-id", "req-7")],
    );
    assert_eq!(status, 200);
    up.signal("TERM");
    assert_eq!(up.wait(), 0);
    let logs = up.logs();
    let line = logs
        .iter()
        .find(|l| l["message"] == "request done")
        .unwrap_or_else(|| panic!("no request log line in {logs:?}"));
    let span = &line["spans"][0];
    assert_eq!(span["trace_id"], TRACE_ID, "{line}");
    assert_eq!(span["request_id"], "req-7", "{line}");
    let span_id = span["span_id"].as_str().expect("span id");
    assert_eq!(span_id.len(), 16, "{line}");
    assert_ne!(
        span_id, "00f067aa0ba902b7",
        "the request gets its own span: {line}"
    );
}

#[test]
fn traces_and_metrics_are_exported_over_otlp() {
    // A real OTLP/HTTP endpoint: records what it is sent.
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sink = received.clone();
    let collector = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let sink = sink.clone();
            async move {
                let content_type = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock()
                    .expect("lock")
                    .push((req.uri().path().to_string(), content_type));
                ""
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = crate::process::data_env(&dir);
    env.extend([
        ("BACKEND_OTEL_TRACES_EXPORTER", "otlp".into()),
        ("BACKEND_OTEL_METRICS_EXPORTER", "otlp".into()),
        (
            "BACKEND_OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector}"),
        ),
    ]);
    let mut up = Running::start(&["up"], &env);
    let base = up.base_url();
    assert_eq!(get(&format!("{base}/api/v1/public/info"), &[]).0, 200);
    up.signal("TERM");
    assert_eq!(up.wait(), 0, "{}", up.stderr_lines.join("\n"));
    // Shutdown flushes both exporters.
    let got = received.lock().expect("lock").clone();
    assert!(
        got.contains(&("/v1/traces".into(), "application/x-protobuf".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("/v1/metrics".into(), "application/x-protobuf".into())),
        "{got:?}"
    );
}
