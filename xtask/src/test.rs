//! `cargo xtask test`: the full test suite, as CI runs it.

use std::process::Command;
use std::time::Instant;

use crate::{cargo, run_command};

/// The crates that must build without `std`, for freestanding targets.
const NO_STD_CRATES: &[&str] = &[
    "xen-rust-sys",
    "xen-rust-hypercall",
    "xen-rust-hypercall-native",
    "xen-rust-shared",
    "xen-rust-evtchn",
    "xen-rust-console",
    "xen-rust-grant",
    "xen-rust-store",
    "xen-rust-bus",
    "xen-rust-blk",
    "xen-rust-ctrl",
    "xen-rust-guest",
    "xen-rust-vchan",
    "xen-rust",
];

/// The published crates that need `std` (every `no_std` crate is published too; the others are
/// `publish = false`).
const STD_PUBLISHED_CRATES: &[&str] = &["xen-rust-hypercall-privcmd"];

/// The crates published on crates.io.
fn published_crates() -> Vec<&'static str> {
    [NO_STD_CRATES, STD_PUBLISHED_CRATES].concat()
}

/// The freestanding targets every `no_std` crate must build for.
const NO_STD_TARGETS: &[&str] = &["x86_64-unknown-none", "aarch64-unknown-none"];

/// The crates with a `mock` feature, linted with all their features and tests for
/// [`MOCK_ARM_TARGET`] as well: a mock reads the ABI layout of the target it is built for.
const MOCK_CRATES: &[&str] = &[
    "xen-rust-hypercall",
    "xen-rust-evtchn",
    "xen-rust-store",
    "xen-rust-ctrl",
    "xen-rust",
];

/// The Arm target the mocks are linted for (the workspace's own target is x86_64).
const MOCK_ARM_TARGET: &str = "aarch64-unknown-linux-gnu";

/// The crates Miri runs: those whose tests need no inline assembly, device ioctls
/// or subprocesses (the privcmd backend's pool takes heap pages under Miri).
/// Not `xen-rust-bus` and `xen-rust-blk`: they forbid unsafe code, the shared-memory, ring and
/// grant code under them is run under Miri in its own crates, and one connection through the
/// in-process xenstore daemon takes minutes there (340 s for their tests).
const MIRI_CRATES: &[&str] = &[
    "xen-rust-sys",
    "xen-rust-hypercall",
    "xen-rust-hypercall-privcmd",
    "xen-rust-evtchn",
    "xen-rust-shared",
    "xen-rust-console",
    "xen-rust-grant",
    "xen-rust-store",
    "xen-rust-ctrl",
    "xen-rust-guest",
    "xen-rust-vchan",
    "xen-testbed-protocol",
];

/// The crates with loom models: unit tests under `cfg(loom)` (run with
/// `--lib`), and `tests/loom_*.rs` where the crate has them. Their other unit
/// tests are built with `cfg(loom)` as well.
const LOOM_CRATES: &[&str] = &["xen-rust-evtchn", "xen-rust-store", "xen-rust-vchan"];

/// One step of the suite.
type Step = fn() -> crate::Result;

pub(crate) fn run(args: &[String]) -> crate::Result {
    if let Some(arg) = args.first() {
        return Err(format!("`cargo xtask test` takes no argument, got `{arg}`"));
    }
    let steps: &[(&str, Step)] = &[
        ("format", format),
        ("clippy", clippy),
        ("tests", tests),
        ("loom", loom),
        ("miri", miri),
        ("no_std builds", no_std_builds),
        ("rustdoc", rustdoc),
        ("features", features),
        ("gen-sys --check", gen_sys_check),
        ("package", package),
        ("testbed", testbed),
    ];
    let started = Instant::now();
    for (name, step) in steps {
        let step_started = Instant::now();
        eprintln!("==> {name}");
        step().map_err(|e| format!("step `{name}` failed: {e}"))?;
        eprintln!(
            "==> {name}: ok ({:.1} s)",
            step_started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "==> all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn format() -> crate::Result {
    run_command(cargo().args(["fmt", "--all", "--check"]))
}

fn clippy() -> crate::Result {
    let deny = ["--", "-D", "warnings"];
    run_command(
        cargo()
            .args(["clippy", "--workspace", "--all-targets", "--all-features"])
            .args(deny),
    )?;
    for target in NO_STD_TARGETS {
        run_command(
            cargo()
                .args([
                    "clippy",
                    "--target",
                    target,
                    "--features",
                    "xen-rust/native",
                ])
                .args(package_args(NO_STD_CRATES))
                .args(deny),
        )?;
    }
    run_command(
        cargo()
            .args([
                "clippy",
                "--target",
                MOCK_ARM_TARGET,
                "--all-targets",
                "--all-features",
            ])
            .args(package_args(MOCK_CRATES))
            .args(deny),
    )
}

fn tests() -> crate::Result {
    run_command(cargo().args(["test", "--workspace", "--all-features"]))
}

fn loom() -> crate::Result {
    for package in LOOM_CRATES {
        let mut command = cargo();
        command
            .args([
                "test",
                "--release",
                "--all-features",
                "--package",
                package,
                "--lib",
            ])
            // Apart from the main target directory: every crate is rebuilt with the flag.
            .env("CARGO_TARGET_DIR", "target/loom")
            .env("RUSTFLAGS", "--cfg loom");
        if has_loom_test_files(package)? {
            command.args(["--test", "loom_*"]);
        }
        run_command(&mut command)?;
    }
    Ok(())
}

/// Whether `package` has `tests/loom_*.rs`.
fn has_loom_test_files(package: &str) -> crate::Result<bool> {
    let tests = crate::workspace_root()
        .join(crate_dir(package))
        .join("tests");
    let Ok(entries) = std::fs::read_dir(&tests) else {
        return Ok(false);
    };
    for entry in entries {
        let name = entry
            .map_err(|e| format!("cannot list {}: {e}", tests.display()))?
            .file_name();
        let name = name.to_string_lossy();
        if name.starts_with("loom_") && name.ends_with(".rs") {
            return Ok(true);
        }
    }
    Ok(false)
}

fn miri() -> crate::Result {
    // Through rustup, because `cargo miri` is a nightly-only command.
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "miri", "test", "--all-features"])
        .args(package_args(MIRI_CRATES))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        // The mock hypervisor turns hypercall arguments back into pointers, as Xen does.
        .env("MIRIFLAGS", "-Zmiri-permissive-provenance");
    run_command(&mut command)
}

