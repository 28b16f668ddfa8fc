//! Volumes: what a guest sees of the file system (only its mounts), each kind's semantics seen
//! from the host side, the ways out of a mount that must fail, the size limit, and every bad
//! volume spec refused before anything is created.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const MIN: Duration = Duration::from_secs(60);

/// A pod of toolbox containers: `volumes` is TOML put before them, each container is (name,
/// args, extra TOML lines such as `volume_mounts`).
fn pod(name: &str, policy: &str, volumes: &str, containers: &[(&str, &[&str], &str)]) -> String {
    let mut s = format!(
        "[pod]\nname = {name:?}\nrestart_policy = {policy:?}\n\
         restart_backoff = {{ initial = \"10ms\", max = \"10ms\" }}\n\n{volumes}\n"
    );
    for (c, args, extra) in containers {
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        s += &format!(
            "[[containers]]\nname = {c:?}\nmodule = {TOOLBOX:?}\nargs = [{}]\n{extra}\n",
            args.join(", ")
        );
    }
    s
}

fn mount(volume: &str, path: &str, read_only: bool) -> String {
    format!(
        "volume_mounts = [{{ name = {volume:?}, mount_path = {path:?}, read_only = {read_only} }}]"
    )
}

/// The output lines of container `c` of pod `p` (without the log prefix).
fn lines_of(out: &str, p: &str, c: &str) -> Vec<String> {
    let tag = format!("{p}/{c}: ");
    out.lines()
        .filter_map(|l| l.split_once(&tag).map(|(_, rest)| rest.to_string()))
        .filter(|l| !l.starts_with("exited with code"))
        .collect()
}

/// Waits until `peapod logs POD` (the daemon's CRI logs) has a line containing `needle`.
fn wait_log(env: &Env, pod: &str, needle: &str) -> String {
    eventually(MIN, &format!("{needle:?} in the logs of {pod}"), || {
        let (_, out, _) = env.ctl(&["logs", pod]);
        out.contains(needle).then_some(out)
    })
}

fn has_line(out: &str, p: &str, c: &str, want: &str) -> bool {
    lines_of(out, p, c).iter().any(|l| l == want)
}

