//! The reconciler on a fake host ([`crate::daemon::host::fake`]): what it starts, stops and
//! removes for each change of the pods directory and each API call, its crash guard, and its
//! refusals — without root, a kernel or a running module, on tokio's paused clock. Modules are
//! real (a tiny wasip1 command compiled by the real engine), so digests are the real ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::daemon::host::fake::Fake;

/// A daemon's directories in a temp dir, and a module file.
struct Board {
    dir: tempfile::TempDir,
    cfg: Config,
    exec: Executor,
    fake: Fake,
}

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

impl Board {
    fn new() -> Board {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            run_dir: dir.path().join("run"),
            state_dir: dir.path().join("state"),
            pods_dir: dir.path().join("pods"),
            egress: false,
            ..Config::default()
        };
        cfg.logs.dir = dir.path().join("logs");
        std::fs::create_dir_all(&cfg.pods_dir).unwrap();
        let module = wat::parse_str("(module (func (export \"_start\")))").unwrap();
        std::fs::write(dir.path().join("app.wasm"), module).unwrap();
        Board {
            dir,
            cfg,
            exec: Executor::new().unwrap(),
            fake: Fake::default(),
        }
    }

    /// A daemon's pods on this board (a new one after a "crash": the last one just dropped).
    fn pods(&self) -> Pods {
        Pods::with_host(
            self.cfg.clone(),
            self.exec.clone(),
            Arc::new(self.fake.clone()),
        )
    }

    /// Spec text of pod `name` with `extra` lines in its container.
    fn spec(&self, name: &str, extra: &str) -> String {
        format!(
            "[pod]\nname = \"{name}\"\n[[containers]]\nname = \"app\"\nmodule = {:?}\n{extra}\n",
            self.dir.path().join("app.wasm")
        )
    }

    fn file(&self, file: &str, text: &str) -> PathBuf {
        let p = self.cfg.pods_dir.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `peapod apply` of `text` by `caller`, settled: (action or error).
    async fn apply(
        &self,
        pods: &tokio::sync::Mutex<Pods>,
        text: &str,
        caller: Caller,
    ) -> Result<Action, OpError> {
        let source = self.dir.path().join("applied.toml");
        let (cfg, exec) = pods.lock().await.planner();
        let l = plan(&cfg, &exec, &source, text, caller)?;
        let name = l.spec.name.clone();
        let action = pods.lock().await.commit(&source, text, l, caller).await?;
        settle(pods, Some(&name)).await;
        let (outcome, cleanup) = pods.lock().await.committed(&name, action);
        if let Some(stop) = cleanup {
            stop.wait().await;
        }
        outcome.map(|(a, _)| a)
    }
}

fn status(pods: &Pods, name: &str) -> Option<String> {
    pods.view(name).map(|v| v.status)
}

