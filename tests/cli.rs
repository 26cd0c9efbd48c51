//! The binary's commands: `--help`, `check` (exit codes, file:line:col,
//! masking), and `run` serving then draining on SIGTERM.

mod support;

use std::process::Command;

use support::binary::{BIN, Binary};
use support::client::TestClient;
use support::temp_file;
use support::upstream::FakeUpstream;

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["sim", "--help"],
        &["demo", "--help"],
    ] {
        let out = Command::new(BIN).args(cmd).output().expect("run binary");
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}

#[test]
fn version_names_the_commit_and_the_build_profile() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("factory-sidecar {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    assert!(
        text.contains(", debug build)") || text.contains(", release build)"),
        "{text}"
    );
}

#[test]
fn check_accepts_the_reference_config_and_masks_secrets() {
    let out = Command::new(BIN)
        .args(["check", "--config", "config/sidecar.toml"])
        .env("SIDECAR_ADMIN_TOKEN", "very-secret-admin-token")
        .output()
        .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[circuit_breaker]"), "{stdout}");
    assert!(stdout.contains("token = \"****\""), "{stdout}");
    assert!(!stdout.contains("very-secret-admin-token"));
}

#[test]
fn check_reports_errors_with_file_line_and_column() {
    let path = temp_file(
        "bad.toml",
        "[upstream]\nurl = \"https://pizza-factory.cs329.click\"\n\n[retry]\nmax_attempts = 0\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5:16: ", path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("max_attempts must be between 1 and 10"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/sidecar.toml"])
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config"));
}

#[test]
fn config_path_falls_back_to_sidecar_config_env() {
    let path = temp_file(
        "env.toml",
        "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[server]\nlisten = \"nope\"\n",
    );
    let out = Command::new(BIN)
        .arg("check")
        .env("SIDECAR_CONFIG", &path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4:10"));
}

#[tokio::test]
async fn run_serves_and_drains_on_sigterm() {
    let up = FakeUpstream::echo().await;
    let bin = Binary::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n",
        up.url()
    ))
    .await;
    bin.ready().await;
    let res = TestClient::http1()
        .get(&format!("{}/api/docs", bin.url))
        .await;
    assert_eq!(res.status, 200);

    bin.signal("TERM");
    let (code, stderr) = bin.exit().await;
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("\"shutdown requested; draining\""),
        "json logs: {stderr}"
    );
}

#[test]
fn the_demo_ends_by_itself_and_loses_no_order() {
    let out = Command::new(BIN)
        .args(["demo", "--duration", "8s", "--rate", "5"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |phase: &str| -> Vec<String> {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with("summary"))
            .find(|l| l.split_whitespace().next() == Some(phase))
            .unwrap_or_else(|| panic!("no {phase} row in:\n{stdout}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    for phase in [
        "healthy",
        "blip",
        "fail",
        "badjwt",
        "throttle",
        "down",
        "recovered",
    ] {
        let r = row(phase);
        // phase orders ok failed ...
        assert!(
            r[1].parse::<u32>().expect("orders") > 0,
            "{phase}: orders were sent"
        );
        assert_eq!(r[3], "0", "{phase}: no failed order\n{stdout}");
    }
    assert!(stdout.contains("resolved (auto)"), "{stdout}");
    assert!(
        stdout.lines().all(|l| l.chars().count() <= 100),
        "a line wider than 100 columns:\n{stdout}"
    );
}