fn no_std_builds() -> crate::Result {
    for target in NO_STD_TARGETS {
        run_command(
            cargo()
                .args(["build", "--target", target, "--features", "xen-rust/native"])
                .args(package_args(NO_STD_CRATES)),
        )?;
    }
    // The freestanding PV guest example: a whole guest kernel, linked for Xen's loader.
    run_command(cargo().args([
        "build",
        "--target",
        "x86_64-unknown-none",
        "--package",
        "xen-rust-hypercall-native",
        "--examples",
    ]))?;
    Ok(())
}

/// Checks every published crate with each feature alone and with each pair of features, as
/// users combine them (cargo-hack, installed by `cargo xtask setup`). `mock` is left out: it is
/// for tests, which build it with everything else on.
fn features() -> crate::Result {
    run_command(
        cargo()
            // Clippy rather than check, for `-D warnings`: a combination that leaves an item unused
            // fails.
            .args(["hack", "clippy", "--feature-powerset", "--depth", "2"])
            // `default` is empty in every crate.
            .args(["--no-dev-deps", "--exclude-features", "mock,default"])
            .args(package_args(&published_crates()))
            .args(["--", "-D", "warnings"]),
    )
}

fn rustdoc() -> crate::Result {
    run_command(
        cargo()
            .args(["doc", "--workspace", "--all-features", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    // With default features, as a user's `cargo doc` builds them: one crate at a time, so that
    // no other crate's dependency turns features on.
    for package in published_crates() {
        run_command(
            cargo()
                .args(["doc", "--no-deps", "--package", package])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
    }
    Ok(())
}

/// Packages every publishable crate as `cargo publish` would, in dependency order, and builds
/// each from its package (against the others' packages), without uploading.
fn package() -> crate::Result {
    let target_dir = crate::workspace_root().join("target/publish");
    forget_earlier_packages(&target_dir)?;
    // The tree as it is, committed or not: the one the other steps checked.
    run_command(
        cargo()
            .args(["publish", "--dry-run", "--workspace", "--allow-dirty"])
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    // Its builds are of no later use, and a fresh machine's disk is small.
    forget_earlier_packages(&target_dir)
}

/// Removes what an earlier dry run left of our packages. Cargo takes a registry package of a
/// given version as immutable: it reuses its unpacked source (`$CARGO_HOME/registry/src`) and
/// its build, so a second dry run would verify each crate against its dependencies as they
/// were at the first (every version here is still the unpublished one). The dry run builds in
/// `target_dir` of its own, removed here.
fn forget_earlier_packages(target_dir: &std::path::Path) -> crate::Result {
    let remove = |path: &std::path::Path| match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    };
    remove(target_dir)?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
        });
    let Some(sources) = cargo_home.map(|home| home.join("registry/src")) else {
        return Ok(());
    };
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        let Ok(packages) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for package in packages.flatten() {
            let ours = published_crates().iter().any(|name| {
                package
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{name}-0."))
            });
            if ours {
                remove(&package.path())?;
            }
        }
    }
    Ok(())
}

fn gen_sys_check() -> crate::Result {
    crate::gen_sys::run(&["--check".to_owned()])
}

fn testbed() -> crate::Result {
    crate::testbed::run(&[])
}

/// The workspace directory of a published package: its library's name, `xen-rust-store`
/// in `xen-store` (docs/design.md, "Package names").
fn crate_dir(package: &str) -> String {
    match package.strip_prefix("xen-rust") {
        Some(rest) => format!("xen{rest}"),
        None => package.to_owned(),
    }
}

fn package_args(packages: &[&str]) -> Vec<String> {
    packages.iter().map(|p| format!("--package={p}")).collect()
}
