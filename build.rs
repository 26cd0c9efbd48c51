//! Build facts for `--version`, `/status` and `factory_sidecar_build_info`:
//! the git commit (`$SIDECAR_GIT_COMMIT` when set, else `git rev-parse`,
//! else "unknown", as in a container build that copies no `.git`), the build
//! profile, the enabled Cargo features and the compiler.
//!
//! It reruns when the checked-out commit moves (`HEAD`, the branch's ref,
//! `packed-refs`), not on every source change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A build without `.git` (a container) may pass the commit in.
    println!("cargo:rerun-if-env-changed=SIDECAR_GIT_COMMIT");
    let commit = std::env::var("SIDECAR_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIDECAR_GIT_COMMIT={commit}");
    for path in git_files() {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SIDECAR_BUILD_PROFILE={profile}");

    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_owned))
        .map(|f| f.to_ascii_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=SIDECAR_BUILD_FEATURES={features}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SIDECAR_BUILD_RUSTC={rustc}");
}

/// `git args...` in the package's directory, trimmed; `None` on any failure.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

/// The files whose change moves `HEAD`: `HEAD` itself (a checkout), the
/// branch's ref (a commit) and `packed-refs` (the ref once packed). A
/// worktree keeps `HEAD` in its own git dir and refs in the common one.
fn git_files() -> Vec<PathBuf> {
    let (Some(git_dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return Vec::new();
    };
    let base = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let absolute = |p: String| match &base {
        Some(b) if Path::new(&p).is_relative() => b.join(p),
        _ => PathBuf::from(p),
    };
    let (git_dir, common) = (absolute(git_dir), absolute(common));
    let mut files = vec![git_dir.join("HEAD"), common.join("packed-refs")];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(common.join(branch));
    }
    files
}
