//! Builds the guest workspace (`guests/`) for its wasm targets and exports one path constant per
//! guest. The guests land in `<target>/guests/<name>.wasm`, a stable place the demo pod spec and the
//! tests both use, so one build serves both.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, target): every guest, each built for the target it exists to show.
const GUESTS: &[(&str, &str)] = &[
    ("kv-server", "wasm32-wasip2"),
    ("backup", "wasm32-wasip2"),
    ("toolbox", "wasm32-wasip2"),
    ("auth-proxy", "wasm32-wasip2"),
    ("scheduler", "wasm32-wasip2"),
    ("sync", "wasm32-wasip2"),
    ("hello-p1", "wasm32-wasip1"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => guests.parent().unwrap().join("target"),
    };
    let out = target_dir.join("guests");
    for entry in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", guests.join(entry).display());
    }
    for (pkg, _) in GUESTS {
        println!("cargo:rerun-if-changed={}", guests.join(pkg).display());
    }
    println!("cargo:rerun-if-changed={}", guests.join("sdk").display());

    let mut targets: Vec<&str> = GUESTS.iter().map(|(_, t)| *t).collect();
    targets.dedup();
    for target in targets {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.arg("build")
            .arg("--release")
            .arg("--locked")
            .arg("--manifest-path")
            .arg(guests.join("Cargo.toml"))
            .arg("--target")
            .arg(target)
            .env("CARGO_TARGET_DIR", &out)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            // `cargo clippy` of the host workspace must not turn into a lint run of the guests.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS");
        for (pkg, t) in GUESTS {
            if *t == target {
                cmd.arg("-p").arg(pkg);
            }
        }
        let status = cmd.status().expect("run cargo for the guests");
        assert!(
            status.success(),
            "building the guests for {target} failed (is the target installed? rustup target add {target})"
        );
    }

    let mut consts = String::new();
    for (pkg, target) in GUESTS {
        let built = out.join(target).join("release").join(format!("{pkg}.wasm"));
        let stable = out.join(format!("{pkg}.wasm"));
        copy_if_changed(&built, &stable);
        let name = pkg.to_uppercase().replace('-', "_");
        consts.push_str(&format!(
            "/// `{pkg}` built for {target}.\npub const {name}: &str = {:?};\n",
            stable.display().to_string()
        ));
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(dest, consts).unwrap();
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        // Write then rename, so a reader never sees half a module.
        let tmp = to.with_extension("wasm.tmp");
        std::fs::write(&tmp, &new).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}