fn volume_dir(env: &Env, pod: &str, volume: &str) -> PathBuf {
    env.state_dir().join("volumes").join(pod).join(volume)
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn empty_dir_is_shared_kept_across_restarts_in_place_and_gone_with_the_pod() {
    let env = Env::new();
    let vols = "[[volumes]]\nname = \"data\"\nempty_dir = {}\n";
    // "writer" appends one x per run and is restarted after each (Always); "reader", another
    // container of the pod, reads the same file (again and again, also restarted).
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-ed",
            "Always",
            vols,
            &[
                (
                    "writer",
                    &["fs", "append /data/count x"],
                    &mount("data", "/data", false),
                ),
                (
                    "reader",
                    &["fs", "cat /data/count"],
                    &mount("data", "/data", false),
                ),
            ],
        ),
    );
    let mut p = env.start(&spec);
    p.started("vol-ed");
    let host = volume_dir(&env, "vol-ed", "data").join("count");
    // Kept across restarts in place: every run of "writer" added to the same file.
    let text = eventually(MIN, "five runs of writer in one file", || {
        std::fs::read_to_string(&host).ok().filter(|t| t.len() >= 5)
    });
    assert!(text.chars().all(|c| c == 'x'), "{text:?}");
    p.wait_for("vol-ed/reader: cat /data/count: ok: \"x", MIN);
    // On disk in the state dir, not a tmpfs (no size_limit).
    assert!(!env.all_mounts().iter().any(|m| m.contains("/volumes/")));
    p.terminate();
    assert!(
        !env.state_dir().join("volumes").join("vol-ed").exists(),
        "removed with the pod"
    );

    // The same pod again: a new sandbox, and its empty_dir is empty.
    let again = env.spec(
        "again.toml",
        &pod(
            "vol-ed",
            "Never",
            vols,
            &[(
                "lister",
                &["fs", "ls /data"],
                &mount("data", "/data", false),
            )],
        ),
    );
    let (status, out) = env.run_to_end(&again, MIN);
    assert!(status.success(), "{out}");
    assert!(has_line(&out, "vol-ed", "lister", "ls /data: ok"), "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_container_without_mounts_sees_no_file_system() {
    let env = Env::new();
    let vols = "[[volumes]]\nname = \"data\"\nempty_dir = {}\n";
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-none",
            "Never",
            vols,
            &[
                (
                    "with",
                    &["fs", "write /data/f x"],
                    &mount("data", "/data", false),
                ),
                (
                    "without",
                    &[
                        "fs",
                        "ls /",
                        "cat /etc/hostname",
                        "ls /data",
                        "write /data/g y",
                    ],
                    "",
                ),
            ],
        ),
    );
    let (status, out) = env.run_to_end(&spec, MIN);
    let lines = lines_of(&out, "vol-none", "without");
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines.iter().all(|l| l.contains(": error: ")), "{out}");
    assert!(
        has_line(&out, "vol-none", "with", "write /data/f: ok"),
        "{out}"
    );
    assert!(!status.success());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn empty_dir_size_limit_fails_the_write_and_keeps_what_was_there() {
    let env = Env::new();
    let vols = "[[volumes]]\nname = \"data\"\nempty_dir = { size_limit = \"1MiB\" }\n";
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-size",
            "Never",
            vols,
            &[(
                "app",
                &[
                    "fs",
                    "write /data/keep precious",
                    "fill /data/big 4096",
                    "cat /data/keep",
                    "rm /data/big",
                    "fill /data/small 256",
                    "hold",
                ],
                &mount("data", "/data", false),
            )],
        ),
    );
    let mut p = env.start(&spec);
    p.wait_for("fill /data/small: ", MIN);
    let out = p.output();
    let fill = lines_of(&out, "vol-size", "app")
        .into_iter()
        .find(|l| l.starts_with("fill /data/big: "))
        .unwrap_or_else(|| panic!("{out}"));
    // The kernel says ENOSPC; a Rust wasip2 guest's libc reports a failed stream write as EIO.
    assert!(
        fill.contains("error: StorageFull") || fill.contains("(os error 29)"),
        "{fill}"
    );
    let written: u64 = fill
        .split("after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{fill}"));
    assert!(written <= 1 << 20, "{fill}");
    assert!(
        has_line(&out, "vol-size", "app", "cat /data/keep: ok: \"precious\""),
        "{out}"
    );
    // Space is given back: after the big file is gone a new write fits again.
    assert!(
        lines_of(&out, "vol-size", "app")
            .iter()
            .any(|l| l.starts_with("fill /data/small: ok: 262144 bytes in ")),
        "{out}"
    );
    // From the host: a filesystem of its own, 1 MiB, on which the guest's file is.
    let dir = volume_dir(&env, "vol-size", "data");
    let st = nix::sys::statfs::statfs(&dir).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    assert_eq!(st.blocks() * st.block_size() as u64, 1 << 20);
    assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"precious");
    p.terminate();
    assert!(!env.all_mounts().iter().any(|m| m.contains("/volumes/")));
    assert!(!env.state_dir().join("volumes").join("vol-size").exists());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_guest_filling_its_volume_does_not_stop_its_sibling() {
    let env = Env::new();
    let vols = "[[volumes]]\nname = \"data\"\nempty_dir = { size_limit = \"2MiB\" }\n";
    let mut spec = pod(
        "vol-fill",
        "Always",
        vols,
        &[(
            "filler",
            &["fill-loop", "/data/x"],
            &mount("data", "/data", false),
        )],
    );
    spec += &format!(
        "[[containers]]\nname = \"app\"\nmodule = {KV_SERVER:?}\nargs = [\"--listen\", \"0.0.0.0:8080\"]\n"
    );
    let spec = env.spec("p.toml", &spec);
    let mut p = env.start(&spec);
    let ip = p.started("vol-fill").ip;
    p.wait_for("fill-loop: a write failed after", MIN);
    let app = std::net::SocketAddr::from((ip, 8080));
    wait_healthy(app);
    // While the filler keeps pressing against its limit, the app answers every request.
    for i in 0..30 {
        let r = http(app, "PUT", &format!("/kv/k{i}"), "v").unwrap();
        assert_eq!(r.status, 201, "request {i}");
        std::thread::sleep(Duration::from_millis(30));
    }
    let st = nix::sys::statfs::statfs(&volume_dir(&env, "vol-fill", "data")).unwrap();
    assert_eq!(st.blocks() * st.block_size() as u64, 2 << 20);
    p.terminate();
}