#[tokio::test(start_paused = true)]
async fn the_pods_directory_is_reconciled() {
    let b = Board::new();
    b.file("a.toml", &b.spec("a", ""));
    b.file("b.toml", &b.spec("b", ""));
    let pods = tokio::sync::Mutex::new(b.pods());
    pods.lock().await.start_all().await;
    assert_eq!(b.fake.take_calls(), ["orphans a,b", "start a", "start b"]);
    assert_eq!(status(&*pods.lock().await, "a").as_deref(), Some("running"));

    // Comments and key order are not the spec: nothing happens.
    b.file("a.toml", &format!("# edited\n{}", b.spec("a", "")));
    assert!(reload_beside(&pods).await.is_empty());
    assert_eq!(b.fake.take_calls(), Vec::<String>::new());

    // What the spec says changed: re-created (stopped, then started once the stop is done).
    b.file("a.toml", &b.spec("a", "args = [\"--v2\"]"));
    assert!(reload_beside(&pods).await.is_empty());
    assert_eq!(b.fake.take_calls(), ["stop a", "start a"]);

    // A file that does not validate changes nothing, and says so.
    b.file("b.toml", &b.spec("b", "memory_limit_mib = \"lots\""));
    let problems = reload_beside(&pods).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("b.toml") && problems[0].contains("memory_limit_mib"),
        "{problems:?}"
    );
    assert_eq!(b.fake.take_calls(), Vec::<String>::new());
    assert_eq!(status(&*pods.lock().await, "b").as_deref(), Some("running"));
    assert_eq!(pods.lock().await.problems(), problems);

    // Two files of one pod: the second is refused.
    b.file("c.toml", &b.spec("a", ""));
    let problems = reload_beside(&pods).await;
    assert!(
        problems.iter().any(|p| p.contains("is already defined by")),
        "{problems:?}"
    );

    // A file gone: its pod is deleted.
    std::fs::remove_file(b.cfg.pods_dir.join("c.toml")).unwrap();
    std::fs::remove_file(b.cfg.pods_dir.join("a.toml")).unwrap();
    reload_beside(&pods).await;
    settle(&pods, None).await;
    assert_eq!(b.fake.take_calls(), ["stop a"]);
    assert!(pods.lock().await.view("a").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_failed_to_start_is_tried_again_on_reload() {
    let b = Board::new();
    b.file("a.toml", &b.spec("a", ""));
    b.fake
        .failing
        .lock()
        .unwrap()
        .insert("a".into(), "pod a: no free address left".into());
    let pods = tokio::sync::Mutex::new(b.pods());
    pods.lock().await.start_all().await;
    let v = pods.lock().await.view("a").unwrap();
    assert_eq!(v.status, "failed");
    assert_eq!(v.error.as_deref(), Some("pod a: no free address left"));
    b.fake.failing.lock().unwrap().clear();
    b.fake.take_calls();
    let problems = reload_beside(&pods).await;
    assert!(problems.is_empty(), "{problems:?}");
    // What the failed start left is removed first, then the pod starts.
    assert_eq!(b.fake.take_calls(), ["remove a", "start a"]);
    assert_eq!(status(&*pods.lock().await, "a").as_deref(), Some("running"));
}

#[tokio::test(start_paused = true)]
async fn orphans_go_and_a_left_sandbox_is_taken_over() {
    let b = Board::new();
    b.file("a.toml", &b.spec("a", ""));
    b.fake
        .left
        .lock()
        .unwrap()
        .extend(["a".to_string(), "gone".to_string()]);
    let mut pods = b.pods();
    pods.start_all().await;
    assert_eq!(b.fake.take_calls(), ["orphans a", "start a"]);
    assert!(
        b.fake.left.lock().unwrap().is_empty(),
        "a recovered, gone collected"
    );
}

/// The daemon died twice in a row within 30 s of starting pod `bad`: the next start holds it
/// back (10 s, doubling) while the API answers; a clean stop clears the marks.
#[tokio::test(start_paused = true)]
async fn the_crash_guard_holds_back_a_pod_the_daemon_keeps_dying_for() {
    let b = Board::new();
    b.file("bad.toml", &b.spec("bad", ""));
    for _ in 0..2 {
        // Started, then the daemon "dies" (dropped without a stop).
        let mut pods = b.pods();
        pods.start_all().await;
        assert_eq!(pods.view("bad").unwrap().status, "running");
    }
    b.fake.take_calls();
    let mut pods = b.pods();
    pods.start_all().await;
    let v = pods.view("bad").unwrap();
    assert_eq!(v.status, "waiting", "{v:?}");
    assert_eq!(b.fake.take_calls(), ["orphans bad"], "not started");
    tokio::time::advance(Duration::from_secs(9)).await;
    pods.tick().await;
    assert_eq!(b.fake.take_calls(), Vec::<String>::new());
    tokio::time::advance(Duration::from_secs(2)).await;
    pods.tick().await;
    assert_eq!(b.fake.take_calls(), ["start bad"]);
    // A clean stop: the next daemon starts it at once.
    pods.stop_all().await;
    assert_eq!(b.fake.take_calls(), ["keep bad"]);
    let mut pods = b.pods();
    pods.start_all().await;
    assert_eq!(pods.view("bad").unwrap().status, "running");
}

#[tokio::test(start_paused = true)]
async fn applies_create_recreate_or_leave_and_deletes_stop() {
    let b = Board::new();
    let pods = tokio::sync::Mutex::new(b.pods());
    pods.lock().await.start_all().await;
    b.fake.take_calls();
    let text = b.spec("web", "");
    assert_eq!(b.apply(&pods, &text, ROOT).await.unwrap(), Action::Created);
    assert_eq!(
        b.apply(&pods, &text, ROOT).await.unwrap(),
        Action::Unchanged
    );
    let v2 = b.spec("web", "env = { V = \"2\" }");
    assert_eq!(b.apply(&pods, &v2, ROOT).await.unwrap(), Action::Recreated);
    assert_eq!(b.fake.take_calls(), ["start web", "stop web", "start web"]);
    // Stored: a new daemon starts it again.
    assert!(b.cfg.state_dir.join("pods/web.json").exists());
    let stop = pods.lock().await.delete("web").unwrap();
    stop.wait().await;
    assert_eq!(b.fake.take_calls(), ["stop web"]);
    assert!(!b.cfg.state_dir.join("pods/web.json").exists());
    assert!(matches!(
        pods.lock().await.delete("web"),
        Err(OpError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_apply_that_cannot_start_leaves_nothing() {
    let b = Board::new();
    let pods = tokio::sync::Mutex::new(b.pods());
    b.fake
        .failing
        .lock()
        .unwrap()
        .insert("web".into(), "volume d: read-only".into());
    let e = b.apply(&pods, &b.spec("web", ""), ROOT).await.unwrap_err();
    assert_eq!(e.to_string(), "volume d: read-only");
    assert!(pods.lock().await.view("web").is_none());
    assert!(!b.cfg.state_dir.join("pods/web.json").exists());
    assert_eq!(b.fake.take_calls(), ["start web", "remove web"]);
}

#[tokio::test(start_paused = true)]
async fn refusals_name_what_is_wrong() {
    let b = Board::new();
    b.file("f.toml", &b.spec("f", ""));
    let pods = tokio::sync::Mutex::new(b.pods());
    pods.lock().await.start_all().await;
    // A file's pod belongs to its file.
    let e = b.apply(&pods, &b.spec("f", ""), ROOT).await.unwrap_err();
    assert!(
        matches!(&e, OpError::Conflict(m) if m.contains("f.toml")),
        "{e}"
    );
    assert!(matches!(
        pods.lock().await.delete("f"),
        Err(OpError::Conflict(_))
    ));
    // An invalid spec: every problem, with its line.
    let e = b
        .apply(&pods, "[pod]\nname = \"Bad_Name\"\n", ROOT)
        .await
        .unwrap_err();
    let OpError::Invalid(e) = e else {
        panic!("{e}")
    };
    let text = e.to_string();
    assert!(
        text.contains(":2: pod.name:") && text.contains("containers"),
        "{text}"
    );
    // More than the board has: refused with the figures, for root too.
    let huge = b.spec("huge", "memory_limit_mib = 65536");
    let mut small = b.cfg.clone();
    small.limits.allocatable_memory = 1 << 30;
    let pods = tokio::sync::Mutex::new(Pods::with_host(
        small,
        b.exec.clone(),
        Arc::new(b.fake.clone()),
    ));
    let e = b.apply(&pods, &huge, ROOT).await.unwrap_err();
    assert!(
        matches!(&e, OpError::Unfit(m) if m.contains("needs 64 GiB of memory, 1 GiB of 1 GiB")),
        "{e}"
    );
    // Another user's pod is not theirs to change.
    assert_eq!(
        b.apply(&pods, &b.spec("mine", ""), ROOT).await.unwrap(),
        Action::Created
    );
    let user = Caller { uid: 1000, ..ROOT };
    assert!(matches!(
        pods.lock().await.owned_by("mine", user),
        Err(OpError::Forbidden(_))
    ));
    let e = b
        .apply(&pods, &b.spec("mine", "env = { X = \"1\" }"), user)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OpError::Forbidden(m) if m.contains("belongs to root")),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn restarts_in_place_and_recreates() {
    let b = Board::new();
    b.file("a.toml", &b.spec("a", ""));
    let pods = tokio::sync::Mutex::new(b.pods());
    pods.lock().await.start_all().await;
    b.fake.take_calls();
    pods.lock().await.restart_container("a", "app").unwrap();
    let e = pods
        .lock()
        .await
        .restart_container("a", "nope")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("has no container named \"nope\" (it has: app)"),
        "{e}"
    );
    pods.lock().await.restart("a").await.unwrap();
    settle(&pods, Some("a")).await;
    assert_eq!(b.fake.take_calls(), ["restart a/app", "stop a", "start a"]);
    assert_eq!(status(&*pods.lock().await, "a").as_deref(), Some("running"));
}
