//! Independent relying parties in Node.js, run as part of `cargo test` against this build's
//! binary: `openid-client` (tests/oidc/rp.mjs) and Debian's Chromium driven by
//! `playwright-core` through the built-in login page (tests/oidc/browser.mjs).
//!
//! Their tools are installed by `bash .ci/run`; when one is missing these tests fail with the
//! install step, never pass silently.

use std::path::Path;

use tokio::process::Command;

/// Runs one Node script with the binary under test and asserts it says OK.
async fn run_node(script: &str, extra_env: &[(&str, String)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let which = std::process::Command::new("node").arg("--version").output();
    assert!(
        which.is_ok_and(|o| o.status.success()),
        "node is not installed: install Node.js 20 (Debian: apt-get install -y nodejs npm)"
    );
    assert!(
        root.join("tests/oidc/node_modules/openid-client").is_dir()
            && root
                .join("tests/oidc/node_modules/playwright-core")
                .is_dir(),
        "the Node test packages are missing: run `npm ci --prefix tests/oidc` (bash .ci/run does)"
    );

    let mut command = Command::new("node");
    command
        .arg(root.join("tests/oidc").join(script))
        .current_dir(root)
        .env("LK_BIN", env!("CARGO_BIN_EXE_latchkey"))
        .kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), command.output())
        .await
        .expect("the Node test finished within 4 minutes")
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    println!("{}", stdout.trim_end());
}

#[tokio::test]
async fn openid_client_completes_the_code_flow_refresh_and_revocation() {
    run_node("rp.mjs", &[]).await;
}

#[tokio::test]
async fn chromium_signs_up_activates_and_logs_in_through_the_built_in_page() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's Chromium is missing: run `apt-get install -y chromium` (bash .ci/run does)"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc-browser");
    run_node("browser.mjs", &[("LK_OUT", out.display().to_string())]).await;
}