/// A directory of the test with a file beside it that no guest may reach.
struct HostDir {
    dir: PathBuf,
    outside: PathBuf,
}

fn host_dir(env: &Env) -> HostDir {
    let dir = env.dir.path().join("site");
    std::fs::create_dir(&dir).unwrap();
    let outside = env.dir.path().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE-CONTENT").unwrap();
    HostDir { dir, outside }
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (name, bytes)
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn host_path_is_read_write_and_no_path_leads_out_of_it() {
    let env = Env::new();
    let h = host_dir(&env);
    std::os::unix::fs::symlink("../outside.txt", h.dir.join("rel")).unwrap();
    std::os::unix::fs::symlink(&h.outside, h.dir.join("abs")).unwrap();
    std::os::unix::fs::symlink("..", h.dir.join("up")).unwrap();
    std::os::unix::fs::symlink("/", h.dir.join("root")).unwrap();
    let vols = format!(
        "[[volumes]]\nname = \"site\"\nhost_path = {{ path = {:?} }}\n",
        h.dir
    );
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-hp",
            "Never",
            &vols,
            &[(
                "app",
                &[
                    "fs",
                    "write /srv/made-by-guest hello",
                    "cat /srv/../outside.txt",
                    "cat /srv/rel",
                    "cat /srv/abs",
                    "cat /srv/up/outside.txt",
                    "ls /srv/root",
                    "write /srv/up/planted x",
                    "write /srv/rel x",
                    "write /srv/../planted x",
                ],
                &mount("site", "/srv", false),
            )],
        ),
    );
    let (_, out) = env.run_to_end(&spec, MIN);
    let lines = lines_of(&out, "vol-hp", "app");
    assert_eq!(lines.len(), 9, "{out}");
    assert_eq!(lines[0], "write /srv/made-by-guest: ok", "{out}");
    for l in &lines[1..] {
        assert!(l.contains(": error: "), "{l}\n{out}");
    }
    assert!(!out.contains("OUTSIDE-CONTENT"), "{out}");
    assert_eq!(
        std::fs::read_to_string(h.dir.join("made-by-guest")).unwrap(),
        "hello"
    );
    assert!(!env.dir.path().join("planted").exists());
    assert_eq!(
        std::fs::read_to_string(&h.outside).unwrap(),
        "OUTSIDE-CONTENT"
    );
    // The host directory is the user's: it stays when the pod is gone.
    assert!(h.dir.join("made-by-guest").exists());
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn read_only_host_path_refuses_every_change() {
    let env = Env::new();
    let h = host_dir(&env);
    std::fs::write(h.dir.join("index.html"), "<h1>hi</h1>").unwrap();
    std::fs::create_dir(h.dir.join("sub")).unwrap();
    let before = listing(&h.dir);
    let vols = format!(
        "[[volumes]]\nname = \"site\"\nhost_path = {{ path = {:?} }}\n",
        h.dir
    );
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-ro",
            "Never",
            &vols,
            &[(
                "app",
                &[
                    "fs",
                    "cat /srv/index.html",
                    "write /srv/new x",
                    "write /srv/index.html changed",
                    "append /srv/index.html more",
                    "rm /srv/index.html",
                    "mv /srv/index.html /srv/moved.html",
                    "mkdir /srv/dir",
                    "rmdir /srv/sub",
                ],
                &mount("site", "/srv", true),
            )],
        ),
    );
    let (_, out) = env.run_to_end(&spec, MIN);
    let lines = lines_of(&out, "vol-ro", "app");
    assert_eq!(lines.len(), 8, "{out}");
    assert_eq!(
        lines[0], "cat /srv/index.html: ok: \"<h1>hi</h1>\"",
        "{out}"
    );
    for l in &lines[1..] {
        assert!(l.contains(": error: "), "{l}\n{out}");
    }
    assert_eq!(listing(&h.dir), before);
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn two_pods_share_one_host_path() {
    let env = Env::new();
    let h = host_dir(&env);
    let vols = format!(
        "[[volumes]]\nname = \"shared\"\nhost_path = {{ path = {:?} }}\n",
        h.dir
    );
    let a = env.spec(
        "a.toml",
        &pod(
            "vol-share-a",
            "Never",
            &vols,
            &[(
                "w",
                &["fs", "write /shared/note from-a", "hold"],
                &mount("shared", "/shared", false),
            )],
        ),
    );
    let b = env.spec(
        "b.toml",
        &pod(
            "vol-share-b",
            "OnFailure",
            &vols,
            &[(
                "r",
                &["fs", "cat /shared/note"],
                &mount("shared", "/shared", true),
            )],
        ),
    );
    let mut pa = env.start(&a);
    pa.wait_for("write /shared/note: ok", MIN);
    let (status, out) = env.run_to_end(&b, MIN);
    assert!(status.success(), "{out}");
    assert!(
        has_line(&out, "vol-share-b", "r", "cat /shared/note: ok: \"from-a\""),
        "{out}"
    );
    pa.terminate();
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn files_are_read_only_and_exactly_as_written() {
    let env = Env::new();
    let vols = "[[volumes]]\nname = \"cfg\"\n\
                files = { \"app.conf\" = \"mode=edge\\nlevel = 3\\n\", \"peers.txt\" = \"a\\nb\\n\" }\n";
    let spec = env.spec(
        "p.toml",
        &pod(
            "vol-files",
            "Never",
            vols,
            &[(
                "app",
                &[
                    "fs",
                    "ls /etc/app",
                    "cat /etc/app/app.conf",
                    "cat /etc/app/peers.txt",
                    "write /etc/app/app.conf x",
                    "write /etc/app/new x",
                    "rm /etc/app/peers.txt",
                ],
                // read_only = false: files are read-only anyway.
                &mount("cfg", "/etc/app", false),
            )],
        ),
    );
    let (_, out) = env.run_to_end(&spec, MIN);
    let lines = lines_of(&out, "vol-files", "app");
    assert_eq!(
        lines[..3],
        [
            "ls /etc/app: ok: app.conf,peers.txt",
            "cat /etc/app/app.conf: ok: \"mode=edge\\nlevel = 3\\n\"",
            "cat /etc/app/peers.txt: ok: \"a\\nb\\n\"",
        ],
        "{out}"
    );
    assert_eq!(lines.len(), 6, "{out}");
    for l in &lines[3..] {
        assert!(l.contains(": error: "), "{l}\n{out}");
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn secrets_are_read_only_and_never_shown_by_the_daemon() {
    let env = Env::new();
    let secret_dir = env.dir.path().join("secrets");
    std::fs::create_dir(&secret_dir).unwrap();
    let token = secret_dir.join("token");
    const VALUE: &str = "s3cr3t-VALUE-7781";
    std::fs::write(&token, VALUE).unwrap();
    let vols = format!(
        "[[volumes]]\nname = \"token\"\nsecret = {{ path = {token:?} }}\n\
         [[volumes]]\nname = \"all\"\nsecret = {{ path = {secret_dir:?} }}\n"
    );
    let mounts = "volume_mounts = [{ name = \"token\", mount_path = \"/run/secrets\" }, \
                  { name = \"all\", mount_path = \"/etc/secrets\" }]\n\
                  env_from_files = { TOKEN = \"/run/secrets/token\" }";
    let spec = pod(
        "vol-secret",
        "Always",
        &vols,
        &[(
            "app",
            &[
                "fs",
                "ls /run/secrets",
                "ls /etc/secrets",
                "write /run/secrets/token x",
                "write /etc/secrets/new x",
                "rm /etc/secrets/token",
                "hold",
            ],
            mounts,
        )],
    );
    // Applied through the API: the daemon keeps a record of the pod in its state dir.
    let file = env.spec("secret.toml", &spec);
    let mut d = env.daemon();
    env.ctl_ok(&["apply", "-f", file.to_str().unwrap()]);
    env.wait_running("vol-secret");
    let logs = wait_log(&env, "vol-secret", "rm /etc/secrets/token: ");
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("ls /run/secrets: ok: token")),
        "{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("ls /etc/secrets: ok: token")),
        "{logs}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(": error: ")).count(),
        3,
        "{logs}"
    );
    assert_eq!(std::fs::read_to_string(&token).unwrap(), VALUE);
    assert_eq!(listing(&secret_dir).len(), 1);
    // Nowhere the daemon speaks or keeps state shows it (the guest got it as TOKEN, and the
    // file is bind-mounted under the run dir, not copied).
    for args in [
        &["ps", "-o", "json"][..],
        &["inspect", "vol-secret"],
        &["ps"],
    ] {
        let out = env.ctl_ok(args);
        assert!(!out.contains(VALUE), "{args:?}: {out}");
        assert!(out.contains("vol-secret"), "{args:?}: {out}");
    }
    assert!(!d.output().contains(VALUE));
    // inspect says which volumes the pod has and where they are, by path.
    let v: serde_json::Value =
        serde_json::from_str(&env.ctl_ok(&["inspect", "vol-secret"])).unwrap();
    assert_eq!(v["volumes"][0]["name"], "token", "{v}");
    assert_eq!(v["volumes"][0]["kind"], "secret", "{v}");
    assert_eq!(v["volumes"][0]["host_path"], token.to_str().unwrap(), "{v}");
    let files = walk(&env.state_dir());
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(VALUE),
            "{} holds the secret",
            f.display()
        );
    }
    // The pod's record keeps the secret's path, so the pod comes back after a daemon restart.
    assert!(
        files
            .iter()
            .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(token.to_str().unwrap()))),
        "no record names {}",
        token.display()
    );
    d.terminate();
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn env_from_files_reads_a_mounted_file_at_each_start() {
    let env = Env::new();
    let h = host_dir(&env);
    std::fs::write(h.dir.join("level"), "first").unwrap();
    let vols = format!(
        "[[volumes]]\nname = \"conf\"\nhost_path = {{ path = {:?} }}\n",
        h.dir
    );
    let extra = format!(
        "{}\nenv_from_files = {{ LEVEL = \"/conf/level\" }}",
        mount("conf", "/conf", true)
    );
    let spec = env.spec(
        "p.toml",
        &pod("vol-env", "Never", &vols, &[("app", &["env"], &extra)]),
    );
    let (status, out) = env.run_to_end(&spec, MIN);
    assert!(status.success(), "{out}");
    assert!(
        has_line(&out, "vol-env", "app", "env: LEVEL=first"),
        "{out}"
    );

    // A file that is missing when the container starts: it is not started, and says why.
    std::fs::remove_file(h.dir.join("level")).unwrap();
    let (status, out) = env.run_to_end(&spec, MIN);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("not started: env_from_files LEVEL: /conf/level:"),
        "{out}"
    );
    // A symlink out of the volume is not followed.
    std::os::unix::fs::symlink(&h.outside, h.dir.join("level")).unwrap();
    let (status, out) = env.run_to_end(&spec, MIN);
    assert!(!status.success(), "{out}");
    assert!(!out.contains("OUTSIDE-CONTENT"), "{out}");
    // A FIFO (no writer will ever come) is refused, not waited on.
    std::fs::remove_file(h.dir.join("level")).unwrap();
    nix::unistd::mkfifo(&h.dir.join("level"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (status, out) = env.run_to_end(&spec, MIN);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("env_from_files LEVEL: /conf/level: not a regular file"),
        "{out}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn empty_dir_and_file_secret_survive_a_daemon_kill_9_with_their_pod() {
    let env = Env::new();
    let token = env.dir.path().join("token");
    std::fs::write(&token, "T").unwrap();
    let vols = format!(
        "[[volumes]]\nname = \"data\"\nempty_dir = {{ size_limit = \"1MiB\" }}\n\
         [[volumes]]\nname = \"token\"\nsecret = {{ path = {token:?} }}\n"
    );
    let mounts = "volume_mounts = [{ name = \"data\", mount_path = \"/data\" }, \
                  { name = \"token\", mount_path = \"/run/secrets\" }]";
    // Each start appends a line; "cat" shows what earlier starts left.
    let spec = pod(
        "vol-kill",
        "Always",
        &vols,
        &[(
            "app",
            &["fs", "append /data/starts x", "cat /data/starts", "hold"],
            mounts,
        )],
    );
    // Applied through the API: recovered from the daemon's record of it.
    let file = env.spec("p.toml", &spec);
    let mut d = env.daemon();
    env.ctl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let ip = env.wait_running("vol-kill");
    wait_log(&env, "vol-kill", "cat /data/starts: ok: \"x\"");
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_exit(MIN);
    let file = volume_dir(&env, "vol-kill", "data").join("starts");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    let mut d = env.daemon();
    assert_eq!(env.wait_running("vol-kill"), ip, "recovered, same IP");
    wait_log(&env, "vol-kill", "cat /data/starts: ok: \"xx\"");
    let mounts_before = env.all_mounts().len();
    d.terminate();
    // A clean stop of the daemon keeps the pod's sandbox, volumes included.
    assert_eq!(env.all_mounts().len(), mounts_before);

    // Deleting the pod removes its volumes and their mounts.
    let mut d = env.daemon();
    env.wait_running("vol-kill");
    env.ctl_ok(&["delete", "vol-kill"]);
    eventually(MIN, "pod and its volumes gone", || {
        (!env.ps().contains_key("vol-kill")
            && !env.state_dir().join("volumes").join("vol-kill").exists()
            && !env.all_mounts().iter().any(|m| m.contains("vol-kill")))
        .then_some(())
    });
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "T");
    d.terminate();
}

