//! The schema-driven sweep: schemathesis (from PyPI) generates requests
//! for every operation of `/api/v1/openapi.json`, as a guest, as an admin
//! and as a gateway, and checks every answer: no 5xx, no status the
//! document does not list, the documented content type and schema.

use turnbase_testkit::DbKind;

use crate::helpers::{INTERNAL_TOKEN, spawn_app_with};

/// Runs schemathesis's command line inside the Python that has it.
const LAUNCH: &str =
    "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_driven_sweep_finds_nothing() {
    let python = std::env::var("TURNBASE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = std::process::Command::new(&python)
        .args(["-c", "import schemathesis"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "schemathesis is needed: pip install schemathesis (scripts/test installs it)"
    );
    let t = spawn_app_with(DbKind::Sqlite, &[]).await;
    let admin = t.become_admin().await;
    let (guest, _) = t.guest("Sweeper").await;
    let schema = t.url("/api/v1/openapi.json");
    // schemathesis keeps a cache of what it found in `.schemathesis` of
    // its working folder: a folder of the test's, not the checkout.
    let workdir = tempfile::tempdir().expect("temp dir");
    for (who, token) in [
        ("guest", guest),
        ("admin", admin),
        ("gateway", INTERNAL_TOKEN.to_string()),
    ] {
        let output = tokio::process::Command::new(&python)
            .args(["-c", LAUNCH, "run", &schema])
            .args(["--checks", CHECKS])
            // Bounded: 15 cases per operation in each phase, reproducible.
            .args(["--max-examples", "15", "--seed", "1"])
            .args(["--phases", "examples,coverage,fuzzing"])
            // Signing out would leave the rest of the run without a session.
            .args(["--exclude-path", "/api/v1/user/logout"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .env("NO_COLOR", "1")
            .current_dir(workdir.path())
            .output()
            .await
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the sweep as {who} found problems:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(report.contains(" passed"), "as {who}: {report}");
    }
    t.app.shutdown().await;
}
