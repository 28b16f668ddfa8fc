//! `peapod-wasm-run MODULE [ARGS...]`: runs a wasm32-wasip2 (or wasip1) program on peapod's
//! engine as the harness does, its output on this process's, its exit status as this one's
//! (101 when it trapped). Cargo's runner for the guests' own unit tests:
//!
//! ```sh
//! CARGO_TARGET_WASM32_WASIP2_RUNNER=target/debug/peapod-wasm-run \
//!     cargo test --manifest-path guests/Cargo.toml --target wasm32-wasip2 -p peapod-sdk
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(module) = args.next() else {
        eprintln!("usage: peapod-wasm-run MODULE [ARGS...]");
        return ExitCode::from(2);
    };
    let mut sidecar = peapod_harness::Sidecar::new(&module).echo();
    for a in args {
        sidecar = sidecar.arg(&a);
    }
    let ended = sidecar.start().wait(std::time::Duration::from_secs(600));
    match ended.exit_code {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => {
            eprintln!("peapod-wasm-run: {module}: {}", ended.reason);
            ExitCode::from(101)
        }
    }
}