/// Every regular file under `dir` (not following symlinks).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// `peapod run` must refuse `text` (exit 2, nothing created) with each of `wants` in stderr
/// (`FILE` stands for the spec's path).
fn refused(text: &str, wants: &[&str]) {
    let env = Env::new();
    let text = text
        .replace("TOOLBOX", &format!("{TOOLBOX:?}"))
        .replace("TMP", &env.dir.path().display().to_string());
    let spec = env.spec("bad.toml", &text);
    let stderr = env.refused(&spec);
    for want in wants {
        let want = want
            .replace("FILE", &spec.display().to_string())
            .replace("TMP", &env.dir.path().display().to_string());
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
    assert!(!env.state_dir().join("volumes").exists());
}

const HEAD: &str = "[pod]\nname = \"bad\"\n";

macro_rules! bad_spec {
    ($name:ident, $volumes:expr, $container:expr, $($want:expr),+) => {
        #[test]
        #[ignore = "needs root: scripts/test runs it"]
        fn $name() {
            let text = format!(
                "{HEAD}{}\n[[containers]]\nname = \"app\"\nmodule = TOOLBOX\n{}\n",
                $volumes, $container
            );
            refused(&text, &[$($want),+]);
        }
    };
}

bad_spec!(
    refuses_a_mount_of_an_unknown_volume,
    "[[volumes]]\nname = \"data\"\nempty_dir = {}\n",
    "volume_mounts = [{ name = \"dta\", mount_path = \"/data\" }]",
    "FILE:10: containers[0].volume_mounts[0].name: no volume named \"dta\""
);

bad_spec!(
    refuses_two_volumes_of_one_name,
    "[[volumes]]\nname = \"data\"\nempty_dir = {}\n[[volumes]]\nname = \"data\"\nempty_dir = {}\n",
    "",
    "FILE:7: volumes[1].name: \"data\" is used by another volume"
);

bad_spec!(
    refuses_a_volume_of_two_kinds,
    "[[volumes]]\nname = \"data\"\nempty_dir = {}\nfiles = { a = \"b\" }\n",
    "",
    "FILE:6: volumes[0].files: volume \"data\" has empty_dir and files: a volume is exactly one kind"
);

bad_spec!(
    refuses_a_volume_of_no_kind,
    "[[volumes]]\nname = \"data\"\n",
    "",
    "FILE:4: volumes[0].name: volume \"data\" needs one of empty_dir, host_path, files or secret"
);

bad_spec!(
    refuses_a_relative_mount_path,
    "[[volumes]]\nname = \"data\"\nempty_dir = {}\n",
    "volume_mounts = [{ name = \"data\", mount_path = \"data\" }]",
    "FILE:10: containers[0].volume_mounts[0].mount_path: \"data\" must be an absolute path"
);

bad_spec!(
    refuses_a_duplicate_mount_path,
    "[[volumes]]\nname = \"a\"\nempty_dir = {}\n[[volumes]]\nname = \"b\"\nempty_dir = {}\n",
    "volume_mounts = [\n  { name = \"a\", mount_path = \"/data\" },\n  { name = \"b\", mount_path = \"/data\" },\n]",
    "FILE:15: containers[0].volume_mounts[1].mount_path: \"/data\" is already a mount path"
);

bad_spec!(
    refuses_a_missing_host_path,
    "[[volumes]]\nname = \"site\"\nhost_path = { path = \"TMP/nope\" }\n",
    "",
    "FILE:5: volumes[0].host_path.path: TMP/nope does not exist"
);

bad_spec!(
    refuses_a_host_path_that_is_not_a_directory,
    "[[volumes]]\nname = \"site\"\nhost_path = { path = \"TMP/bad.toml\" }\n",
    "",
    "FILE:5: volumes[0].host_path.path: TMP/bad.toml is not a directory"
);

bad_spec!(
    refuses_an_unparsable_size_limit,
    "[[volumes]]\nname = \"data\"\nempty_dir = { size_limit = \"lots\" }\n",
    "",
    "FILE:5: volumes[0].empty_dir.size_limit: \"lots\" is not a size"
);

bad_spec!(
    refuses_env_from_files_outside_the_mounts,
    "[[volumes]]\nname = \"data\"\nempty_dir = {}\n",
    "volume_mounts = [{ name = \"data\", mount_path = \"/data\" }]\nenv_from_files = { T = \"/etc/token\" }",
    "FILE:11: containers[0].env_from_files: T: \"/etc/token\" is not inside any of this container's volume_mounts"
);

bad_spec!(
    refuses_a_missing_secret,
    "[[volumes]]\nname = \"token\"\nsecret = { path = \"TMP/no-such-secret\" }\n",
    "",
    "FILE:5: volumes[0].secret.path: TMP/no-such-secret: No such file or directory"
);

#[test]
#[ignore = "needs root: scripts/test runs it"]
fn the_api_refuses_a_bad_volume_with_422_and_creates_nothing() {
    let env = Env::new();
    let mut d = env.daemon();
    let text = format!(
        "{HEAD}[[volumes]]\nname = \"site\"\nhost_path = {{ path = \"/no/such/dir\" }}\n\
         [[containers]]\nname = \"app\"\nmodule = {TOOLBOX:?}\n\
         volume_mounts = [{{ name = \"site\", mount_path = \"/srv\" }}]\n"
    );
    let body = serde_json::json!({"source": env.dir.path().join("api.toml"), "spec": text});
    let (status, v) = raw_api(&env, "POST", "/v1/pods", &body.to_string());
    assert_eq!(status, 422, "{v}");
    let problem = v["problems"][0].as_str().unwrap_or_default();
    assert!(
        problem.contains("api.toml:5: volumes[0].host_path.path: /no/such/dir does not exist"),
        "{v}"
    );
    let bad = env.spec("bad.toml", &text);
    let (code, _, err) = env.ctl(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:5: volumes[0].host_path.path:"),
        "{err}"
    );
    assert!(env.ps().is_empty());
    assert!(env.leases().is_empty());
    d.terminate();
}

bad_spec!(
    refuses_a_host_path_holding_peapods_own_directories,
    "[[volumes]]\nname = \"all\"\nhost_path = { path = \"TMP\", type = \"DirectoryOrCreate\" }\n",
    "",
    "FILE:5: volumes[0].host_path.path: TMP overlaps peapod's own directory TMP/run"
);

/// Round 2, finding 2: root applies a pod over a directory a user can rename in (`~/www`); the
/// user swaps it for a symlink to the state dir, or a secret for one to a root-only file, and
/// restarts the pod. Such a path is refused unless the volume allows it knowingly; when allowed,
/// what was checked is held open (a restart in place still sees it), and a new sandbox opens
/// the path again, refusing the symlink: the guest never sees the state dir or the file.
#[test]
#[ignore = "needs root: scripts/test runs it"]
fn a_host_path_swapped_for_a_symlink_is_never_followed() {
    let env = Env::new();
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join("www")).unwrap();
    std::fs::write(home.join("www/index.html"), "site").unwrap();
    std::fs::write(home.join("token"), "user's token").unwrap();
    let root_only = env.dir.path().join("root-only");
    std::fs::write(&root_only, "root's secret").unwrap();
    // The user owns the directory the volumes' paths are in.
    nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let d = env.daemon();
    let text = |allow: bool| {
        let a = if allow {
            ", allow_user_writable = true"
        } else {
            ""
        };
        pod(
            "site",
            "Always",
            &format!(
                "[[volumes]]\nname = \"www\"\nhost_path = {{ path = {:?}{a} }}\n\
                 [[volumes]]\nname = \"token\"\nsecret = {{ path = {:?}{a} }}\n",
                home.join("www"),
                home.join("token")
            ),
            &[(
                "app",
                &["fs", "ls /www", "cat /token/token", "hold"],
                "volume_mounts = [{ name = \"www\", mount_path = \"/www\" }, \
                 { name = \"token\", mount_path = \"/token\" }]",
            )],
        )
    };
    let spec = env.spec("site.toml", &text(false));
    let (code, _, err) = env.ctl(&["apply", "-f", spec.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    for v in ["www", "token"] {
        let want = format!(
            "{} can be renamed or replaced by a user other than root ({} belongs to user 4242)",
            home.join(v).display(),
            home.display()
        );
        assert!(err.contains(&want), "{want:?} in {err}");
    }
    assert!(err.contains("allow_user_writable = true"), "{err}");

    // Root knowingly allows it.
    std::fs::write(&spec, text(true)).unwrap();
    env.ctl_ok(&["apply", "-f", spec.to_str().unwrap()]);
    env.wait_running("site");
    let logs = || env.ctl(&["logs", "site"]).1;
    eventually(MIN, "the guest lists the site", || {
        logs().contains("index.html").then_some(())
    });
    assert!(logs().contains("user's token"));
    // The swap: the site for a symlink to the state dir, the token for one to a root-only file.
    std::fs::rename(home.join("www"), home.join("www.old")).unwrap();
    std::os::unix::fs::symlink(env.state_dir(), home.join("www")).unwrap();
    std::fs::rename(home.join("token"), home.join("token.old")).unwrap();
    std::os::unix::fs::symlink(&root_only, home.join("token")).unwrap();
    // A restart in place sees what was checked, not what the names lead to now.
    env.ctl_ok(&["restart", "site/app"]);
    // The new instance has listed its /www and read its token (a second time in the log).
    let seen = eventually(MIN, "the restarted instance reads its volumes", || {
        let seen = logs();
        (seen.matches("cat /token/token:").count() >= 2).then_some(seen)
    });
    assert_eq!(seen.matches("index.html").count(), 2, "{seen}");
    assert!(!seen.contains("ipam") && !seen.contains("pods"), "{seen}");
    assert!(!seen.contains("root's secret"), "{seen}");
    // A new sandbox opens the paths again, and refuses the symlinks.
    let (code, _, err) = env.ctl(&["restart", "site"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    let seen = logs();
    assert!(
        !seen.contains("root's secret") && !seen.contains("ipam"),
        "{seen}"
    );
    drop(d);
}
