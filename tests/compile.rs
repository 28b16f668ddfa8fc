//! `peapod compile` and precompiled modules: a .cwasm runs without compiling; one for another
//! target, a modified one, or one without peapod's trailer is refused with a clear error and
//! nothing is created; `peapod run` keeps compiled modules in `<state_dir>/cache`.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;

/// Runs `peapod compile`; returns its exit code and stderr.
fn try_compile(env: &Env, module: &str, out: &Path, target: Option<&str>) -> (Option<i32>, String) {
    let mut args = vec!["compile", module, "-o", out.to_str().unwrap()];
    if let Some(t) = target {
        args.extend(["--target", t]);
    }
    let o = env.peapod(&args).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn compile(env: &Env, module: &str, out: &Path, target: Option<&str>) {
    let (code, stderr) = try_compile(env, module, out, target);
    assert_eq!(code, Some(0), "{stderr}");
}

fn spec_for(env: &Env, file: &str, pod: &str, module: &Path, args: &str) -> std::path::PathBuf {
    env.spec(
        file,
        &format!(
            "[pod]\nname = {pod:?}\nrestart_policy = \"Never\"\n[[containers]]\nname = \"c\"\nmodule = {:?}\nargs = {args}\n",
            module.display().to_string()
        ),
    )
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_precompiled_module_runs_and_bad_ones_are_refused() {
    let env = Env::new();
    let dir = env.dir.path();
    let good = dir.join("kv.cwasm");
    compile(&env, KV_SERVER, &good, None);

    // Made for the other architecture of the two peapod is tested on (x86_64 and, under QEMU,
    // aarch64): refused by this one.
    let other = if cfg!(target_arch = "aarch64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    let foreign = dir.join("kv-foreign.cwasm");
    compile(&env, KV_SERVER, &foreign, Some(other));
    let mut tampered = std::fs::read(&good).unwrap();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    std::fs::write(dir.join("tampered.cwasm"), tampered).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.join("bare.cwasm"), &bytes[..bytes.len() - 40]).unwrap();

    let cases = [
        (
            foreign,
            "made for another target, wasmtime version or engine settings",
        ),
        (dir.join("tampered.cwasm"), "modified after it was written"),
        (dir.join("bare.cwasm"), "no PEAPODC1 trailer"),
    ];
    for (i, (module, want)) in cases.iter().enumerate() {
        let spec = spec_for(&env, &format!("bad{i}.toml"), "aot", module, "[]");
        let stderr = env.refused(&spec);
        assert!(
            stderr.contains(&format!("{}:6: containers[0].module:", spec.display())),
            "{stderr}"
        );
        assert!(stderr.contains(want), "want {want:?}: {stderr}");
    }
    // The refused ones created nothing (`refused` checks); the good one runs.
    let spec = spec_for(
        &env,
        "good.toml",
        "aot",
        &good,
        "[\"--listen\", \"0.0.0.0:8080\"]",
    );
    let mut p = env.start(&spec);
    let s = p.started("aot");
    wait_healthy(SocketAddr::from((s.ip, 8080)));
    assert!(p.terminate().success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn peapod_run_compiles_each_module_once_across_runs() {
    let env = Env::new();
    let spec = spec_for(
        &env,
        "job.toml",
        "cached",
        Path::new(TOOLBOX),
        "[\"exit\", \"0\"]",
    );
    let cache = env.state_dir().join("cache");
    let run = || {
        let out = env
            .peapod(&["run", spec.to_str().unwrap()])
            .env("PEAPOD_LOG", "peapod=debug")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let first = run();
    assert!(first.contains("cached/c: module Compiled"), "{first}");
    let entries: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "one cache entry for one module");
    let second = run();
    assert!(second.contains("cached/c: module Cache"), "{second}");

    // A damaged entry fails its MAC: it is dropped (and replaced), never run.
    let entry = entries[0].path();
    let mut b = std::fs::read(&entry).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&entry, b).unwrap();
    let third = run();
    assert!(
        third.contains("modified after it was written") && third.contains("compiling again"),
        "{third}"
    );
    assert!(third.contains("cached/c: module Compiled"), "{third}");
    assert!(run().contains("cached/c: module Cache"));
}

#[test]
fn compile_names_the_targets_it_has() {
    let env = Env::new();
    let out = env.dir.path().join("x.cwasm");
    let (code, stderr) = try_compile(&env, HELLO_P1, &out, Some("riscv64gc-unknown-linux-gnu"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--target riscv64gc-unknown-linux-gnu:")
            && stderr.contains("this peapod compiles for x86_64 and aarch64"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Code compiled for one memory layout (`PEAPOD_MEMORIES`, see `wasm::memory`) is refused by a
/// process that lays memories out the other way, with a message that says so; under the same
/// layout it runs. A bad value of the variable is named. (A 32-bit process has one layout.)
#[cfg(target_pointer_width = "64")]
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn code_for_the_other_memory_layout_is_refused_and_named() {
    let env = Env::new();
    let bounded = env.dir.path().join("kv-bounded.cwasm");
    let o = env
        .peapod(&["compile", KV_SERVER, "-o", bounded.to_str().unwrap()])
        .env("PEAPOD_MEMORIES", "bounded")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = spec_for(
        &env,
        "b.toml",
        "layout",
        &bounded,
        "[\"--listen\", \"0.0.0.0:8080\"]",
    );
    let mut guarded = env.peapod(&["run", spec.to_str().unwrap()]);
    guarded.env("PEAPOD_MEMORIES", "guarded");
    let out = guarded.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("this process lays memories out guarded, see PEAPOD_MEMORIES"),
        "{stderr}"
    );
    assert!(env.leases().is_empty(), "{:?}", env.leases());

    let mut p = env.start_with(&spec, |c| {
        c.env("PEAPOD_MEMORIES", "bounded");
    });
    let s = p.started("layout");
    wait_healthy(SocketAddr::from((s.ip, 8080)));
    assert!(
        p.output()
            .contains("linear memories: bounded (PEAPOD_MEMORIES=bounded)")
    );
    assert!(p.terminate().success());

    let (code, stderr) = {
        let o = env
            .peapod(&["compile", KV_SERVER, "-o", "/dev/null"])
            .env("PEAPOD_MEMORIES", "fast")
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("PEAPOD_MEMORIES=\"fast\": expected guarded, bounded or auto"),
        "{stderr}"
    );
}
